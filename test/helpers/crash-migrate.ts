/**
 * The crash suite of the migration stages that run without a QEMU (issue 10): `migrate begin`
 * and `migrate confirm --role source` on the source, `migrate prepare` and `migrate confirm
 * --role destination --failed` on the destination, each killed with SIGKILL at every crash
 * point it passes (the stage's steps, `STAGE:ran` / `STAGE:recorded`, and the pool's and the
 * state file's own points). Recovery is what the README says: `vfpool reconcile`, then the
 * stage run again (every stage is idempotent). Then the invariants of crash-common.ts (no VF
 * owned twice, every record with a living owner and settled, every free VF restored, the state
 * readable, no lock held, the markers a superset) and the migration record's own: a record left
 * after reconcile is valid and says what the host holds (reserved ⇔ the domain holds VFs here;
 * a `prepared` destination has its plan), and the re-run ends where an uninterrupted stage
 * ends. Only the killed stage is a process of its own; the setup, reconcile and the re-run run
 * in this test's process (crash-common.ts). The stages that need a QEMU (perform, confirm
 * --role destination) are in crash-migrate-qemu.ts, which shares the invariants
 * (`migrationReconcileAndCheck`, `recordInvariants`).
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { readDomainPlan, writeDomainPlan } from '../../src/state/domain-plan.js';
import { fileRecordStore, newRecord, type MigrationRecordV1 } from '../../src/state/migration-record.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { inProcess, killAt, listPoints, MAC, must, POOL, readState, reconcileAndCheck, twoAtATime, vfConfigs, XML, type OwnerCheck, type State } from './crash-common.js';
import { seededWorlds } from './file-tree.js';
import type { SimEnv } from './env.js';

export type MigrateCrashOp = 'migrate-begin' | 'migrate-prepare' | 'migrate-confirm-destination-failed' | 'migrate-confirm-source';

export const DESCRIPTION = {
  version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
  vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: MAC, failoverStandbyMac: null, guestAddress: null, settings: { vlan: 7 } }],
};
/** Where a world keeps the description `migrate prepare` reads (below its own directory). */
const DESCRIPTION_FILE = 'vm1.migration.json';

interface World extends SimEnv {
  original: Map<string, string>;
}
type Worlds = (t: Test) => Promise<World>;

function opArgs(w: SimEnv, op: MigrateCrashOp): string[] {
  switch (op) {
    case 'migrate-begin':
      return ['migrate', 'begin', 'vm1'];
    case 'migrate-prepare':
      return ['migrate', 'prepare', '--description', join(w.dir, DESCRIPTION_FILE)];
    case 'migrate-confirm-destination-failed':
      return ['migrate', 'confirm', 'vm1', '--role', 'destination', '--failed'];
    case 'migrate-confirm-source':
      return ['migrate', 'confirm', 'vm1', '--role', 'source'];
  }
}

/** Hosts in the state the stage starts from (set up once, copied for each world). */
function worldsFor(op: MigrateCrashOp): Worlds {
  return seededWorlds(async (w) => {
    w.definePool('p', POOL);
    await must(inProcess(w, ['net-start', 'p']), 'setup net-start');
    const original = vfConfigs(w);
    writeFileSync(join(w.dir, DESCRIPTION_FILE), JSON.stringify(DESCRIPTION));
    if (op === 'migrate-confirm-destination-failed') await must(inProcess(w, opArgs(w, 'migrate-prepare')), 'setup migrate prepare');
    if (op === 'migrate-begin' || op === 'migrate-confirm-source') {
      // The source: a guest prepared by `vfpool prepare` (no --pid), with the plan its prepare
      // hook writes, and for confirm the record perform leaves (its VF unplugged by device_del).
      await must(inProcess(w, ['prepare', '--xml=-'], {}, XML), 'setup prepare');
      const vf = w.ctx.store.read().allocations[0]!;
      await writeDomainPlan(w.settings.stateDir, {
        version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
        vfs: [{ id: 'vfpool-vf0', host: vf.vfAddr as PciAddress, emulatedModel: null, mac: MAC as MacAddress, failoverStandbyMac: null, guestAddress: null }],
      }, { uid: process.getuid!(), gid: process.getgid!() });
      if (op === 'migrate-confirm-source') {
        const r = newRecord('vm1', 'source', [{ id: 'vfpool-vf0', kind: 'plain', mac: MAC, unplugged: true, unplugMode: 'device_del', plugged: false }]);
        r.stage = 'performed';
        await fileRecordStore(w.settings.stateDir).write(r);
      }
    }
    return { original };
  });
}

/** Every record is owned by the living `vfpool` owner this host made (prepare or a migration's reservation, no pid). */
const cliOwner: OwnerCheck = (a) => (a.owner.pid !== null || a.owner.via !== 'cli' ? `owner ${JSON.stringify(a.owner)} is not the living \`vfpool\` owner this host made` : null);

