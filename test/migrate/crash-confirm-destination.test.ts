import t from 'tap';
import { migrateCrashSuite } from '../helpers/crash-migrate.js';

// SIGKILL at every crash point of `vfpool migrate confirm --role destination --failed`, then `vfpool reconcile` and the stage
// run again: see the helper. (perform and confirm --role destination, which need a QEMU:
// test/helpers/crash-migrate-qemu.ts.)
t.test('migrate confirm --role destination --failed killed at every step: reconcile and a re-run restore every invariant', (t) => migrateCrashSuite(t, 'migrate-confirm-destination-failed'));
