import t from 'tap';
import { qemuCrashSuite } from '../helpers/crash-migrate-qemu.js';

// SIGKILL at every crash point of `vfpool migrate perform` (source, its QEMU a QMP server in this
// process that outlives the kill), then `vfpool reconcile`, then perform run again or the
// migration given up (`confirm --role source --failed`): see the helper.
t.test('migrate perform (source) killed at every step: reconcile, then a re-run or giving up, restore every invariant', (t) => qemuCrashSuite(t, 'migrate-perform'));
