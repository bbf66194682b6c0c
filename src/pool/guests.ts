import { journal } from '../ops/journal-entries.js';
import type { Settings } from '../config/settings.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, ConflictError, HostError, RollbackError, VfpoolError, asVfpoolError, errnoOf, prefixError } from '../errors.js';
import { domainRequests, type DacLabel, type DomainSpec, type VfRequest } from '../config/domain-xml.js';
import { modeUsesVfio, type PoolMode, type PoolSpec } from '../config/pool-xml.js';
import { parseObjectName, type NetdevName, type PciAddress } from '../types.js';
import { isAlive } from '../util/process.js';
import { pickVfs, resolveNamedVf, resolvePoolMembers, type Member, type ResolvedRequest } from './allocation.js';
import type { Context } from './context.js';
import type { Allocation, VfpoolState } from './state-store.js';
import {
  HostReads,
  applyVfSteps,
  describeVfStep,
  planVfConfigure,
  planVfRestore,
  readVfFacts,
  savedFromFacts,
  type Owner,
  type VfFacts,
  type VfStep,
  type VfWant,
} from './vf-config.js';

/**
 * A guest's VFs through its lifecycle: prepare (allocate + configure), start (hand the vfio
 * groups to QEMU's user), started/reconnect/attach (learn QEMU's pid), release (restore + free).
 * Called by the qemu hook and by `vfpool prepare|release`. Every operation on a domain that
 * holds nothing and asks for nothing returns without taking the state lock or writing state.
 *
 * Concurrency: the state lock is held only to pick VFs and write records, never while the VFs
 * are configured, so many guests start at once. A record carries the pid of the vfpool process
 * working on it (`worker`); others leave it alone while that process lives, and
 * `vfpool reconcile` finishes the job of one that died.
 */

export interface GuestOptions {
  /** Who asks: libvirt's hook, or `vfpool prepare` (whose owner has no libvirt pid file). */
  via: 'libvirt' | 'cli';
  /** libvirt's QEMU runtime directory, where it keeps `NAME.pid` (/run/libvirt/qemu). */
  libvirtRunDir: string;
  /** Where /etc/passwd and /etc/group are, for a DAC label given by name. */
  etcDir?: string;
}

/**
 * Guest options from the settings an entry point resolved (`VFPOOL_LIBVIRT_RUN_DIR` moves
 * libvirt's QEMU runtime directory with its `NAME.pid` files, for tests and for a libvirtd with
 * another prefix; `VFPOOL_ETC` moves /etc, where a DAC label given by name is looked up).
 */
export function guestOptions(via: GuestOptions['via'], settings: Settings): GuestOptions {
  return { via, libvirtRunDir: settings.libvirtRunDir, etcDir: settings.etcDir };
}

/** One VF of a prepared guest, as `vfpool prepare --json` prints it. */
export interface GuestVf {
  request: number;
  pool: string | null;
  mode: PoolMode;
  pf: NetdevName;
  vfIndex: number;
  vfAddr: PciAddress;
  netdev: NetdevName | null;
  mac: string | null;
  vlan: number | null;
  guestSlot: number | null;
  alias: string;
  pairedMac: string | null;
  phase: Allocation['phase'];
}

export interface PrepareResult {
  domain: string;
  vfs: GuestVf[];
  /** With --dry-run: the steps that would run, one line each. */
  plan: string[];
  /** Allocations of an earlier run of this domain that were restored and freed first. */
  releasedStale: string[];
}

export function describeAllocation(a: Allocation): GuestVf {
  return {
    request: a.guestSlot ?? 0,
    pool: a.pool,
    mode: a.mode ?? 'hostdev',
    pf: a.pf,
    vfIndex: a.vfIndex,
    vfAddr: a.vfAddr,
    netdev: a.netdev,
    mac: a.mac,
    vlan: a.vlan,
    guestSlot: a.guestSlot,
    alias: a.alias,
    pairedMac: a.pairedMac ?? null,
    phase: a.phase,
  };
}

function allocationsOf(state: VfpoolState, domain: string): Allocation[] {
  return state.allocations.filter((a) => a.owner.domain === domain);
}

