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
 * The process killed at each point is a real `vfpool` process, SIGKILLed by itself
 * (crash-point.ts). Everything around it (the setup before, and reconcile, status and the
 * completion after) is vfpool's CLI run in this test's own process (runCliInProcess): the
 * process boundary is not what they are there for, and a spawned CLI costs a Node start-up
 * each (4 to 6 of them per point before). In-process runs share process.env, so they take
 * turns (inProcess); the killed processes still run two at a time.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { SimState } from '../../src/host/sim-kernel.js';
import { isAlive } from '../../src/util/process.js';
import { makeSimEnv, type SimEnv } from './env.js';
import { domainXml } from './libvirt-domains.js';
import { spawnSleeper } from './processes.js';
import { vfpoolCli, type Spawned } from './spawn.js';
import { runCliInProcess } from './cli-in-process.js';

export type CrashOp = 'net-start' | 'prepare' | 'release' | 'net-destroy';

const POOL = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
const BEFORE_COUNT = 2; // eth1 has 2 VFs before the pool starts: a start replaces them, an undo puts 2 back
const POOL_COUNT = 4;
const XML = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='7'/>` });

interface State {
  pools: Record<string, { change: unknown }>;
  allocations: Array<{ vfAddr: string; phase: string; worker: number | null; owner: { domain: string; pid: number | null; via: string } }>;
  ports: Array<{ domain: string }>;
}

interface CrashWorld extends SimEnv {
  owner: { pid: number; kill: () => Promise<void> };
  /** Every VF's configuration before any guest touched it (what a release must bring back). */
  original: Map<string, string>;
}

/** `vfpool ARGS` as a process of its own (the one that is killed). */
async function cli(w: SimEnv, args: string[], env: Record<string, string> = {}, stdin?: string): Promise<Spawned> {
  return vfpoolCli(args, { env: { ...w.env, ...env }, stdin });
}

let inProcessTurn: Promise<unknown> = Promise.resolve();
/** `vfpool ARGS` in this process, one run at a time (process.env is global). */
function inProcess(w: SimEnv, args: string[], stdin?: string): Promise<Spawned> {
  const run = inProcessTurn.then(() => runCliInProcess(args, w.env, stdin));
  inProcessTurn = run.catch(() => undefined);
  return run;
}

function opArgs(w: CrashWorld, op: CrashOp): { args: string[]; stdin?: string } {
  switch (op) {
    case 'net-start':
      return { args: ['net-start', 'p'] };
    case 'net-destroy':
      return { args: ['net-destroy', 'p'] };
    case 'prepare':
      return { args: ['prepare', '--xml=-', '--pid', String(w.owner.pid)], stdin: XML };
    case 'release':
      return { args: ['release', 'vm1'] };
  }
}

/** The operation under test, as a person runs it (one process). */
function runOp(w: CrashWorld, op: CrashOp, env: Record<string, string> = {}): Promise<Spawned> {
  const { args, stdin } = opArgs(w, op);
  return cli(w, args, env, stdin);
}

/** A world in the state the operation starts from. */
async function worldFor(t: Test, op: CrashOp): Promise<CrashWorld> {
  // makeSimEnv gives each world a directory of its own (scratchDir), so worlds run side by side.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  await w.sim.writeNumVfs('eth1' as never, BEFORE_COUNT);
  w.definePool('p', POOL);
  const owner = spawnSleeper();
  t.teardown(owner.kill);
  const must = async (r: Promise<Spawned>, what: string) => {
    const x = await r;
    if (x.exitCode !== 0) throw new Error(`${what}: exit ${x.exitCode}: ${x.stderr}`);
  };
  if (op !== 'net-start') await must(inProcess(w, ['net-start', 'p']), 'setup net-start');
  const original = vfConfigs(w);
  // release's guest is prepared without --pid: `vfpool release` refuses a guest whose QEMU runs.
  if (op === 'release') await must(inProcess(w, ['prepare', '--xml=-'], XML), 'setup prepare');
  return { ...w, owner, original };
}

function sim(w: SimEnv): SimState {
  return JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
}

/** What a restore must bring back (not the netdev name or the MAC's provenance flag). */
function vfConfigs(w: SimEnv): Map<string, string> {
  const out = new Map<string, string>();
  for (const vf of sim(w).pfs[0]!.vfs) {
    const { mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner } = vf;
    out.set(vf.address, JSON.stringify({ mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner }));
  }
  return out;
}

/** The crash points the operation passes, in order, as the code names them. */
export async function listCrashPoints(t: Test, op: CrashOp): Promise<string[]> {
  const w = await worldFor(t, op);
  const list = join(w.dir, 'points');
  const r = await runOp(w, op, { VFPOOL_TEST_CRASH_LIST: list });
  if (r.exitCode !== 0) throw new Error(`${op} without a crash: exit ${r.exitCode}: ${r.stderr}`);
  return readFileSync(list, 'utf8').trim().split('\n');
}

/** Kills `op` at `point`, reconciles, and returns the invariants that do not hold (empty: all hold). */
export async function crashAndCheck(t: Test, op: CrashOp, point: string): Promise<string[]> {
  const w = await worldFor(t, op);
  const before = w.original;
  const crashed = await runOp(w, op, { VFPOOL_TEST_CRASH_AT: point });
  const bad: string[] = [];
  if (crashed.exitCode !== -1) bad.push(`the process was not killed at ${point} (exit ${crashed.exitCode}: ${crashed.stderr.trim()})`);
  const rec = await inProcess(w, ['reconcile']);
  if (rec.exitCode !== 0) bad.push(`reconcile: exit ${rec.exitCode}: ${rec.stderr.trim()}`);
  const status = await inProcess(w, ['status', '--json']);
  if (status.exitCode !== 0) bad.push(`state not readable: ${status.stderr.trim()}`);
  if (existsSync(join(w.settings.stateDir, 'state.json.lock'))) bad.push('the state lock is still held');
  const state = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as State;

  const addrs = state.allocations.map((a) => a.vfAddr);
  if (new Set(addrs).size !== addrs.length) bad.push(`a VF is owned twice: ${addrs.join(', ')}`);
  for (const a of state.allocations) {
    if (a.phase !== 'ready' || a.worker !== null) bad.push(`${a.vfAddr}: left ${a.phase} (worker ${a.worker})`);
    const living = a.owner.pid === null ? a.owner.via === 'cli' : isAlive(a.owner.pid);
    if (!living) bad.push(`${a.vfAddr}: record of domain '${a.owner.domain}' without a living owner (pid ${a.owner.pid})`);
  }
  for (const [name, p] of Object.entries(state.pools)) if (p.change !== null) bad.push(`pool '${name}' left mid-change: ${JSON.stringify(p.change)}`);

  const count = sim(w).pfs[0]!.numVfs;
  const active = Object.hasOwn(state.pools, 'p');
  const expected = active ? POOL_COUNT : op === 'net-start' ? BEFORE_COUNT : 0;
  if (count !== expected) bad.push(`eth1 has ${count} VFs with pool p ${active ? 'active' : 'inactive'} (expected ${expected})`);
  if (op === 'prepare' || op === 'release') {
    const after = vfConfigs(w);
    for (const [addr, cfg] of before) {
      if (addrs.includes(addr)) continue;
      if (after.get(addr) !== cfg) bad.push(`${addr} is free but not restored: ${after.get(addr)} (was ${cfg})`);
    }
  }
  const markers = readdirSync(join(w.settings.stateDir, 'index'));
  const want = [...Object.keys(state.pools).map((n) => `pool.${n}`), ...state.allocations.map((a) => `domain.${a.owner.domain}`), ...state.ports.map((p) => `domain.${p.domain}`)];
  for (const m of want) if (!markers.includes(m)) bad.push(`index marker ${m} missing`);

  // The interrupted operation can be completed now.
  const done = op === 'prepare' ? state.allocations.length > 0 : op === 'net-start' ? active : op === 'net-destroy' ? !active : false;
  if (!done) {
    const { args, stdin } = opArgs(w, op);
    const again = await inProcess(w, args, stdin);
    if (again.exitCode !== 0) bad.push(`${op} after reconcile: exit ${again.exitCode}: ${again.stderr.trim()}`);
  }
  await w.owner.kill();
  rmSync(w.dir, { recursive: true, force: true });
  return bad;
}

/** The whole suite for one operation: every point, two at a time. */
export async function crashSuite(t: Test, op: CrashOp): Promise<void> {
  const points = await listCrashPoints(t, op);
  t.ok(points.length >= 4, `${op} passes ${points.length} crash points: ${points.join(' ')}`);
  const results = new Map<string, string[]>();
  const queue = [...points];
  await Promise.all(
    [0, 1].map(async () => {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) results.set(p, await crashAndCheck(t, op, p));
    }),
  );
  for (const p of points) t.same(results.get(p), [], `killed at ${p}: every invariant holds after reconcile`);
}
