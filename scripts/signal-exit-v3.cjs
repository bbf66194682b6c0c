// Stands in for signal-exit 3 (proper-lockfile's) in the bundles, as signal-exit 4 (what
// write-file-atomic already loads) under version 3's calling convention: `onExit(cb, opts)`.
// Version 3 requires assert, whose error class builds process.stderr and with it Node's stream
// machinery at start-up: ~10 ms of every hook call. Version 4 is the same package's maintained
// line, with the same behaviour (run the callback on exit and on the signals that end the
// process), and one copy means one set of signal handlers, not two.
'use strict';
const v4 = require('../node_modules/signal-exit/dist/cjs/index.js');

module.exports = Object.assign((cb, opts) => v4.onExit(cb, opts), v4);
