// Stands in for graceful-fs in the bundles (scripts/bundle.mjs). proper-lockfile requires
// graceful-fs, whose start-up loads Node's stream machinery, assert and fs.promises, and patches
// fs: ~10 ms of every hook call (measured by `npm run bench`). What it adds, queueing opens
// after EMFILE, serves processes that open thousands of files; a vfpool call opens a handful.
'use strict';
module.exports = require('node:fs');
