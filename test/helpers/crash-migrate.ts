/**
 * The crash suite of the migration stages that run without a QEMU (issue 10): `migrate begin`
 * and `migrate confirm --role source` on the source, `migrate prepare` and `migrate confirm
 * --role destination --failed` on the destination, each killed with SIGKILL at every crash
 * point it passes (the stage's steps, `STAGE:ran` / `STAGE:recorded`, and the pool's and the
 * state file's own points). Recovery is what the README says: `vfpool reconcile`, then the
 * stage run again (every stage is idempotent). Then the invariants of test/helpers/crash-suite.ts
 * (no VF owned twice, every record with a living owner and settled, every free VF restored,
 * the state readable, no lock held, the markers a superset) and the migration record's own:
 * a record left after reconcile is valid and says what the host holds (reserved ⇔ the domain
 * holds VFs here; a `prepared` destination has its plan), and the re-run ends where an
 * uninterrupted stage ends. The stages that need a QEMU (perform, confirm --role destination)
 * are in crash-migrate-qemu.ts, which shares these invariants (`reconcileAndCheck`,
 * `recordInvariants`).
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { SimState } from '../../src/host/sim-kernel.js';
import { readDomainPlan, writeDomainPlan } from '../../src/state/domain-plan.js';
import { fileRecordStore, newRecord, type MigrationRecordV1 } from '../../src/state/migration-record.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { makeSimEnv, type SimEnv } from './env.js';
import { domainXml } from './libvirt-domains.js';
import { vfpoolCli, type Spawned } from './spawn.js';

export type MigrateCrashOp = 'migrate-begin' | 'migrate-prepare' | 'migrate-confirm-destination-failed' | 'migrate-confirm-source';

export const POOL = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
export const MAC = '52:54:00:aa:00:01';
export const XML = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='${MAC}' vlan='7'/>` });
export const DESCRIPTION = {
  version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
  vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: MAC, failoverStandbyMac: null, guestAddress: null, settings: { vlan: 7 } }],
};

export interface State {
  pools: Record<string, { change: unknown }>;
  allocations: Array<{ vfAddr: string; phase: string; worker: number | null; mac: string | null; owner: { domain: string; pid: number | null; via: string } }>;
  ports: Array<{ domain: string }>;
}

interface World extends SimEnv {
  original: Map<string, string>;
  descriptionFile: string;
}

export function cli(w: SimEnv, args: string[], env: Record<string, string> = {}): Promise<Spawned> {
  return vfpoolCli(args, { env: { ...w.env, ...env } });
}

function runOp(w: World, op: MigrateCrashOp, env: Record<string, string> = {}): Promise<Spawned> {
  switch (op) {
    case 'migrate-begin':
      return cli(w, ['migrate', 'begin', 'vm1'], env);
    case 'migrate-prepare':
      return cli(w, ['migrate', 'prepare', '--description', w.descriptionFile], env);
    case 'migrate-confirm-destination-failed':
      return cli(w, ['migrate', 'confirm', 'vm1', '--role', 'destination', '--failed'], env);
    case 'migrate-confirm-source':
      return cli(w, ['migrate', 'confirm', 'vm1', '--role', 'source'], env);
  }
}

/** Each VF's configuration as a restore must bring it back (not the netdev name or the MAC's provenance flag). */
export function vfConfigs(w: SimEnv): Map<string, string> {
  const out = new Map<string, string>();
  for (const vf of (JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState).pfs[0]!.vfs) {
    const { mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner } = vf;
    out.set(vf.address, JSON.stringify({ mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner }));
  }
  return out;
}

export async function must(r: Promise<Spawned>, what: string): Promise<Spawned> {
  const x = await r;
  if (x.exitCode !== 0) throw new Error(`${what}: exit ${x.exitCode}: ${x.stderr}`);
  return x;
}

