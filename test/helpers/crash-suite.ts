/**
 * The crash suite (issue 10): kill vfpool with SIGKILL at every crash point an operation passes
 * (listed by the code itself: VFPOOL_TEST_CRASH_LIST, see src/util/crash-point.ts), then run
 * `vfpool reconcile`, then check the invariants:
 * - the state is readable (`vfpool status` works) and no lock is held;
 * - no VF is owned twice, and every record left has a living owner (a live QEMU pid, or a
 *   `vfpool prepare` without --pid, which only `vfpool release` ends), settled (`ready`, no
 *   worker), and no pool is left mid-change;
 * - every VF nobody holds has the configuration it had before the operation (when its PF kept
 *   its VF count), and a PF has either the pool's count (pool active) or its count from before;
 * - the index markers are a superset of the state;
 * - the interrupted operation can then be completed.
 * On the simulated host, one process per step, so the run time is bounded by the step count.
 * Only the process killed at each point is a real `vfpool` process; the setup before it, and
 * reconcile, status and the completion after it, run in this test's process: crash-common.ts.
 */
import { rmSync } from 'node:fs';
import type { Test } from 'tap';
import { isAlive } from '../../src/util/process.js';
import { inProcess, killAt, listPoints, must, POOL, reconcileAndCheck, simState, twoAtATime, vfConfigs, XML, type OwnerCheck } from './crash-common.js';
import { seededWorlds } from './file-tree.js';
import type { SimEnv } from './env.js';
import { spawnSleeper } from './processes.js';

export type CrashOp = 'net-start' | 'prepare' | 'release' | 'net-destroy';

const BEFORE_COUNT = 2; // eth1 has 2 VFs before the pool starts: a start replaces them, an undo puts 2 back
const POOL_COUNT = 4;

interface CrashWorld extends SimEnv {
  /**
   * The QEMU `prepare --pid` names: a real process (a record's owner lives while its pid does),
   * one for the whole suite (each world's record names it; none of them ends it); null for the
   * other operations.
   */
  owner: { pid: number } | null;
  /** Every VF's configuration before any guest touched it (what a release must bring back). */
  original: Map<string, string>;
}
type Worlds = (t: Test) => Promise<CrashWorld>;

function opArgs(w: CrashWorld, op: CrashOp): { args: string[]; stdin?: string } {
  switch (op) {
    case 'net-start':
      return { args: ['net-start', 'p'] };
    case 'net-destroy':
      return { args: ['net-destroy', 'p'] };
    case 'prepare':
      return { args: ['prepare', '--xml=-', '--pid', String(w.owner!.pid)], stdin: XML };
    case 'release':
      return { args: ['release', 'vm1'] };
  }
}

/** Hosts in the state the operation starts from (set up once, copied for each world). */
function worldsFor(t: Test, op: CrashOp): Worlds {
  const seeded = seededWorlds(async (w) => {
    await w.sim.writeNumVfs('eth1' as never, BEFORE_COUNT);
    w.definePool('p', POOL);
    if (op !== 'net-start') await must(inProcess(w, ['net-start', 'p']), 'setup net-start');
    const original = vfConfigs(w);
    // release's guest is prepared without --pid: `vfpool release` refuses a guest whose QEMU runs.
    if (op === 'release') await must(inProcess(w, ['prepare', '--xml=-'], {}, XML), 'setup prepare');
    return { original };
  });
  const owner = op === 'prepare' ? spawnSleeper() : null;
  if (owner) t.teardown(owner.kill);
  return async (tt) => ({ ...(await seeded(tt)), owner });
}

const livingOwner: OwnerCheck = (a) => {
  const living = a.owner.pid === null ? a.owner.via === 'cli' : isAlive(a.owner.pid);
  return living ? null : `record of domain '${a.owner.domain}' without a living owner (pid ${a.owner.pid})`;
};

/** Kills `op` at `point`, reconciles, and returns the invariants that do not hold (empty: all hold). */
async function crashAndCheck(t: Test, worlds: Worlds, op: CrashOp, point: string): Promise<string[]> {
  const w = await worlds(t);
  const { args, stdin } = opArgs(w, op);
  const bad = await killAt(w, point, args, {}, stdin);
  // A PF whose VFs are created or removed does not keep their configuration.
  const { bad: after, state } = await reconcileAndCheck(w, op === 'prepare' || op === 'release' ? w.original : new Map(), livingOwner);
  bad.push(...after);
  const status = await inProcess(w, ['status', '--json']);
  if (status.exitCode !== 0) bad.push(`state not readable by \`vfpool status\`: ${status.stderr.trim()}`);

  const count = simState(w).pfs[0]!.numVfs;
  const active = Object.hasOwn(state.pools, 'p');
  const expected = active ? POOL_COUNT : op === 'net-start' ? BEFORE_COUNT : 0;
  if (count !== expected) bad.push(`eth1 has ${count} VFs with pool p ${active ? 'active' : 'inactive'} (expected ${expected})`);

  // The interrupted operation can be completed now.
  const done = op === 'prepare' ? state.allocations.length > 0 : op === 'net-start' ? active : op === 'net-destroy' ? !active : false;
  if (!done) {
    const again = await inProcess(w, args, {}, stdin);
    if (again.exitCode !== 0) bad.push(`${op} after reconcile: exit ${again.exitCode}: ${again.stderr.trim()}`);
  }
  rmSync(w.dir, { recursive: true, force: true });
  return bad;
}

/** The whole suite for one operation: every point, two at a time. */
export async function crashSuite(t: Test, op: CrashOp): Promise<void> {
  const worlds = worldsFor(t, op);
  const w = await worlds(t);
  const { args, stdin } = opArgs(w, op);
  const { points } = await listPoints(w, op, args, {}, stdin);
  t.ok(points.length >= 4, `${op} passes ${points.length} crash points: ${points.join(' ')}`);
  const results = await twoAtATime(points, (p) => crashAndCheck(t, worlds, op, p));
  points.forEach((p, i) => t.same(results[i], [], `killed at ${p}: every invariant holds after reconcile`));
}