/**
 * The pool a name refers to in this state, or undefined if there is none by that name; for one
 * pass (a domain's requests, one planPrepare) the pool names are listed and each definition
 * parsed once, however many requests name it.
 */
function poolLookup(ctx: Context, state: VfpoolState): (name: string) => PoolSpec | undefined {
  let names: string[] | undefined;
  const memo = new Map<string, PoolSpec | undefined>();
  return (name) => {
    if (!memo.has(name)) {
      names ??= ctx.registry.names(state);
      memo.set(name, names.includes(name) ? ctx.registry.get(name, state) : undefined);
    }
    return memo.get(name);
  };
}

/** The VF requests of a domain, validated against the pools that exist now. */
export function requestsOf(ctx: Context, spec: DomainSpec, state: VfpoolState = ctx.store.read()): VfRequest[] {
  const lookupPool = poolLookup(ctx, state);
  return domainRequests(spec, (name) => lookupPool(name)?.mode);
}

function wantOf(r: VfRequest, mode: PoolMode): VfWant {
  return {
    mac: r.mac,
    vlan: r.vlan,
    qos: r.qos,
    spoofchk: r.spoofchk,
    trust: r.trust,
    linkState: r.linkState,
    minTxRate: r.minTxRate,
    maxTxRate: r.maxTxRate,
    mtu: r.mtu,
    vfio: modeUsesVfio(mode),
  };
}

function whereOf(domain: string, pool: string | null, m: { pf: string; vfIndex: number; vfAddr: string }): string {
  return `domain '${domain}'${pool ? `, pool '${pool}'` : ''}, VF ${m.vfAddr} (${m.pf} VF ${m.vfIndex})`;
}

interface PlannedVf {
  rr: ResolvedRequest;
  member: Member;
  facts: VfFacts;
  steps: VfStep[];
  record: Allocation;
  where: string;
}

/**
 * Picks and plans, against `state` (the locked state for real, a plain read for --dry-run).
 * Throws before anything is written when a request cannot be served. Nothing changes the host
 * during the pass, so each PF is read once (`HostReads`) and each pool looked up once.
 */
async function planPrepare(ctx: Context, spec: DomainSpec, requests: VfRequest[], state: VfpoolState, opts: GuestOptions, pid: number | null): Promise<PlannedVf[]> {
  const reads = new HostReads(ctx.host);
  const lookupPool = poolLookup(ctx, state);
  const memberCache = new Map<string, Promise<Member[]>>();
  const members = (pool: PoolSpec) => {
    let m = memberCache.get(pool.name);
    if (!m) memberCache.set(pool.name, (m = resolvePoolMembers(ctx.host, pool, reads)));
    return m;
  };
  const resolved: ResolvedRequest[] = [];
  for (const r of requests) {
    const pool = r.pool ? lookupPool(r.pool) ?? null : null;
    if (r.pool && !pool) throw new BadInputError(`${r.field}: unknown pool '${r.pool}'`, 'define it with `vfpool net-define FILE`');
    const mode: PoolMode = pool?.mode ?? 'hostdev';
    const bound = r.netdev ? ((state.bindings ?? []).find((b) => b.domain === spec.name && b.netdev === r.netdev)?.vfAddr ?? null) : null;
    const named = r.netdev !== null || r.address !== null ? await resolveNamedVf(ctx.host, r, bound, spec.name, reads) : null;
    resolved.push({ request: r, pool, mode, named });
  }
  const picked = await pickVfs(ctx.host, state, resolved, members, spec.name);
  const now = new Date().toISOString();
  const planned: PlannedVf[] = [];
  for (const rr of resolved) {
    const member = picked.get(rr.request.index)!;
    const where = whereOf(spec.name, rr.pool?.name ?? null, { pf: member.pf, vfIndex: member.vf.index, vfAddr: member.vf.address });
    const facts = await readVfFacts(ctx.host, member.pf, member.vf.address, reads);
    const { steps, applied } = planVfConfigure(facts, wantOf(rr.request, rr.mode), where);
    const r = rr.request;
    planned.push({
      rr,
      member,
      facts,
      steps,
      where,
      record: {
        pool: rr.pool?.name ?? null,
        mode: rr.mode,
        pf: member.pf,
        vfIndex: member.vf.index,
        vfAddr: member.vf.address,
        netdev: member.vf.netdev,
        iommuGroup: member.vf.iommuGroup,
        owner: { domain: spec.name, uuid: spec.uuid, pid, via: opts.via },
        mac: r.mac,
        vlan: r.vlan,
        alias: `vfpool-vf${r.index}`,
        pairedMac: r.pairedMac,
        phase: 'preparing',
        worker: process.pid,
        saved: savedFromFacts(facts),
        applied,
        vfioOwner: null,
        guestSlot: r.index,
        requestedNetdev: r.netdev,
        createdAt: now,
        lastError: null,
      },
    });
  }
  return planned;
}

