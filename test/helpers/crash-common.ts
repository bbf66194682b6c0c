/**
 * What the crash suites share (issue 10): test/helpers/crash-suite.ts (the pool's operations),
 * crash-migrate.ts (the migration stages without a QEMU) and crash-migrate-qemu.ts (those with
 * one).
 *
 * The process killed at a crash point is a real `vfpool` process, SIGKILLed by itself
 * (src/util/crash-point.ts), started as `vfpool` is installed (dist/bin/cli.cjs). So is the run
 * that lists the points an operation passes: crash-point.ts numbers each point per process
 * (`NAME#N`), so only a fresh process names them as the killed one will count them. Everything
 * around the kill (setting the host up, `vfpool reconcile`, the checks, completing or re-running
 * the operation) is vfpool's CLI run in the test's own process (runCliInProcess): the process
 * boundary is not what those runs are there for, and a spawned CLI costs a Node start-up each.
 * In-process runs share process.env, so they take turns (inProcess); the killed processes run
 * two at a time (twoAtATime).
 *
 * The host each crash point starts from is set up once per suite by vfpool itself and copied
 * for every point (seededWorlds, test/helpers/file-tree.ts): every point starts from the same files, as before, without
 * running the same `net-start` and `prepare` once per point.
 */
import { cpSync, existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { SimSeed, SimState } from '../../src/host/sim-kernel.js';
import { runCliInProcess } from './cli-in-process.js';
import { makeSimEnv, type SimEnv } from './env.js';
import { domainXml } from './libvirt-domains.js';
import { vfpoolCli, type Spawned } from './spawn.js';

export const POOL = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
export const MAC = '52:54:00:aa:00:01';
/** vm1 asking pool p for a VF (the XML of the qemu hook's `prepare`). */
export const XML = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='${MAC}' vlan='7'/>` });
const SEED: SimSeed = { pfs: [{ name: 'eth1', totalVfs: 8 }] };

/** state.json, as far as the invariants read it. */
export interface State {
  pools: Record<string, { change: unknown }>;
  allocations: Array<{ vfAddr: string; phase: string; worker: number | null; mac: string | null; owner: { domain: string; pid: number | null; via: string } }>;
  ports: Array<{ domain: string }>;
}

/** `vfpool ARGS` as a process of its own: the run that is killed (or lists the points). */
export function vfpoolProcess(w: SimEnv, args: string[], env: Record<string, string> = {}, stdin?: string): Promise<Spawned> {
  return vfpoolCli(args, { env: { ...w.env, ...env }, ...(stdin !== undefined ? { stdin } : {}) });
}

let inProcessTurn: Promise<unknown> = Promise.resolve();
/** `vfpool ARGS` in this process, one run at a time (an in-process run owns process.env while it runs). */
export function inProcess(w: SimEnv, args: string[], env: Record<string, string> = {}, stdin?: string): Promise<Spawned> {
  const run = inProcessTurn.then(() => runCliInProcess(args, { ...w.env, ...env }, stdin));
  inProcessTurn = run.catch(() => undefined);
  return run;
}

export async function must(r: Promise<Spawned>, what: string): Promise<Spawned> {
  const x = await r;
  if (x.exitCode !== 0) throw new Error(`${what}: exit ${x.exitCode}: ${x.stderr}`);
  return x;
}

/**
 * A world whose files are a copy of those in `dir` (another world's), in a directory of its
 * own. The files keep their modes (state files 0600, directories 0700), as vfpool left them; a
 * socket is not copied (a QEMU's QMP socket belongs to the QEMU serving it).
 */
export function copyWorld(t: Test, dir: string): SimEnv {
  const w = makeSimEnv(t, SEED);
  cpSync(dir, w.dir, { recursive: true, force: true, filter: (src) => !lstatSync(src).isSocket() });
  return w;
}

/** Each VF's configuration as a restore must bring it back (not the netdev name or the MAC's provenance flag). */
export function vfConfigs(w: SimEnv): Map<string, string> {
  const out = new Map<string, string>();
  for (const vf of simState(w).pfs[0]!.vfs) {
    const { mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner } = vf;
    out.set(vf.address, JSON.stringify({ mac, vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu, driver, vfioOwner }));
  }
  return out;
}

export function simState(w: SimEnv): SimState {
  return JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
}

export function readState(w: SimEnv): State {
  return JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as State;
}

/**
 * The points `args` passes uninterrupted, in order, as the code names them (a process of its
 * own: see the header), and what it printed.
 */
export async function listPoints(w: SimEnv, what: string, args: string[], env: Record<string, string> = {}, stdin?: string): Promise<{ points: string[]; stdout: string }> {
  const list = join(w.dir, 'points');
  const r = await vfpoolProcess(w, args, { ...env, VFPOOL_TEST_CRASH_LIST: list }, stdin);
  if (r.exitCode !== 0) throw new Error(`${what} without a crash: exit ${r.exitCode}: ${r.stderr}`);
  return { points: readFileSync(list, 'utf8').trim().split('\n'), stdout: r.stdout };
}

/** `args` killed at `point`: the lines that do not hold (it must have been killed there). */
export async function killAt(w: SimEnv, point: string, args: string[], env: Record<string, string> = {}, stdin?: string): Promise<string[]> {
  const crashed = await vfpoolProcess(w, args, { ...env, VFPOOL_TEST_CRASH_AT: point }, stdin);
  return crashed.exitCode === -1 ? [] : [`the process was not killed at ${point} (exit ${crashed.exitCode}: ${crashed.stderr.trim()})`];
}

/** What makes an allocation's owner a living one, where the suite knows (null: it is). */
export type OwnerCheck = (a: State['allocations'][number]) => string | null;

/**
 * `vfpool reconcile`, then the invariants every crash suite checks: the state readable, no lock
 * held, no VF owned twice, every record settled (`ready`, no worker) and its owner living
 * (`owner`), no pool left mid-change, every VF nobody holds as it was in `original`, the index
 * markers a superset of the state.
 */
export async function reconcileAndCheck(w: SimEnv, original: Map<string, string>, owner: OwnerCheck): Promise<{ bad: string[]; state: State }> {
  const bad: string[] = [];
  const rec = await inProcess(w, ['reconcile']);
  if (rec.exitCode !== 0) bad.push(`reconcile: exit ${rec.exitCode}: ${rec.stderr.trim()}`);
  try {
    w.ctx.store.read();
  } catch (err) {
    bad.push(`state not readable: ${(err as Error).message}`);
  }
  const stateDir = w.settings.stateDir;
  for (const lock of ['state.json.lock', 'migrate/vm1.json.lock']) if (existsSync(join(stateDir, lock))) bad.push(`${lock} is still held`);
  const state = readState(w);
  const addrs = state.allocations.map((a) => a.vfAddr);
  if (new Set(addrs).size !== addrs.length) bad.push(`a VF is owned twice: ${addrs.join(', ')}`);
  for (const a of state.allocations) {
    if (a.phase !== 'ready' || a.worker !== null) bad.push(`${a.vfAddr}: left ${a.phase} (worker ${a.worker})`);
    const dead = owner(a);
    if (dead !== null) bad.push(`${a.vfAddr}: ${dead}`);
  }
  for (const [name, p] of Object.entries(state.pools)) if (p.change !== null) bad.push(`pool '${name}' left mid-change: ${JSON.stringify(p.change)}`);
  const after = vfConfigs(w);
  for (const [addr, cfg] of original) if (!addrs.includes(addr) && after.get(addr) !== cfg) bad.push(`${addr} is free but not restored: ${after.get(addr)} (was ${cfg})`);
  const markers = readdirSync(join(stateDir, 'index'));
  const want = [...Object.keys(state.pools).map((n) => `pool.${n}`), ...state.allocations.map((a) => `domain.${a.owner.domain}`), ...state.ports.map((p) => `domain.${p.domain}`)];
  for (const m of want) if (!markers.includes(m)) bad.push(`index marker ${m} missing`);
  return { bad, state };
}

/** `check` of every item, two at a time (the killed processes run side by side), results in order. */
export async function twoAtATime<T, R>(items: T[], check: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  await Promise.all(
    [0, 1].map(async () => {
      for (let i = next++; i < items.length; i = next++) results[i] = await check(items[i]!);
    }),
  );
  return results;
}
