import t from 'tap';
import { crashSuite } from '../helpers/crash-suite.js';

// SIGKILL at every crash point of `vfpool net-destroy`, then `vfpool reconcile`: see the helper.
t.test('net-destroy killed at every step: reconcile restores every invariant', (t) => crashSuite(t, 'net-destroy'));