/**
 * `prepare begin` (and `vfpool prepare`): for each VF request, pick a free VF under the lock
 * and record it with everything about it that will change (Step 1); then, without the lock,
 * set the MAC and the rest through the PF, read it back and bind vfio-pci (Step 2); then mark
 * it ready (Step 3). Any failure in Step 2 undoes what was done, in reverse, and removes the
 * records, so the VFs and the pool are exactly as before (HostError, exit 1, one line naming
 * domain, pool, VF and cause). A domain asking for nothing returns without touching state.
 *
 * Allocations left by an earlier run of the same domain (QEMU gone, no release seen) are
 * restored and freed first; a domain whose QEMU still runs is a ConflictError.
 */
export async function prepareGuest(ctx: Context, spec: DomainSpec, opts: GuestOptions & { dryRun?: boolean; pid?: number | null }): Promise<PrepareResult> {
  try {
    return await prepareGuestSteps(ctx, spec, opts);
  } catch (err) {
    // Every failure is one line that starts with the domain (libvirt shows it as the start's error).
    const e = asVfpoolError(err);
    if (!opts.dryRun) journal.prepareFailed(ctx, spec.name, e);
    return Promise.reject(e.message.startsWith(`domain '${spec.name}'`) ? e : prefixError(`domain '${spec.name}'`, e));
  }
}

