import { asVfpoolError } from '../errors.js';
import { isSameProcessAlive, monotonicMs } from '../util/process.js';
import type { Context } from './context.js';
import { releaseGuest } from './guest-release.js';
import { mendPools, type MendedPool } from './pools.js';
import { clearLeftovers, type LeftoverOutcome } from './leftovers.js';
import { readLibvirtPid } from './libvirt-runtime.js';
import type { Allocation, PortRecord, VfpoolState } from '../state/schema.js';
import { allocationKeepReason, judgeAllocation, pruneGonePorts, recordPid } from './owners.js';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { errnoOf } from '../errors.js';
import { probeQmpSocket } from '../qemu/qmp-probe.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { dropGuestPlan, purgeGuestPlanTrash } from './guest-qemu-plan.js';
import { fileRecordStore } from '../state/migration-record.js';

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
  mono?: number;
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
  /** Migration records (`migrate/DOMAIN.json`): dropped when nothing of the migration is left. */
  migrationsDropped: Array<{ domain: string; role: string; stage: string; reason: string }>;
  migrationsKept: Array<{ domain: string; role: string; stage: string; reason: string }>;
  /** Pools whose start or stop a killed vfpool left half-way: undone or finished (first, before the guests). */
  pools: MendedPool[];
  /** VFs stopped pools left behind (a VF was in use at libvirt's stop): removed once none is, else kept. */
  leftovers: LeftoverOutcome[];
}

export { DEFAULT_RECONCILE_GRACE_MS, judgeAllocation, judgePort, type Verdict } from './owners.js';

/** Runs the policy over the state; frees what is gone (unless dry-run) and reports both. */
export async function reconcile(ctx: Context, opts: ReconcileOptions): Promise<ReconcileResult> {
  const log = ctx.log.child('reconcile');
  const gone = new Set<string>();
  const env = {
    cliQemuGone: (d: string) => gone.has(d),
    alive: isSameProcessAlive,
    libvirtPid: (d: string) => readLibvirtPid({ libvirtRunDir: opts.libvirtRunDir, procRoot: ctx.settings.procRoot }, d),
    now: opts.now ?? Date.now(),
    mono: opts.mono ?? monotonicMs(),
    graceMs: opts.graceMs,
    self: process.pid,
  };
  const result: ReconcileResult = { dryRun: Boolean(opts.dryRun), kept: [], freed: [], failed: [], portsDropped: [], portsKept: 0, plansRemoved: [], migrationsDropped: [], migrationsKept: [], pools: [], leftovers: [] };
  // Pools whose start or stop was killed half-way first: their PFs may hold VFs no pool owns.
  result.pools = await mendPools(ctx, { dryRun: opts.dryRun });
  if (!opts.dryRun) for (const m of result.pools) log.info(`pool '${m.pool}': ${m.what}`);
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
  // Verdicts on the state read above, without the lock: pruned from a copy, since the update
  // below prunes the state as it is by then.
  const deadPorts = pruneGonePorts({ ports: [...state.ports] }, env);
  result.portsKept = state.ports.length - deadPorts.length;
  const portDropped = ({ port: p, reason }: { port: PortRecord; reason: string }) => ({ network: p.network, domain: p.domain, vf: p.vfAddr ?? p.netdev, reason });

  if (opts.dryRun) {
    result.portsDropped = deadPorts.map(portDropped);
    for (const list of toFree.values()) for (const { a, reason } of list) result.freed.push({ domain: a.owner.domain, vfAddr: a.vfAddr, pool: a.pool, reason });
    // A domain being freed loses its plan with its release; these are the others.
    result.plansRemoved = await stalePlans(ctx, new Set(state.allocations.map((a) => a.owner.domain)));
    await judgeMigrations(ctx, env.libvirtPid, new Set(state.allocations.filter((a) => !toFree.has(a.owner.domain)).map((a) => a.owner.domain)), result, true);
    result.leftovers = await clearLeftovers(ctx, env, { dryRun: true });
    return result;
  }

  for (const [domain, list] of toFree) {
    const entries = list.map(({ a, reason }) => ({ domain, vfAddr: a.vfAddr, pool: a.pool, reason }));
    try {
      // Judged on the state read above, without the lock: a hook of the same domain may have
      // changed the record since (a prepare that was running has finished). The release takes
      // the verdict again on the record as it is under its lock, and frees only what still fails it.
      const spared = new Map<string, string>();
      const r = await releaseGuest(ctx, domain, {
        reason: 'reconcile',
        vfAddrs: new Set(list.map((x) => x.a.vfAddr)),
        keepReason: (a) => {
          const keep = allocationKeepReason(a, env);
          if (keep !== null) spared.set(a.vfAddr, keep);
          else spared.delete(a.vfAddr);
          return keep;
        },
      });
      const gone = new Set([...r.released.map((v) => v.vfAddr), ...r.vanished]);
      for (const e of entries) {
        if (gone.has(e.vfAddr)) {
          result.freed.push(e);
          log.info(`freed ${e.vfAddr} of domain '${domain}': ${e.reason}`);
        } else {
          // Spared under the lock, or no longer recorded at all (released by its own hook meanwhile).
          const keep = spared.get(e.vfAddr);
          if (keep !== undefined) result.kept.push({ ...e, reason: `${keep} (no longer to free: it changed while reconcile ran)` });
          log.info(`left ${e.vfAddr} of domain '${domain}': ${keep ?? 'released meanwhile'}`);
        }
      }
    } catch (err) {
      const msg = asVfpoolError(err).toLine();
      result.failed.push(...entries.map((e) => ({ ...e, reason: `${e.reason}; restoring failed: ${msg}` })));
      log.warn(`could not free the VFs of domain '${domain}': ${msg}`);
    }
  }
  if (adopt.size || deadPorts.length) {
    const dropped = await ctx.store.update((s) => {
      for (const a of s.allocations) {
        const pid = adopt.get(a.owner.domain);
        if (pid !== undefined && a.owner.pid === null) recordPid(a.owner, pid);
      }
      // Judged on the state read above, without the lock: libvirt's network hook may have
      // recorded the same port again since (a port-created for a domain that is starting, in
      // its grace). Pruned as every locked decision prunes them (owners.ts), on the records as
      // they are now; kept is what is left.
      const gone = pruneGonePorts(s, env);
      result.portsKept = s.ports.length;
      return gone;
    });
    result.portsDropped = dropped.map(portDropped);
  }
  const candidates = await stalePlans(ctx, new Set(ctx.store.read().allocations.map((a) => a.owner.domain)));
  // Removed under the lock, judged against the state read there: a prepare running meanwhile
  // reserves (under the lock) before it writes its plan, so a plan whose domain holds a VF in
  // the locked state is that prepare's, not a stale one, even if it was not yet when the
  // candidates were listed.
  if (candidates.length) {
    result.plansRemoved = await ctx.store.update((s) => {
      const holding = new Set(s.allocations.map((a) => a.owner.domain));
      const stale = candidates.filter((d) => !holding.has(d));
      // Only renamed away here: what is in a directory is its QEMU user's doing, and emptying
      // a flooded one held the lock for every guest start and release meanwhile.
      for (const d of stale) dropGuestPlan(ctx, d, true);
      return stale;
    });
  }
  // What those renames retired, and what an earlier removal's budget or a killed vfpool left.
  purgeGuestPlanTrash(ctx);
  for (const d of result.plansRemoved) log.info(`removed the QEMU plan of domain '${d}': it holds no VF and no QEMU serves its socket`);
  await judgeMigrations(ctx, env.libvirtPid, new Set(ctx.store.read().allocations.map((a) => a.owner.domain)), result, false);
  for (const m of result.migrationsDropped) log.info(`dropped the migration record of domain '${m.domain}' (${m.role}, ${m.stage}): ${m.reason}`);
  for (const m of result.migrationsKept) log.info(`kept the migration record of domain '${m.domain}' (${m.role}, ${m.stage}): ${m.reason}`);
  // Last: the VFs of the guests freed above count as free here.
  result.leftovers = await clearLeftovers(ctx, env, { dryRun: false });
  for (const l of result.leftovers) log.info(`pool '${l.pool}': ${l.what}`);
  await ctx.store.rebuildIndex();
  log.info(`kept ${result.kept.length}, freed ${result.freed.length}, failed ${result.failed.length}, dropped ${result.portsDropped.length} port record(s)`);
  return result;
}

