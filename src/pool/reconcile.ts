import { asVfpoolError } from '../errors.js';
import { isAlive } from '../util/process.js';
import type { Context } from './context.js';
import { releaseGuest } from './guest-release.js';
import { readLibvirtPid } from './libvirt-runtime.js';
import type { Allocation, PortRecord, VfpoolState } from '../state/schema.js';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { errnoOf } from '../errors.js';
import { probeQmpSocket } from '../qemu/qmp-probe.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { dropGuestPlan } from './guest-qemu-plan.js';

/**
 * `vfpool reconcile`: after a crash, a killed hook or a daemon restart, put vfpool's records
 * back in line with what runs. An allocation whose owner is gone is restored and freed; one
 * whose owner runs is kept (and learns its pid); a libvirt port record of a domain that no
 * longer runs is dropped; the hook shims' index markers are rebuilt.
 *
 * "Gone", in order:
 * 1. a vfpool process still working on the record (`worker` alive): kept, it is busy;
 * 2. a record whose release already began (`releasing`), or whose prepare was interrupted
 *    (`preparing` with its worker dead): freed, finishing that job;
 * 3. a known QEMU pid: kept while that process lives, freed once it does not;
 * 4. no pid yet, prepared through libvirt: kept if libvirt's pid file (RUNDIR/NAME.pid) names a
 *    live process (whose pid is then recorded), or while the record is younger than the grace
 *    period (libvirt may be between `prepare` and starting QEMU); freed after that;
 * 5. no pid, prepared with `vfpool prepare` and no `--pid`: kept; nothing can tell whether its
 *    user still needs it, so only `vfpool release` frees it.
 */
export interface ReconcileOptions {
  libvirtRunDir: string;
  /** How long a libvirt-prepared allocation without any QEMU pid is given to get one. */
  graceMs: number;
  dryRun?: boolean;
  now?: number;
}

export interface ReconcileEntry {
  domain: string;
  vfAddr: string;
  pool: string | null;
  reason: string;
}

export interface ReconcileResult {
  dryRun: boolean;
  kept: ReconcileEntry[];
  freed: ReconcileEntry[];
  failed: ReconcileEntry[];
  portsDropped: Array<{ network: string; domain: string; vf: string | null; reason: string }>;
  portsKept: number;
  /** Domains whose QEMU plan was removed (no allocation left, and no QEMU serving its socket). */
  plansRemoved: string[];
}

export const DEFAULT_RECONCILE_GRACE_MS = 120_000;

export interface Verdict {
  keep: boolean;
  reason: string;
  /** A pid learnt from libvirt's pid file, to record. */
  adoptPid?: number;
}

/** The policy above, for one allocation. Pure but for the liveness checks it is given. */
export function judgeAllocation(
  a: Allocation,
  env: {
    alive: (pid: number) => boolean;
    libvirtPid: (domain: string) => number | null;
    now: number;
    graceMs: number;
    self: number;
    /** A `vfpool prepare`d domain whose QEMU ran through the wrapper and is gone (its QMP socket refuses). */
    cliQemuGone?: (domain: string) => boolean;
  },
): Verdict {
  if (a.worker && a.worker !== env.self && env.alive(a.worker)) return { keep: true, reason: `vfpool (pid ${a.worker}) is working on it now` };
  if (a.phase === 'releasing') return { keep: false, reason: `its release did not finish${a.lastError ? ` (${a.lastError})` : ''}` };
  if (a.phase === 'preparing') return { keep: false, reason: `its prepare was interrupted${a.worker ? ` (vfpool pid ${a.worker} is gone)` : ''}` };
  if (a.owner.pid !== null) {
    return env.alive(a.owner.pid) ? { keep: true, reason: `QEMU pid ${a.owner.pid} runs` } : { keep: false, reason: `QEMU pid ${a.owner.pid} is gone` };
  }
  if (a.owner.via === 'cli') {
    if (env.cliQemuGone?.(a.owner.domain)) return { keep: false, reason: `its QEMU, run through vfpool-qemu, is gone (nobody serves its QMP socket)` };
    return { keep: true, reason: `prepared with \`vfpool prepare\` and no --pid: free it with \`vfpool release ${a.owner.domain}\`` };
  }
  const pid = env.libvirtPid(a.owner.domain);
  if (pid !== null) return { keep: true, reason: `QEMU pid ${pid} (libvirt's pid file) runs`, adoptPid: pid };
  const age = env.now - Date.parse(a.createdAt);
  if (Number.isFinite(age) && age < env.graceMs) {
    return { keep: true, reason: `prepared ${Math.round(age / 1000)} s ago and libvirt may still be starting it (grace ${Math.round(env.graceMs / 1000)} s)` };
  }
  return { keep: false, reason: `no QEMU pid was ever recorded and libvirt has no pid file for it` };
}

function judgePort(p: PortRecord, env: { libvirtPid: (domain: string) => number | null; now: number; graceMs: number }): Verdict {
  if (env.libvirtPid(p.domain) !== null) return { keep: true, reason: 'the domain runs' };
  const age = p.createdAt ? env.now - Date.parse(p.createdAt) : Infinity;
  if (age < env.graceMs) return { keep: true, reason: 'recorded moments ago; the domain may be starting' };
  return { keep: false, reason: `domain '${p.domain}' does not run (no live pid in libvirt's pid file)` };
}

