import t from 'tap';
import { crashSuite } from '../helpers/crash-suite.js';

// SIGKILL at every crash point of `vfpool release`, then `vfpool reconcile`: see the helper.
t.test('release killed at every step: reconcile restores every invariant', (t) => crashSuite(t, 'release'));