async function prepareGuestSteps(ctx: Context, spec: DomainSpec, opts: GuestOptions & { dryRun?: boolean; pid?: number | null }): Promise<PrepareResult> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const before = ctx.store.read();
  const requests = requestsOf(ctx, spec, before);
  const existing = allocationsOf(before, spec.name);
  const result: PrepareResult = { domain: spec.name, vfs: [], plan: [], releasedStale: [] };

  // Step 0: an earlier run's allocations.
  if (existing.length) {
    const live = existing.find((a) => a.owner.pid !== null && isAlive(a.owner.pid));
    if (live) {
      throw new ConflictError(`domain '${spec.name}' already holds VF ${live.vfAddr} and its QEMU (pid ${live.owner.pid}) still runs`, 'stop it first; `vfpool status` shows what it holds');
    }
    if (opts.via === 'cli' && existing.every((a) => a.phase === 'ready' && a.owner.pid === null)) {
      throw new ConflictError(`domain '${spec.name}' is already prepared (VF ${existing.map((a) => a.vfAddr).join(', ')})`, `release it first: \`vfpool release ${spec.name}\``);
    }
    if (opts.dryRun) {
      result.plan.push(`release ${existing.length} allocation(s) left by an earlier run of domain '${spec.name}'`);
    } else {
      log.info(`Step 0: ${existing.length} allocation(s) from an earlier run, whose QEMU is gone: restoring and freeing them first`);
      const r = await releaseGuest(ctx, spec.name, { reason: 'stale' });
      result.releasedStale = r.released.map((a) => a.vfAddr);
    }
  }
  if (requests.length === 0) return result;

  const pid = opts.pid ?? null;
  if (opts.dryRun) {
    const planned = await planPrepare(ctx, spec, requests, ctx.store.read(), opts, pid);
    for (const p of planned) {
      result.vfs.push(describeAllocation(p.record));
      result.plan.push(`${p.where}: allocate (guest slot ${p.record.guestSlot})`);
      for (const s of p.steps) result.plan.push(describeVfStep(s));
    }
    return result;
  }

  // Step 1: pick and record, under the lock, before the first change to any VF.
  const planned = await ctx.store.update(async (state) => {
    const p = await planPrepare(ctx, spec, requests, state, opts, pid);
    state.allocations.push(...p.map((x) => x.record));
    return p;
  });
  journal.allocated(ctx, planned.map((p) => p.record));
  for (const p of planned) log.info(`Step 1: ${p.where}: allocated to request #${p.rr.request.index + 1} (${p.rr.request.field}), original config saved`);

  // Step 2: configure, without the lock; undo everything on failure.
  const whereByAddr = new Map(planned.map((p) => [p.member.vf.address as string, p.where]));
  try {
    await applyVfSteps(
      ctx.host,
      planned.flatMap((p) => p.steps),
      log,
      { undo: true, label: 'Step 2 configure', wrap: (cause, step) => prefixError(whereByAddr.get(step.vfAddr) ?? `domain '${spec.name}'`, cause) },
    );
  } catch (err) {
    const cause = asVfpoolError(err);
    const rolledBack = !(cause instanceof RollbackError);
    await ctx.store.update((state) => {
      const mine = (a: Allocation) => a.owner.domain === spec.name && a.worker === process.pid && whereByAddr.has(a.vfAddr);
      if (rolledBack) state.allocations = state.allocations.filter((a) => !mine(a));
      else for (const a of state.allocations.filter(mine)) Object.assign(a, { phase: 'releasing', worker: null, lastError: cause.message });
    });
    log.warn(rolledBack ? 'prepare failed; every change was undone and the VFs are free again' : 'prepare failed and so did part of the undo; the VFs stay recorded for `vfpool reconcile`');
    throw cause;
  }

  // Step 3: the final netdev (a reload may rename it), and ready.
  const netdevs = new Map<string, NetdevName | null>(planned.map((p) => [p.member.vf.address, p.member.vf.netdev]));
  try {
    for (const pf of new Set(planned.map((p) => p.member.pf))) {
      for (const vf of await ctx.host.listVfs(pf)) netdevs.set(vf.address, vf.netdev);
    }
  } catch (err) {
    log.warn(`Step 3: could not read the VFs' netdevs back (${asVfpoolError(err).message}); keeping the names from before`);
  }
  const ready = await ctx.store.update((state) => {
    const out: Allocation[] = [];
    for (const p of planned) {
      const a = state.allocations.find((x) => x.owner.domain === spec.name && x.vfAddr === p.record.vfAddr && x.worker === process.pid);
      if (!a) continue;
      Object.assign(a, { phase: 'ready', worker: null, netdev: netdevs.get(a.vfAddr) ?? null });
      out.push(structuredClone(a));
      const nd = p.rr.request.netdev;
      if (nd) {
        const bindings = (state.bindings ??= []);
        if (!bindings.some((b) => b.domain === spec.name && b.netdev === nd)) {
          bindings.push({ domain: spec.name, netdev: nd, vfAddr: p.record.vfAddr, since: new Date().toISOString() });
        }
      }
    }
    return out;
  });
  journal.configured(ctx, ready);
  log.info(`Step 3: prepared ${ready.length} VF(s): ${ready.map((a) => `${a.vfAddr} mac ${a.mac}`).join(', ')}`);
  result.vfs = ready.map(describeAllocation);
  return result;
}

export interface ReleaseResult {
  domain: string;
  released: GuestVf[];
  /** VFs that vanished (PF reset, VF count changed): nothing left to restore, record dropped. */
  vanished: string[];
}

/**
 * `release end` (any reason, `failed` included) and `vfpool release`: restore each VF of the
 * domain as it was (admin MAC before the host driver is bound again, then the rest) and free
 * it. Idempotent: a domain with nothing recorded is success, without taking the lock. A record
 * is deleted only after its restore succeeded; a failed one stays (phase `releasing`) for a
 * later release or `vfpool reconcile`, and the error (exit 1) names the domain, VF and cause.
 * `vfAddrs` limits it to some VFs (reconcile); `refuseIfRunning` makes a live QEMU a conflict.
 */