/** A host in the state the stage starts from. */
async function worldFor(t: Test, op: MigrateCrashOp): Promise<World> {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('p', POOL);
  await must(cli(w, ['net-start', 'p']), 'setup net-start');
  const original = vfConfigs(w);
  const descriptionFile = join(w.dir, 'vm1.migration.json');
  writeFileSync(descriptionFile, JSON.stringify(DESCRIPTION));
  const world = { ...w, original, descriptionFile };
  if (op === 'migrate-confirm-destination-failed') await must(runOp(world, 'migrate-prepare'), 'setup migrate prepare');
  if (op === 'migrate-begin' || op === 'migrate-confirm-source') {
    // The source: a guest prepared by `vfpool prepare` (no --pid), with the plan its prepare
    // hook writes, and for confirm the record perform leaves (its VF unplugged by device_del).
    await must(vfpoolCli(['prepare', '--xml=-'], { env: w.env, stdin: XML }), 'setup prepare');
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
  return world;
}

export async function listMigrateCrashPoints(t: Test, op: MigrateCrashOp): Promise<{ points: string[]; reference: string }> {
  const w = await worldFor(t, op);
  const list = join(w.dir, 'points');
  const r = await runOp(w, op, { VFPOOL_TEST_CRASH_LIST: list });
  if (r.exitCode !== 0) throw new Error(`${op} without a crash: exit ${r.exitCode}: ${r.stderr}`);
  return { points: readFileSync(list, 'utf8').trim().split('\n'), reference: r.stdout };
}

/**
 * `vfpool reconcile`, then the invariants every migration crash suite checks on this host: the
 * state readable, no lock held, no VF owned twice, every record settled and owned by the living
 * `vfpool` owner this host made (prepare or a migration's reservation, no pid), every VF nobody
 * holds as it was in `original`, the index markers a superset of the state.
 */
export async function reconcileAndCheck(w: SimEnv, original: Map<string, string>, run: (args: string[]) => Promise<Spawned> = (args) => cli(w, args)): Promise<{ bad: string[]; state: State }> {
  const bad: string[] = [];
  const rec = await run(['reconcile']);
  if (rec.exitCode !== 0) bad.push(`reconcile: exit ${rec.exitCode}: ${rec.stderr.trim()}`);
  try {
    w.ctx.store.read();
  } catch (err) {
    bad.push(`state not readable: ${(err as Error).message}`);
  }
  const stateDir = w.settings.stateDir;
  for (const lock of ['state.json.lock', 'migrate/vm1.json.lock']) if (existsSync(join(stateDir, lock))) bad.push(`${lock} is still held`);
  const state = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as State;
  const addrs = state.allocations.map((a) => a.vfAddr);
  if (new Set(addrs).size !== addrs.length) bad.push(`a VF is owned twice: ${addrs.join(', ')}`);
  for (const a of state.allocations) {
    if (a.phase !== 'ready' || a.worker !== null) bad.push(`${a.vfAddr}: left ${a.phase} (worker ${a.worker})`);
    if (a.owner.pid !== null || a.owner.via !== 'cli') bad.push(`${a.vfAddr}: owner ${JSON.stringify(a.owner)} is not the living \`vfpool\` owner this host made`);
  }
  const after = vfConfigs(w);
  for (const [addr, cfg] of original) if (!addrs.includes(addr) && after.get(addr) !== cfg) bad.push(`${addr} is free but not restored: ${after.get(addr)} (was ${cfg})`);
  const markers = readdirSync(join(stateDir, 'index'));
  for (const m of [...Object.keys(state.pools).map((n) => `pool.${n}`), ...state.allocations.map((a) => `domain.${a.owner.domain}`)]) if (!markers.includes(m)) bad.push(`index marker ${m} missing`);

  return { bad, state };
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
export async function migrateCrashAndCheck(t: Test, op: MigrateCrashOp, point: string, reference: string): Promise<string[]> {
  const w = await worldFor(t, op);
  const bad: string[] = [];
  const crashed = await runOp(w, op, { VFPOOL_TEST_CRASH_AT: point });
  if (crashed.exitCode !== -1) bad.push(`the process was not killed at ${point} (exit ${crashed.exitCode}: ${crashed.stderr.trim()})`);
  const { bad: after, state } = await reconcileAndCheck(w, w.original);
  bad.push(...after);
  const stateDir = w.settings.stateDir;
  bad.push(...recordInvariants(w, state).bad);

  // The stage run again ends where an uninterrupted one ends.
  const again = await runOp(w, op);
  if (again.exitCode !== 0) bad.push(`${op} after reconcile: exit ${again.exitCode}: ${again.stderr.trim()}`);
  else if (op === 'migrate-begin' && again.stdout !== reference) bad.push(`begin re-run describes something else: ${again.stdout}`);
  else bad.push(...endState(w, op, JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as State));
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
  const all = await listMigrateCrashPoints(t, op);
  const { reference } = all;
  t.ok(all.points.length >= 1, `${op} passes ${all.points.length} crash points: ${all.points.join(' ')}`);
  const points = pointsToKill(all.points);
  const results = new Map<string, string[]>();
  const queue = [...points];
  await Promise.all(
    [0, 1].map(async () => {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) results.set(p, await migrateCrashAndCheck(t, op, p, reference));
    }),
  );
  for (const p of points) t.same(results.get(p), [], `killed at ${p}: every invariant holds after reconcile and a re-run`);
}
