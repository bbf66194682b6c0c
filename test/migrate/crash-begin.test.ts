import t from 'tap';
import { migrateCrashSuite } from '../helpers/crash-migrate.js';

// SIGKILL at every crash point of `vfpool migrate begin (source)`, then `vfpool reconcile` and the stage
// run again: see the helper. (perform and confirm --role destination, which need a QEMU:
// test/helpers/crash-migrate-qemu.ts.)
t.test('migrate begin (source) killed at every step: reconcile and a re-run restore every invariant', (t) => migrateCrashSuite(t, 'migrate-begin'));