/** Runs the policy over the state; frees what is gone (unless dry-run) and reports both. */
export async function reconcile(ctx: Context, opts: ReconcileOptions): Promise<ReconcileResult> {
  const log = ctx.log.child('reconcile');
  const gone = new Set<string>();
  const env = {
    cliQemuGone: (d: string) => gone.has(d),
    alive: isAlive,
    libvirtPid: (d: string) => readLibvirtPid(opts.libvirtRunDir, d),
    now: opts.now ?? Date.now(),
    graceMs: opts.graceMs,
    self: process.pid,
  };
  const result: ReconcileResult = { dryRun: Boolean(opts.dryRun), kept: [], freed: [], failed: [], portsDropped: [], portsKept: 0, plansRemoved: [] };
  const state: VfpoolState = ctx.store.read();
  // Without libvirt no pid file says whether QEMU runs; the wrapper's QMP socket does.
  for (const d of new Set(state.allocations.filter((a) => a.owner.via === 'cli' && a.owner.pid === null).map((a) => a.owner.domain))) {
    if ((await probeQmpSocket(domainQmpSocketPath(ctx.settings.stateDir, d))) === 'dead') gone.add(d);
  }
  const toFree = new Map<string, Array<{ a: Allocation; reason: string }>>();
  const adopt = new Map<string, number>();
  for (const a of state.allocations) {
    const v = judgeAllocation(a, env);
    const entry = { domain: a.owner.domain, vfAddr: a.vfAddr, pool: a.pool, reason: v.reason };
    if (v.keep) {
      result.kept.push(entry);
      if (v.adoptPid) adopt.set(a.owner.domain, v.adoptPid);
    } else {
      toFree.set(a.owner.domain, [...(toFree.get(a.owner.domain) ?? []), { a, reason: v.reason }]);
    }
  }
  const dropPorts = state.ports.map((p) => ({ p, v: judgePort(p, env) }));
  for (const { p, v } of dropPorts) {
    if (v.keep) result.portsKept++;
    else result.portsDropped.push({ network: p.network, domain: p.domain, vf: p.vfAddr ?? p.netdev, reason: v.reason });
  }

  if (opts.dryRun) {
    for (const list of toFree.values()) for (const { a, reason } of list) result.freed.push({ domain: a.owner.domain, vfAddr: a.vfAddr, pool: a.pool, reason });
    // A domain being freed loses its plan with its release; these are the others.
    result.plansRemoved = await stalePlans(ctx, new Set(state.allocations.map((a) => a.owner.domain)));
    return result;
  }

  for (const [domain, list] of toFree) {
    const entries = list.map(({ a, reason }) => ({ domain, vfAddr: a.vfAddr, pool: a.pool, reason }));
    try {
      await releaseGuest(ctx, domain, { reason: 'reconcile', vfAddrs: new Set(list.map((x) => x.a.vfAddr)) });
      result.freed.push(...entries);
      for (const e of entries) log.info(`freed ${e.vfAddr} of domain '${domain}': ${e.reason}`);
    } catch (err) {
      const msg = asVfpoolError(err).toLine();
      result.failed.push(...entries.map((e) => ({ ...e, reason: `${e.reason}; restoring failed: ${msg}` })));
      log.warn(`could not free the VFs of domain '${domain}': ${msg}`);
    }
  }
  if (adopt.size || result.portsDropped.length) {
    await ctx.store.update((s) => {
      for (const a of s.allocations) {
        const pid = adopt.get(a.owner.domain);
        if (pid !== undefined && a.owner.pid === null) a.owner.pid = pid;
      }
      const dropped = new Set(dropPorts.filter((x) => !x.v.keep).map((x) => `${x.p.network}/${x.p.portUuid}`));
      s.ports = s.ports.filter((p) => !dropped.has(`${p.network}/${p.portUuid}`));
    });
  }
  result.plansRemoved = await stalePlans(ctx, new Set(ctx.store.read().allocations.map((a) => a.owner.domain)));
  for (const d of result.plansRemoved) {
    dropGuestPlan(ctx, d);
    log.info(`removed the QEMU plan of domain '${d}': it holds no VF and no QEMU serves its socket`);
  }
  ctx.store.rebuildIndex();
  log.info(`kept ${result.kept.length}, freed ${result.freed.length}, failed ${result.failed.length}, dropped ${result.portsDropped.length} port record(s)`);
  return result;
}

/**
 * Plans no allocation backs any more: a plan with VFs whose domain holds none, or an
 * emulated-SR-IOV-only plan whose QEMU is gone (socket refuses). A plan whose domain was
 * prepared but not started yet (no socket) is kept, as is one a live QEMU serves.
 */
async function stalePlans(ctx: Context, holding: Set<string>): Promise<string[]> {
  let names: string[];
  try {
    names = readdirSync(join(ctx.settings.stateDir, 'qemu'));
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const name of names.sort()) {
    let domain: string;
    try {
      domain = parseObjectName(name, 'domain');
    } catch {
      continue;
    }
    if (holding.has(domain)) continue;
    const socket = await probeQmpSocket(domainQmpSocketPath(ctx.settings.stateDir, domain));
    if (socket === 'live' || socket === 'unknown') continue;
    let hasVfs = true;
    try {
      hasVfs = (readDomainPlan(ctx.settings.stateDir, domain)?.vfs.length ?? 0) > 0;
    } catch {
      // An unreadable plan is removed as well: prepare writes a new one.
    }
    if (hasVfs || socket === 'dead') out.push(domain);
  }
  return out;
}