/**
 * A migration record is the recovery log of a migration killed half-way. One whose domain has
 * no live QEMU here (no libvirt pid, nobody on vfpool's QMP socket) and no allocation left
 * describes nothing that still exists: dropped. One whose QEMU runs is kept and reported (a
 * source mid-perform may have its VF unplugged: `vfpool migrate confirm --role source --failed`
 * plugs it back); so is one whose domain still holds VFs (confirm frees them).
 */
async function judgeMigrations(ctx: Context, libvirtPid: (d: string) => number | null, holding: Set<string>, result: ReconcileResult, dryRun: boolean): Promise<void> {
  const records = fileRecordStore(ctx.settings.stateDir);
  for (const domain of records.list().sort()) {
    let rec;
    try {
      rec = records.read(domain);
    } catch (err) {
      result.migrationsKept.push({ domain, role: '?', stage: '?', reason: `unreadable: ${asVfpoolError(err).toLine()}` });
      continue;
    }
    if (rec === null) continue;
    const pid = libvirtPid(domain);
    const live = pid !== null || (await probeQmpSocket(domainQmpSocketPath(ctx.settings.stateDir, domain))) === 'live';
    const what = { domain, role: rec.role, stage: rec.stage };
    // A device_del begun but not seen through counts: the device may be gone from the guest.
    const unplugged = rec.vfs.filter((v) => (v.unplugged || v.unplugMode === 'device_del') && !v.plugged).map((v) => v.id);
    if (live) {
      const midPerform = rec.role === 'source' && unplugged.length > 0;
      result.migrationsKept.push({ ...what, reason: midPerform
        ? `its QEMU runs with ${unplugged.join(', ')} unplugged by an unfinished migration: \`vfpool migrate confirm ${domain} --role source --failed\` plugs them back, or \`--role source\` if it arrived elsewhere`
        : `its QEMU runs: finish with \`vfpool migrate confirm ${domain} --role ${rec.role}\` (add --failed if the migration failed)` });
    } else if (holding.has(domain)) {
      // On the source --failed alone would mean "plug them back", but with no QEMU left either
      // outcome frees them (migrate-command.ts): named both ways, since only the user knows which it was.
      result.migrationsKept.push({ ...what, reason: rec.role === 'source'
        ? `no QEMU runs but the domain holds VFs here: \`vfpool migrate confirm ${domain} --role source\` restores and frees them if it arrived elsewhere, \`vfpool migrate confirm ${domain} --role source --failed\` if the migration failed`
        : `no QEMU runs but the domain holds VFs here: \`vfpool migrate confirm ${domain} --role destination --failed\` frees them` });
    } else {
      result.migrationsDropped.push({ ...what, reason: 'no QEMU runs and the domain holds no VF here' });
      if (!dryRun) await records.remove(domain);
    }
  }
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