export async function releaseGuest(
  ctx: Context,
  domain: string,
  opts: { reason: string; vfAddrs?: Set<string>; refuseIfRunning?: boolean; forgetNetdevs?: boolean },
): Promise<ReleaseResult> {
  const log = ctx.log.child(`domain '${domain}'`);
  const result: ReleaseResult = { domain, released: [], vanished: [] };
  const selected = (a: Allocation) => a.owner.domain === domain && (!opts.vfAddrs || opts.vfAddrs.has(a.vfAddr));
  const peek = ctx.store.read();
  const hasBindings = opts.forgetNetdevs && (peek.bindings ?? []).some((b) => b.domain === domain);
  if (!peek.allocations.some(selected) && !hasBindings) return result;

  // Step 1: claim the records.
  const claimed = await ctx.store.update((state) => {
    const list = state.allocations.filter(selected);
    for (const a of list) {
      if (a.worker && a.worker !== process.pid && isAlive(a.worker)) {
        throw new ConflictError(`domain '${domain}': VF ${a.vfAddr} is being ${a.phase === 'preparing' ? 'prepared' : 'released'} by vfpool (pid ${a.worker})`, 'wait for it to finish, then try again');
      }
      if (opts.refuseIfRunning && a.owner.pid !== null && isAlive(a.owner.pid)) {
        throw new ConflictError(`domain '${domain}' still runs (QEMU pid ${a.owner.pid}) and uses VF ${a.vfAddr}`, 'stop the guest first');
      }
    }
    for (const a of list) Object.assign(a, { phase: 'releasing', worker: process.pid });
    if (opts.forgetNetdevs) state.bindings = (state.bindings ?? []).filter((b) => b.domain !== domain);
    return structuredClone(list);
  }).catch((e) => Promise.reject((journal.releaseRefused(ctx, domain, e), e)));
  if (claimed.length) log.info(`releasing ${claimed.length} VF(s) (${opts.reason})`);

  // Step 2: restore each VF.
  const done = new Set<string>();
  const failures: Array<{ a: Allocation; error: VfpoolError }> = [];
  for (const a of claimed) {
    const where = whereOf(domain, a.pool, a);
    let facts: VfFacts;
    try {
      facts = await readVfFacts(ctx.host, a.pf, a.vfAddr);
    } catch (err) {
      const e = asVfpoolError(err);
      if (e instanceof HostError && (e.code === 'ENODEV' || e.code === 'ENOENT')) {
        log.warn(`${where}: the VF is gone (${e.message}); nothing left to restore`);
        done.add(a.vfAddr);
        result.vanished.push(a.vfAddr);
        continue;
      }
      failures.push({ a, error: prefixError(where, e) });
      continue;
    }
    try {
      await applyVfSteps(ctx.host, planVfRestore(a, facts), log, { undo: false, label: 'Step 2 restore', wrap: (cause) => prefixError(where, cause) });
      done.add(a.vfAddr);
      journal.restored(ctx, a);
      if (!result.vanished.includes(a.vfAddr)) result.released.push(describeAllocation(a));
    } catch (err) {
      failures.push({ a, error: asVfpoolError(err) });
    }
  }

  // Step 3: delete the restored records; keep the others with their error.
  await ctx.store.update((state) => {
    state.allocations = state.allocations.filter((a) => !(selected(a) && done.has(a.vfAddr) && a.worker === process.pid));
    for (const f of failures) {
      const a = state.allocations.find((x) => selected(x) && x.vfAddr === f.a.vfAddr);
      if (a) Object.assign(a, { worker: null, lastError: f.error.message });
    }
  });
  journal.released(ctx, claimed.filter((a) => done.has(a.vfAddr)), new Set(result.vanished));
  for (const f of failures) journal.releaseFailed(ctx, f.a, f.error);
  if (failures.length) {
    const first = failures[0]!.error;
    log.warn(`release left ${failures.length} VF(s) recorded: ${failures.map((f) => f.error.message).join('; ')}`);
    throw new HostError(`${first.message}; the VF stays allocated until a release succeeds`, {
      code: first instanceof HostError ? first.code : undefined,
      hint: first.hint ?? `fix the cause, then run \`vfpool release ${domain}\` or \`vfpool reconcile\``,
      cause: first,
    });
  }
  log.info(`released ${done.size} VF(s)`);
  return result;
}