/**
 * `vfpool reconcile`, then the invariants every migration crash suite checks on this host
 * (crash-common.ts), every record owned by `vfpool` itself.
 */
export function migrationReconcileAndCheck(w: SimEnv, original: Map<string, string>): Promise<{ bad: string[]; state: State }> {
  return reconcileAndCheck(w, original, cliOwner);
}

/** The record reconcile left (if any) is readable and tells the truth about this host. */
export function recordInvariants(w: SimEnv, state: State): { bad: string[]; record: MigrationRecordV1 | null } {
  const bad: string[] = [];
  const stateDir = w.settings.stateDir;
  let record: MigrationRecordV1 | null = null;
  try {
    record = fileRecordStore(stateDir).read('vm1');
  } catch (err) {
    bad.push(`the migration record is not readable: ${(err as Error).message}`);
  }
  const holds = state.allocations.some((a) => a.owner.domain === 'vm1');
  if (record && record.role === 'destination' && record.reserved !== holds) bad.push(`the record says reserved=${record.reserved}, vm1 ${holds ? 'holds' : 'holds no'} VF here`);
  if (record && record.role === 'destination' && record.stage === 'prepared' && readDomainPlan(stateDir, 'vm1') === null) bad.push('the record says prepared, the plan is missing');
  return { bad, record };
}

/** What an uninterrupted stage leaves on this host; the lines that do not hold. */
function endState(w: World, op: MigrateCrashOp, state: State): string[] {
  const bad: string[] = [];
  const held = state.allocations.filter((a) => a.owner.domain === 'vm1');
  const plan = readDomainPlan(w.settings.stateDir, 'vm1');
  const record = fileRecordStore(w.settings.stateDir).read('vm1');
  if (op === 'migrate-prepare') {
    if (held.length !== 1 || held[0]!.mac !== MAC) bad.push(`after prepare vm1 holds ${JSON.stringify(held.map((a) => [a.vfAddr, a.mac]))}, expected one VF with ${MAC}`);
    if (plan?.vfs[0]?.host !== held[0]?.vfAddr) bad.push(`the plan names ${plan?.vfs[0]?.host ?? 'no VF'}, vm1 holds ${held[0]?.vfAddr ?? 'none'}`);
    if (record?.stage !== 'prepared' || !record.reserved) bad.push(`the record after prepare: ${JSON.stringify(record)}`);
  } else if (op !== 'migrate-begin') {
    if (held.length) bad.push(`vm1 still holds ${held.map((a) => a.vfAddr).join(', ')} after ${op}`);
    if (plan) bad.push(`the plan of vm1 is still there after ${op}`);
    if (record) bad.push(`the migration record is still there after ${op}: stage ${record.stage}`);
  }
  return bad;
}

/** Kills `op` at `point`, recovers (reconcile, then the stage again), returns the invariants that do not hold. */
async function migrateCrashAndCheck(t: Test, worlds: Worlds, op: MigrateCrashOp, point: string, reference: string): Promise<string[]> {
  const w = await worlds(t);
  const bad = await killAt(w, point, opArgs(w, op));
  const { bad: after, state } = await migrationReconcileAndCheck(w, w.original);
  bad.push(...after, ...recordInvariants(w, state).bad);

  // The stage run again ends where an uninterrupted one ends.
  const again = await inProcess(w, opArgs(w, op));
  if (again.exitCode !== 0) bad.push(`${op} after reconcile: exit ${again.exitCode}: ${again.stderr.trim()}`);
  else if (op === 'migrate-begin' && again.stdout !== reference) bad.push(`begin re-run describes something else: ${again.stdout}`);
  else bad.push(...endState(w, op, readState(w)));
  rmSync(w.dir, { recursive: true, force: true });
  return bad;
}

/**
 * The points a suite kills at: every point of the stage itself (`migrate-…`), and of each run of
 * the pool's and the state file's points between them the first and the last (all of those are
 * killed one by one in the prepare and release suites); VFPOOL_TEST_CRASH_EVERY=1: every point.
 */
export function pointsToKill(points: string[]): string[] {
  if (process.env.VFPOOL_TEST_CRASH_EVERY === '1') return points;
  const stage = (p: string | undefined) => p === undefined || p.startsWith('migrate-');
  return points.filter((p, i) => stage(p) || stage(points[i - 1]) || stage(points[i + 1]));
}

export async function migrateCrashSuite(t: Test, op: MigrateCrashOp): Promise<void> {
  const worlds = worldsFor(op);
  const w = await worlds(t);
  const all = await listPoints(w, op, opArgs(w, op));
  t.ok(all.points.length >= 1, `${op} passes ${all.points.length} crash points: ${all.points.join(' ')}`);
  const points = pointsToKill(all.points);
  const results = await twoAtATime(points, (p) => migrateCrashAndCheck(t, worlds, op, p, all.stdout));
  points.forEach((p, i) => t.same(results[i], [], `killed at ${p}: every invariant holds after reconcile and a re-run`));
}
