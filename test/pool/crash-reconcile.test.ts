import t from 'tap';
import { inProcess, killAt, listPoints, must, POOL, readState, reconcileAndCheck, simState, twoAtATime } from '../helpers/crash-common.js';
import { seededWorlds } from '../helpers/file-tree.js';

/**
 * `vfpool reconcile` is what mends a killed operation, so it may be killed too (a reboot of the
 * admin's shell, an OOM kill). Here it is killed at every point of its undoing of an interrupted
 * `net-start` that had replaced a PF's 2 VFs by the pool's 4: the next reconcile must still end
 * with the pool stopped and the PF back to its 2 VFs, not lose the count from before.
 */
const BEFORE_COUNT = 2;

const worlds = seededWorlds(async (w) => {
  await w.sim.writeNumVfs('eth1' as never, BEFORE_COUNT);
  w.definePool('p', POOL);
  const bad = await killAt(w, 'net-start:applied#1', ['net-start', 'p']);
  if (bad.length) throw new Error(bad.join('; '));
  return {};
});

t.test('reconcile killed at every point of undoing an interrupted start: the next reconcile puts the count from before back', async (t) => {
  const w = await worlds(t);
  t.equal(simState(w).pfs[0]!.numVfs, 4, 'the killed start had made the pool\'s 4 VFs');
  const { points } = await listPoints(w, 'reconcile', ['reconcile']);
  t.ok(points.includes('net-destroy:applied#1'), `reconcile passes ${points.length} crash points: ${points.join(' ')}`);
  const results = await twoAtATime(points, async (point) => {
    const k = await worlds(t);
    const bad = await killAt(k, point, ['reconcile']);
    const { bad: after, state } = await reconcileAndCheck(k, new Map(), () => null);
    bad.push(...after);
    if (Object.keys(state.pools).length) bad.push(`pools left: ${Object.keys(state.pools).join(', ')}`);
    const count = simState(k).pfs[0]!.numVfs;
    if (count !== BEFORE_COUNT) bad.push(`eth1 has ${count} VFs (expected its ${BEFORE_COUNT} from before the start)`);
    // And the pool can be started again.
    await must(inProcess(k, ['net-start', 'p']), 'net-start after reconcile');
    if (!Object.hasOwn(readState(k).pools, 'p')) bad.push('net-start after reconcile did not start the pool');
    return bad;
  });
  points.forEach((p, i) => t.same(results[i], [], `reconcile killed at ${p}`));
});