/** The uid/gid of a DAC label; names are looked up in ETC/passwd and ETC/group. */
export function resolveDacLabel(label: DacLabel, etcDir = '/etc'): Owner {
  const lookup = (file: string, name: string, what: string): number => {
    let text: string;
    try {
      text = readFileSync(join(etcDir, file), 'utf8');
    } catch (err) {
      throw new HostError(`cannot read ${join(etcDir, file)} to find ${what} '${name}': ${errnoOf(err)}`, { code: errnoOf(err) });
    }
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined && /^[0-9]+$/.test(f[2])) return Number(f[2]);
    }
    throw new HostError(`the domain's DAC label names ${what} '${name}', which ${join(etcDir, file)} does not list`, { code: 'ENOENT' });
  };
  const uid = 'uid' in label.user ? label.user.uid : lookup('passwd', label.user.name, 'user');
  const gid = 'gid' in label.group ? label.group.gid : lookup('group', label.group.name, 'group');
  return { uid, gid };
}

/** libvirt's pid file for a running domain (`RUNDIR/NAME.pid`): the pid, if that process lives. */
export function readLibvirtPid(runDir: string, domain: string): number | null {
  const file = join(runDir, `${parseObjectName(domain, 'domain name')}.pid`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 1 && isAlive(pid) ? pid : null;
}

export interface StartResult {
  domain: string;
  handedOver: Array<{ vfAddr: string; group: string; uid: number; gid: number }>;
  pid: number | null;
}

/**
 * `start begin`: libvirt has labelled what it knows and is about to let QEMU run. For each of the
 * domain's vfio VFs: check it is still on vfio-pci, and hand `/dev/vfio/GROUP` to the user QEMU
 * runs as (the domain's DAC label), recording the previous owner first so release gives it back.
 * Records QEMU's pid if libvirt's pid file already names it. Idempotent; nothing recorded, nothing done.
 */
export async function startGuest(ctx: Context, spec: DomainSpec, opts: GuestOptions): Promise<StartResult> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const result: StartResult = { domain: spec.name, handedOver: [], pid: null };
  const mine = allocationsOf(ctx.store.read(), spec.name);
  if (!mine.length) return result;
  const pid = readLibvirtPid(opts.libvirtRunDir, spec.name);
  result.pid = pid;
  const vfio = mine.filter((a) => modeUsesVfio(a.mode ?? 'hostdev'));
  const owner = spec.dacLabel ? resolveDacLabel(spec.dacLabel, opts.etcDir) : null;
  if (!owner && vfio.length) log.info('the domain XML has no DAC label: /dev/vfio groups keep their owner (QEMU runs as root?)');

  // Checks, before any change: each vfio VF still bound to vfio-pci.
  const steps: VfStep[] = [];
  for (const a of vfio) {
    const where = whereOf(spec.name, a.pool, a);
    const vf = (await ctx.host.listVfs(a.pf)).find((v) => v.address === a.vfAddr);
    if (!vf || vf.driver !== 'vfio-pci' || vf.iommuGroup === null) {
      throw new HostError(`${where}: expected it bound to vfio-pci, found ${vf ? `driver ${vf.driver ?? 'none'}` : 'no such VF'}`, {
        code: 'ENODEV',
        hint: `someone rebound it since prepare; \`vfpool release ${spec.name}\` and start again`,
      });
    }
    if (!owner) continue;
    const current = await ctx.host.getVfioGroupOwner(vf.iommuGroup);
    if (current && current.uid === owner.uid && current.gid === owner.gid) continue;
    steps.push({ kind: 'set-vfio-owner', vfAddr: a.vfAddr, group: vf.iommuGroup, owner, undo: current });
  }

  // Step 1: record the previous owners (and the pid), then hand the groups over. What each
  // record said before is kept, so a failed hand-over puts the state back as it was (the undo
  // puts the host back).
  const previous = new Map<string, Allocation['vfioOwner']>();
  await ctx.store.update((state) => {
    for (const a of allocationsOf(state, spec.name)) {
      if (pid !== null) a.owner.pid = pid;
      const s = steps.find((x) => x.vfAddr === a.vfAddr);
      if (s && s.kind === 'set-vfio-owner') {
        previous.set(a.vfAddr, a.vfioOwner ? structuredClone(a.vfioOwner) : a.vfioOwner);
        a.vfioOwner = { saved: a.vfioOwner?.saved ?? s.undo, granted: s.owner };
      }
    }
  });
  if (!steps.length) return result;
  try {
    const byAddr = new Map(vfio.map((a) => [a.vfAddr as string, whereOf(spec.name, a.pool, a)]));
    await applyVfSteps(ctx.host, steps, log, { undo: true, label: 'hand over', wrap: (cause, step) => prefixError(byAddr.get(step.vfAddr) ?? `domain '${spec.name}'`, cause) });
  } catch (err) {
    await ctx.store.update((state) => {
      for (const a of allocationsOf(state, spec.name)) if (previous.has(a.vfAddr)) a.vfioOwner = previous.get(a.vfAddr);
    });
    throw err;
  }
  for (const s of steps) if (s.kind === 'set-vfio-owner') result.handedOver.push({ vfAddr: s.vfAddr, group: s.group, uid: s.owner.uid, gid: s.owner.gid });
  log.info(`handed ${steps.length} vfio group(s) to uid ${owner!.uid}`);
  return result;
}

