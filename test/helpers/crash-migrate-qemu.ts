/**
 * The crash suite of the migration stages that talk to the domain's QEMU (issue 10): `migrate
 * perform` on the source (device_del of the plain VF, DEVICE_DELETED) and `migrate confirm
 * --role destination` after a successful migration (device_add of the VF into the arrived
 * guest), each killed with SIGKILL at every crash point it passes (listed by the code itself:
 * VFPOOL_TEST_CRASH_LIST; which of them are killed: `pointsToKill` of crash-migrate.ts).
 *
 * QEMU is test/helpers/fake-qemu.ts: a QMP server on the domain's socket in the test's own
 * process, so the SIGKILL hits the vfpool process alone and QEMU keeps running with the devices
 * the killed stage left, as a real one does. Then `vfpool reconcile`, then the invariants of
 * crash-migrate.ts and crash-common.ts (state readable, no lock held, no VF owned twice, every
 * record settled with a living owner, every free VF restored, markers a superset, the record
 * readable and true), and the guest's own: vm1 still holds its VF, configured as the guest got
 * it; its plan is kept while its QEMU runs; a record that says a device was unplugged (plugged)
 * is right about QEMU. Then the recovery a person would run, which must end where an
 * uninterrupted stage ends:
 * - perform: run again (the migration goes on), and, on a copy of the reconciled host (its files,
 *   and a QEMU holding the devices the killed stage left), `migrate confirm --role source
 *   --failed` (the migration is given up): the guest gets its VF back. One kill serves both
 *   recoveries: what they start from is what the kill and reconcile left, checked once;
 * - confirm --role destination (as a person runs it, or as the `started` hook does, detached
 *   with --wait-incoming): run again: the VF is in the guest, the record gone.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { domainQmpSocketPath, readDomainPlan, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import { fileRecordStore } from '../../src/state/migration-record.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { copyWorld, inProcess, killAt, listPoints, MAC, must, POOL, readState, twoAtATime, vfConfigs, XML, type State } from './crash-common.js';
import { seededWorlds } from './file-tree.js';
import { DESCRIPTION, migrationReconcileAndCheck, pointsToKill, recordInvariants } from './crash-migrate.js';
import type { SimEnv } from './env.js';
import { startFakeQemu, type FakeQemu, type FakeQemuDevice } from './fake-qemu.js';
import { libvirtQ35Argv } from './qemu-argv.js';

/** `-incoming`: the destination's confirm as the `started` hook runs it (detached, --wait-incoming). */
export type QemuCrashOp = 'migrate-perform' | 'migrate-confirm-destination' | 'migrate-confirm-destination-incoming';
/** After the crash and reconcile: the stage again, or (perform only) the migration given up. */
type Recovery = 'rerun' | 'give-up';

interface QemuWorld extends SimEnv, Seed {
  qemu: FakeQemu;
  /** The environment of a vfpool that finds this QEMU (its /proc under VFPOOL_PROC). */
  qemuEnv: Record<string, string>;
}

/** The host before QEMU starts: what every world of a suite shares (set up once, copied). */
interface Seed {
  original: Map<string, string>;
  plan: DomainPlanV1;
  held: string;
  heldConfig: string;
}
type Worlds = (t: Test) => Promise<QemuWorld>;

const VF_ID = 'vfpool-vf0';
const ROOT_PORT = 'vfpool-rp0';

const OP_ARGS: Record<QemuCrashOp, string[]> = {
  'migrate-perform': ['migrate', 'perform', 'vm1'],
  'migrate-confirm-destination': ['migrate', 'confirm', 'vm1', '--role', 'destination'],
  'migrate-confirm-destination-incoming': ['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'],
};
/** The stage run again after reconcile: what reconcile's report tells a person to run. */
const RERUN_ARGS: Record<QemuCrashOp, string[]> = {
  ...OP_ARGS,
  'migrate-confirm-destination-incoming': OP_ARGS['migrate-confirm-destination'],
};

/**
 * The domain's QEMU, started with the argv the wrapper gives it (`incoming`: a migration's
 * destination, whose wrapper leaves the plain VF off for confirm to plug), serving vfpool's socket.
 */
