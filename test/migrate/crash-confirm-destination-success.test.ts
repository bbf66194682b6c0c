import t from 'tap';
import { qemuCrashSuite } from '../helpers/crash-migrate-qemu.js';

// SIGKILL at every crash point of `vfpool migrate confirm --role destination` after a successful
// migration (the VF plugged into the arrived guest, whose QEMU is a QMP server in this process
// that outlives the kill), then `vfpool reconcile` and the stage run again: see the helper.
t.test('migrate confirm --role destination killed at every step: reconcile and a re-run restore every invariant', (t) => qemuCrashSuite(t, 'migrate-confirm-destination'));
t.test('migrate confirm --role destination --wait-incoming (the started hook\'s) killed at every step: reconcile and a re-run restore every invariant', (t) => qemuCrashSuite(t, 'migrate-confirm-destination-incoming'));
