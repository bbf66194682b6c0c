import t from 'tap';
import { inProcess, killAt, listPoints, must, POOL, readState, reconcileAndCheck, simState, twoAtATime } from '../helpers/crash-common.js';
import { seededWorlds } from '../helpers/file-tree.js';

/**
 * What mends a killed `net-start` may be killed too (an OOM kill, a reboot of the admin's
 * shell): `vfpool reconcile` undoing it, or the `net-start` run again (which mends by starting).
 * Here a `net-start` that had replaced a PF's 2 VFs by the pool's 4 is killed, then the mender
 * is killed at each of its points: the next reconcile must still end with the pool stopped and
 * the PF back to its 2 VFs, not lose the count from before.
 */
const BEFORE_COUNT = 2;

const worlds = seededWorlds(async (w) => {
  await w.sim.writeNumVfs('eth1' as never, BEFORE_COUNT);
  w.definePool('p', POOL);
  const bad = await killAt(w, 'net-start:applied#1', ['net-start', 'p']);
  if (bad.length) throw new Error(bad.join('; '));
  return {};
});

/** Kills `args` at each point it passes on the killed start's host, reconciles, checks. */
async function killMender(t: Parameters<typeof worlds>[0], args: string[]): Promise<void> {
  const w = await worlds(t);
  t.equal(simState(w).pfs[0]!.numVfs, 4, 'the killed start had made the pool\'s 4 VFs');
  const { points } = await listPoints(w, args[0]!, args);
  t.ok(points.includes(args[0] === 'reconcile' ? 'net-destroy:applied#1' : 'net-start:applied#1'), `${args[0]} passes ${points.length} crash points: ${points.join(' ')}`);
  const results = await twoAtATime(points, async (point) => {
    const k = await worlds(t);
    const bad = await killAt(k, point, args);
    const { bad: after, state } = await reconcileAndCheck(k, new Map(), () => null);
    bad.push(...after);
    // A net-start killed after its last write started the pool; anything else ends stopped.
    const active = Object.hasOwn(state.pools, 'p');
    if (active && args[0] === 'reconcile') bad.push('pool p left active');
    const count = simState(k).pfs[0]!.numVfs;
    const expected = active ? 4 : BEFORE_COUNT;
    if (count !== expected) bad.push(`eth1 has ${count} VFs (expected ${active ? 'the pool\'s 4' : `its ${BEFORE_COUNT} from before the start`})`);
    if (active) return bad;
    // And the pool can be started again.
    await must(inProcess(k, ['net-start', 'p']), 'net-start after reconcile');
    if (!Object.hasOwn(readState(k).pools, 'p')) bad.push('net-start after reconcile did not start the pool');
    return bad;
  });
  points.forEach((p, i) => t.same(results[i], [], `${args[0]} killed at ${p}`));
}

t.test('net-start run again after the killed one, killed at every point: reconcile puts the count from before the first back', (t) => killMender(t, ['net-start', 'p']));

t.test('reconcile killed at every point of undoing an interrupted start: the next reconcile puts the count from before back', (t) => killMender(t, ['reconcile']));