async function startQemu(t: Test, w: SimEnv, plan: DomainPlanV1, incoming: boolean, current?: Map<string, FakeQemuDevice>): Promise<{ qemu: FakeQemu; qemuEnv: Record<string, string> }> {
  const socket = domainQmpSocketPath(w.settings.stateDir, 'vm1');
  const cmd = parseQemuArgv([...(incoming ? ['-incoming', 'defer'] : []), ...libvirtQ35Argv('vm1')]);
  const planned = planQemuArgs(plan, cmd, { qmpSocketPath: socket });
  const placed = planned.placements.find((p) => p.id === VF_ID);
  const want = incoming ? 'left-off-incoming' : 'cmdline';
  if (placed?.rootPort !== ROOT_PORT || placed.delivered !== want) throw new Error(`the wrapper placed ${VF_ID} ${JSON.stringify(placed)}, this suite expects it behind ${ROOT_PORT}, ${want}`);
  const devices: Record<string, FakeQemuDevice> = { net0: { driver: 'virtio-net-pci', mac: '52:54:00:aa:bb:01', slot: 1 }, [ROOT_PORT]: { driver: 'pcie-root-port', slot: 3, bridge: true } };
  if (!incoming) devices[VF_ID] = { driver: 'e1000e', mac: MAC, behind: ROOT_PORT };
  const procRoot = join(w.dir, 'proc');
  const qemu = await startFakeQemu(socket, { procRoot, argv: planned.argv, devices: current ? Object.fromEntries(current) : devices });
  t.teardown(() => qemu.close());
  return { qemu, qemuEnv: { VFPOOL_PROC: procRoot } };
}

function heldVf(w: SimEnv): string {
  const held = w.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1');
  if (held.length !== 1) throw new Error(`setup: vm1 holds ${held.length} VFs, expected 1`);
  return held[0]!.vfAddr;
}

/**
 * The source: vm1 prepared by `vfpool prepare` (no --pid) with the plan its hook writes (the
 * simulated VF reaches QEMU as an emulated e1000e), running with the VF plugged.
 * The destination: vm1's VF reserved by `migrate prepare`, its incoming QEMU arrived (running).
 * The host is set up once and copied for each world; each world's QEMU is its own.
 */
function worldsFor(t: Test, op: QemuCrashOp): Worlds {
  const seeded = seededWorlds(async (w): Promise<Seed> => {
    w.definePool('p', POOL);
    await must(inProcess(w, ['net-start', 'p']), 'setup net-start');
    const original = vfConfigs(w);
    let plan: DomainPlanV1;
    if (op === 'migrate-perform') {
      await must(inProcess(w, ['prepare', '--xml=-'], {}, XML), 'setup prepare');
      plan = {
        version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [],
        vfs: [{ id: VF_ID, host: heldVf(w) as PciAddress, emulatedModel: 'e1000e', mac: MAC as MacAddress, failoverStandbyMac: null, guestAddress: null }],
      };
      await writeDomainPlan(w.settings.stateDir, plan, { uid: process.getuid!(), gid: process.getgid!() });
    } else {
      const description = join(w.dir, 'vm1.migration.json');
      writeFileSync(description, JSON.stringify({ ...DESCRIPTION, delivery: 'cmdline' }));
      await must(inProcess(w, ['migrate', 'prepare', '--description', description], { VFPOOL_SIM_VF_DEVICE: 'e1000e' }), 'setup migrate prepare');
      plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
    }
    const held = heldVf(w);
    return { original, plan, held, heldConfig: vfConfigs(w).get(held)! };
  });
  return async (tt) => {
    const w = await seeded(tt);
    return { ...w, ...(await startQemu(t, w, w.plan, op !== 'migrate-perform')) };
  };
}

/** The guest's own invariants: it holds its VF as it got it, its plan is there while QEMU runs. */
function guestInvariants(w: QemuWorld, state: State): string[] {
  const bad: string[] = [];
  const held = state.allocations.filter((a) => a.owner.domain === 'vm1').map((a) => a.vfAddr);
  if (held.length !== 1 || held[0] !== w.held) bad.push(`vm1 holds ${held.join(', ') || 'no VF'}, expected ${w.held}`);
  const cfg = vfConfigs(w).get(w.held);
  if (cfg !== w.heldConfig) bad.push(`${w.held}, held by the running vm1, is ${cfg} (the guest got ${w.heldConfig})`);
  if (readDomainPlan(w.settings.stateDir, 'vm1') === null) bad.push('the plan of vm1 is gone while its QEMU runs');
  return bad;
}

