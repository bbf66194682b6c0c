// Stands in for node:assert in yargs (scripts/bundle.mjs). yargs imports assert at load and
// calls it on every run for checks of its own that pass; loading node:assert (its
// AssertionError and what that loads) cost the CLI a few ms of every start. A check that
// passes returns here (the same Object.is comparison); one that fails is handed to node:assert
// itself, which throws its own error.
'use strict';
module.exports = {
  notStrictEqual(actual, expected, message) {
    if (!Object.is(actual, expected)) return;
    require('node:assert').notStrictEqual(actual, expected, message);
  },
  strictEqual(actual, expected, message) {
    if (Object.is(actual, expected)) return;
    require('node:assert').strictEqual(actual, expected, message);
  },
};