/**
 * `started begin`, `reconnect begin`, `attach begin`: the domain runs; keep its VFs and record
 * QEMU's pid from libvirt's pid file (so `vfpool reconcile` can tell a live guest from a dead
 * one). Never fails for a missing pid: a failing reconnect hook makes libvirt kill the guest.
 */
export async function adoptGuest(ctx: Context, spec: DomainSpec, opts: GuestOptions, op: string): Promise<{ domain: string; vfs: number; pid: number | null }> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const before = allocationsOf(ctx.store.read(), spec.name);
  if (!before.length) {
    if (op !== 'started' && requestsOf(ctx, spec).length) {
      log.warn(`${op}: the domain asks for VFs but vfpool has no record of it (state lost?); it keeps running without vfpool's bookkeeping`);
    }
    return { domain: spec.name, vfs: 0, pid: null };
  }
  const pid = readLibvirtPid(opts.libvirtRunDir, spec.name);
  if (pid === null) {
    log.info(`${op}: no live pid in ${join(opts.libvirtRunDir, `${spec.name}.pid`)}; keeping ${before.length} VF(s) without one`);
    return { domain: spec.name, vfs: before.length, pid: null };
  }
  // The hot path: `start begin` usually recorded this pid already, and then there is nothing to
  // write (no lock taken, state untouched).
  const recorded = (a: Allocation) => a.owner.pid === pid && (!spec.uuid || a.owner.uuid === spec.uuid);
  if (before.every(recorded)) {
    log.info(`${op}: keeps ${before.length} VF(s), QEMU pid ${pid}`);
    return { domain: spec.name, vfs: before.length, pid };
  }
  await ctx.store.update((state) => {
    for (const a of allocationsOf(state, spec.name)) {
      a.owner.pid = pid;
      if (spec.uuid) a.owner.uuid = spec.uuid;
    }
  });
  log.info(`${op}: keeps ${before.length} VF(s), QEMU pid ${pid}`);
  return { domain: spec.name, vfs: before.length, pid };
}

/** `vfpool release --dry-run`: what a release would do, one line per step; nothing changes. */
export async function planReleaseGuest(ctx: Context, domain: string): Promise<{ domain: string; vfs: GuestVf[]; plan: string[] }> {
  const mine = allocationsOf(ctx.store.read(), domain);
  const plan: string[] = [];
  for (const a of mine) {
    const where = whereOf(domain, a.pool, a);
    try {
      const steps = planVfRestore(a, await readVfFacts(ctx.host, a.pf, a.vfAddr));
      plan.push(`${where}: restore (${steps.length} step(s)) and free`);
      for (const s of steps) plan.push(describeVfStep(s));
    } catch (err) {
      plan.push(`${where}: cannot plan the restore: ${asVfpoolError(err).message}`);
    }
  }
  return { domain, vfs: mine.map(describeAllocation), plan };
}