/** Where an uninterrupted stage (or the given-up migration) ends; the lines that do not hold. */
function endState(w: QemuWorld, op: QemuCrashOp, recovery: Recovery): string[] {
  const bad = guestInvariants(w, readState(w));
  const record = fileRecordStore(w.settings.stateDir).read('vm1');
  const inGuest = w.qemu.devices.get(VF_ID);
  if (op === 'migrate-perform' && recovery === 'rerun') {
    if (inGuest) bad.push(`${VF_ID} is still in the guest after perform`);
    const vf = record?.vfs.find((v) => v.id === VF_ID);
    if (record?.stage !== 'performed' || !vf?.unplugged || vf.unplugMode !== 'device_del') bad.push(`the record after perform: ${JSON.stringify(record)}`);
  } else {
    if (inGuest?.mac !== MAC || inGuest.driver !== 'e1000e') bad.push(`${VF_ID} in the guest after ${op}${recovery === 'give-up' ? ' --failed' : ''}: ${JSON.stringify(inGuest ?? null)}`);
    if (record) bad.push(`the migration record is still there: stage ${record.stage}`);
  }
  return bad;
}

/**
 * Kills `op` at `point`, reconciles, then each of `recoveries` on a host of its own: the killed
 * one, and (for a second recovery) a copy of it made after reconcile, whose QEMU holds the
 * devices the killed stage left. The invariants that do not hold, per recovery.
 */
async function qemuCrashAndCheck(t: Test, worlds: Worlds, op: QemuCrashOp, point: string, recoveries: Recovery[]): Promise<string[][]> {
  const w = await worlds(t);
  const bad = await killAt(w, point, OP_ARGS[op], w.qemuEnv);
  const checked = await migrationReconcileAndCheck(w, w.original);
  bad.push(...checked.bad, ...guestInvariants(w, checked.state));
  const { bad: recordBad, record } = recordInvariants(w, checked.state);
  bad.push(...recordBad);
  for (const v of record?.vfs ?? []) {
    if (record!.role === 'source' && v.unplugged && w.qemu.devices.has(v.id)) bad.push(`the record says ${v.id} was unplugged, it is in the guest`);
    if (v.plugged && !w.qemu.devices.has(v.id)) bad.push(`the record says ${v.id} was plugged, the guest has no such device`);
  }

  const hosts: QemuWorld[] = [w];
  for (let i = 1; i < recoveries.length; i++) {
    const copy = copyWorld(t, w.dir);
    const seed: Seed = { original: w.original, plan: w.plan, held: w.held, heldConfig: w.heldConfig };
    hosts.push({ ...copy, ...seed, ...(await startQemu(t, copy, w.plan, op !== 'migrate-perform', w.qemu.devices)) });
  }
  const results: string[][] = [];
  for (const [i, recovery] of recoveries.entries()) {
    const host = hosts[i]!;
    const again = await inProcess(host, recovery === 'rerun' ? RERUN_ARGS[op] : ['migrate', 'confirm', 'vm1', '--role', 'source', '--failed'], host.qemuEnv);
    if (again.exitCode !== 0) results.push([...bad, `${recovery === 'rerun' ? op : 'migrate confirm --role source --failed'} after reconcile: exit ${again.exitCode}: ${again.stderr.trim()}`]);
    else results.push([...bad, ...endState(host, op, recovery)]);
    await host.qemu.close();
    rmSync(host.dir, { recursive: true, force: true });
  }
  return results;
}

/** The points `op` passes uninterrupted, checked to end where it should (so the end state can fail). */
async function listQemuCrashPoints(t: Test, worlds: Worlds, op: QemuCrashOp): Promise<string[]> {
  const w = await worlds(t);
  const { points } = await listPoints(w, op, OP_ARGS[op], w.qemuEnv);
  t.same(endState(w, op, 'rerun'), [], `${op} uninterrupted ends where the suite expects every recovery to end`);
  await w.qemu.close();
  return points;
}

export async function qemuCrashSuite(t: Test, op: QemuCrashOp): Promise<void> {
  const worlds = worldsFor(t, op);
  const all = await listQemuCrashPoints(t, worlds, op);
  t.ok(all.some((p) => p.startsWith(op === 'migrate-perform' ? 'migrate-perform:' : 'migrate-confirm-destination:')), `${op} passes ${all.length} crash points: ${all.join(' ')}`);
  const points = pointsToKill(all);
  const recoveries: Recovery[] = op === 'migrate-perform' ? ['rerun', 'give-up'] : ['rerun'];
  const results = await twoAtATime(points, (p) => qemuCrashAndCheck(t, worlds, op, p, recoveries));
  points.forEach((p, i) => recoveries.forEach((r, j) => {
    const how = r === 'rerun' ? 'the stage run again' : '`migrate confirm --role source --failed`';
    t.same(results[i]![j], [], `killed at ${p}: every invariant holds after reconcile, and after ${how}`);
  }));
}
