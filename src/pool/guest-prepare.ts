import { ConflictError, RollbackError, asVfpoolError, prefixError, type VfpoolError } from '../errors.js';
import { journal } from './journal-entries.js';
import type { DomainSpec } from '../config/domain-xml.js';
import type { VfRequest } from './requests.js';
import type { NetdevName } from '../types.js';
import { isSameProcessAlive } from '../util/process.js';
import type { Logger } from '../util/log.js';
import type { Allocation } from '../state/schema.js';
import type { DomainPlanV1 } from '../state/domain-plan.js';
import type { Context } from './context.js';
import { allocationsOf, describeAllocation, type GuestOptions, type PrepareResult } from './guest-model.js';
import { checkPoolsActive, planPrepare, requestsOf, type PlannedVf } from './guest-plan.js';
import { releaseGuest, restoreVfs } from './guest-release.js';
import { applyVfSteps, describeVfStep } from './vf-steps.js';
import { buildDomainPlan, checkDeliveryPossible, checkDomainForQemu, defaultDeliveryHostFacts, writeGuestPlan, type DeliveryHostFacts } from './guest-qemu-plan.js';
import type { VfRequest as Request } from './requests.js';
import { crashPoint } from '../util/crash-point.js';
import { allocationKeepReason, describeGonePort, judgeAllocation, ownerEnv, pruneGonePorts } from './owners.js';
import { changingPfs, pfChangingError } from './pool-changes.js';

/** Restores and frees the allocations of other domains that are judged gone (owners.ts). */
async function freeGoneOwners(ctx: Context, self: string, log: Logger): Promise<void> {
  const env = ownerEnv(ctx.settings);
  const gone = new Map<string, Set<string>>();
  for (const a of ctx.store.read().allocations) {
    if (a.owner.domain === self || judgeAllocation(a, env).keep) continue;
    gone.set(a.owner.domain, (gone.get(a.owner.domain) ?? new Set()).add(a.vfAddr));
  }
  for (const [domain, vfAddrs] of gone) {
    try {
      // Judged on a read without the lock: taken again on each record under it (reconcile.ts).
      const r = await releaseGuest(ctx, domain, { reason: 'its owner is gone', vfAddrs, keepReason: (a) => allocationKeepReason(a, env) });
      const freed = [...r.released.map((v) => v.vfAddr), ...r.vanished];
      if (freed.length) log.info(`freed ${freed.join(', ')} of domain '${domain}', whose owner is gone`);
    } catch (err) {
      // Not this guest's failure: the VFs stay recorded (and held) for reconcile.
      log.warn(`could not free the VFs of domain '${domain}', whose owner is gone: ${asVfpoolError(err).message}`);
    }
  }
}

/**
 * Prepare as three steps that can be called on their own (migration's prepare is reserve +
 * configure, its confirm a commit or a release):
 * - `reserveVfs`: under the state lock, pick a free VF per request, plan its configuration and
 *   record it `preparing` with everything that will change (saved before the first change);
 * - `configureVfs`: without the lock, apply the plans on the host; a failure undoes every step
 *   in reverse and drops the records (or, if the undo failed too, leaves them for reconcile);
 * - `commitVfs`: record the VFs `ready`, with their final netdev and any netdev= binding.
 */
export interface Reservation {
  domain: string;
  planned: PlannedVf[];
}

export async function reserveVfs(ctx: Context, spec: DomainSpec, requests: VfRequest[], opts: GuestOptions, pid: number | null): Promise<Reservation> {
  const planned = await ctx.store.update(async (state) => {
    // Checked again here, under the lock: two prepares of one domain that both passed Step 0
    // would otherwise give it two VFs with the same MAC.
    const held = allocationsOf(state, spec.name);
    if (held.length) {
      const busy = held.find((a) => a.worker && a.worker !== process.pid && isSameProcessAlive(a.worker, a.workerStart));
      throw new ConflictError(
        busy
          ? `domain '${spec.name}' is being prepared or released by vfpool (pid ${busy.worker}) right now`
          : `domain '${spec.name}' already holds VF ${held.map((a) => a.vfAddr).join(', ')}`,
        busy ? 'wait for it to finish; `vfpool status` shows what the domain holds' : `release it first: \`vfpool release ${spec.name}\``,
      );
    }
    for (const { port } of pruneGonePorts(state, ownerEnv(ctx.settings))) ctx.log.info(describeGonePort(port));
    const changing = changingPfs(state);
    for (const r of requests) {
      const pool = r.pool ? ctx.registry.get(r.pool, state) : null;
      for (const pf of [...(pool?.pfs.map((x) => x.dev) ?? []), ...(pool?.interfaces ?? [])]) {
        const c = changing.get(pf);
        if (c) throw pfChangingError(pf, c);
      }
    }
    const p = await planPrepare(ctx, spec, requests, state, opts, pid);
    for (const x of p) {
      const c = changing.get(x.member.pf);
      if (c) throw pfChangingError(x.member.pf, c);
    }
    state.allocations.push(...p.map((x) => x.record));
    return p;
  });
  crashPoint('prepare:reserved');
  return { domain: spec.name, planned };
}

export async function configureVfs(ctx: Context, r: Reservation, log: Logger = ctx.log.child(`domain '${r.domain}'`)): Promise<void> {
  const whereByAddr = new Map(r.planned.map((p) => [p.member.vf.address as string, p.where]));
  try {
    await applyVfSteps(
      ctx.host,
      r.planned.flatMap((p) => p.steps),
      log,
      { undo: true, label: 'Step 2 configure', wrap: (cause, step) => prefixError(whereByAddr.get(step.vfAddr) ?? `domain '${r.domain}'`, cause) },
    );
  } catch (err) {
    const cause = asVfpoolError(err);
    const rolledBack = !(cause instanceof RollbackError);
    await ctx.store.update((state) => {
      const mine = (a: Allocation) => a.owner.domain === r.domain && a.worker === process.pid && whereByAddr.has(a.vfAddr);
      if (rolledBack) state.allocations = state.allocations.filter((a) => !mine(a));
      else for (const a of state.allocations.filter(mine)) Object.assign(a, { phase: 'releasing', worker: null, lastError: cause.message });
    });
    log.warn(rolledBack ? 'prepare failed; every change was undone and the VFs are free again' : 'prepare failed and so did part of the undo; the VFs stay recorded for `vfpool reconcile`');
    throw cause;
  }
  crashPoint('prepare:configured');
}

export async function commitVfs(ctx: Context, r: Reservation, log: Logger = ctx.log.child(`domain '${r.domain}'`)): Promise<Allocation[]> {
  const { planned, domain } = r;
  // The final netdev: a driver reload may have renamed it.
  const netdevs = new Map<string, NetdevName | null>(planned.map((p) => [p.member.vf.address, p.member.vf.netdev]));
  try {
    for (const pf of new Set(planned.map((p) => p.member.pf))) {
      for (const vf of await ctx.host.listVfs(pf)) netdevs.set(vf.address, vf.netdev);
    }
  } catch (err) {
    log.warn(`Step 3: could not read the VFs' netdevs back (${asVfpoolError(err).message}); keeping the names from before`);
  }
  // A state write failing now (a full or read-only file system) must not leave the VFs
  // configured for a guest that will not start (or a migration that will not arrive).
  const recorded = ctx.store.update((state) => {
    const out: Allocation[] = [];
    for (const p of planned) {
      const a = state.allocations.find((x) => x.owner.domain === domain && x.vfAddr === p.record.vfAddr && x.worker === process.pid);
      if (!a) continue;
      Object.assign(a, { phase: 'ready', worker: null, netdev: netdevs.get(a.vfAddr) ?? null });
      out.push(structuredClone(a));
      const nd = p.rr.request.netdev;
      if (nd && !state.bindings.some((b) => b.domain === domain && b.netdev === nd)) {
        state.bindings.push({ domain, netdev: nd, vfAddr: p.record.vfAddr, since: new Date().toISOString() });
      }
    }
    return out;
  });
  return recorded.catch((err: unknown) => restoreUnrecorded(ctx, domain, planned.map((p) => p.record), asVfpoolError(err), log));
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
export type PrepareOptions = GuestOptions & {
  dryRun?: boolean;
  pid?: number | null;
  deliveryFacts?: DeliveryHostFacts;
  /** How the VFs reach QEMU, when the caller chooses (`vfpool prepare --delivery`); else chooseDelivery's default. */
  delivery?: DomainPlanV1['delivery'];
};

export async function prepareGuest(ctx: Context, spec: DomainSpec, opts: PrepareOptions): Promise<PrepareResult> {
  try {
    return await prepareGuestSteps(ctx, spec, opts);
  } catch (err) {
    // Every failure is one line that starts with the domain (libvirt shows it as the start's error).
    const e = asVfpoolError(err);
    if (!opts.dryRun) journal.prepareFailed(ctx, spec.name, e, onePoolOf(ctx, spec));
    return Promise.reject(e.message.startsWith(`domain '${spec.name}'`) ? e : prefixError(`domain '${spec.name}'`, e));
  }
}

async function prepareGuestSteps(ctx: Context, spec: DomainSpec, opts: PrepareOptions): Promise<PrepareResult> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const before = ctx.store.read();
  const requests = requestsOf(ctx, spec, before);
  // Before Step 0 frees anything (the pools again under the lock, when the VFs are picked).
  checkDomainForQemu(spec, requests);
  checkPoolsActive(requests, before);
  const existing = allocationsOf(before, spec.name);
  const result: PrepareResult = { domain: spec.name, vfs: [], plan: [], releasedStale: [] };

  // Step 0: an earlier run's allocations.
  if (existing.length) {
    const live = existing.find((a) => a.owner.pid !== null && isSameProcessAlive(a.owner.pid, a.owner.pidStart));
    if (live) {
      throw new ConflictError(`domain '${spec.name}' already holds VF ${live.vfAddr} and its QEMU (pid ${live.owner.pid}) still runs`, 'stop it first; `vfpool status` shows what it holds');
    }
    // Another vfpool process preparing this domain right now: its records are not stale, and
    // freeing them would tell that caller of VFs it no longer holds.
    const working = existing.find((a) => a.worker && a.worker !== process.pid && isSameProcessAlive(a.worker, a.workerStart));
    if (working) {
      throw new ConflictError(`domain '${spec.name}' is being prepared or released by vfpool (pid ${working.worker}) right now`, 'wait for it to finish; `vfpool status` shows what the domain holds');
    }
    // Only records judged gone are stale: a ready record younger than the grace period may be
    // another caller's prepare that libvirt has not started yet, and freeing it would tell that
    // caller of a VF it no longer holds.
    const env = ownerEnv(ctx.settings);
    const held = existing.find((a) => opts.via !== 'cli' && judgeAllocation(a, env).keep);
    if (held) {
      throw new ConflictError(
        `domain '${spec.name}' already holds VF ${held.vfAddr} (${judgeAllocation(held, env).reason})`,
        `release it first (\`vfpool release ${spec.name}\`) if the domain does not run`,
      );
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
  if (requests.length === 0) {
    // Only an emulated SR-IOV NIC (or nothing): no VF, but the wrapper still has work.
    const plan = opts.dryRun ? null : buildDomainPlan(ctx, spec, [], [], opts.via, opts.delivery);
    if (plan) log.info(`wrote the QEMU plan ${await writeGuestPlan(ctx, plan)} (${plan.sriovNics.length} emulated SR-IOV NIC(s))`);
    return result;
  }

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

  // Other domains' records whose owner is gone (libvirt skipped their release: a daemon crash,
  // a failed start, a domain undefined while it ran) are restored and freed before picking,
  // instead of pinning their VFs until someone runs `vfpool reconcile`.
  await freeGoneOwners(ctx, spec.name, log);
  // Step 1: pick and record, under the lock, before the first change to any VF.
  const reservation = await reserveVfs(ctx, spec, requests, opts, pid);
  journal.allocated(ctx, reservation.planned.map((p) => p.record));
  for (const p of reservation.planned) log.info(`Step 1: ${p.where}: allocated to request #${p.rr.request.index + 1} (${p.rr.request.field}), original config saved`);
  // What cannot reach QEMU is refused now, before the first change to a VF.
  try {
    const plan = buildDomainPlan(ctx, spec, reservation.planned.map((p) => p.record), requests, opts.via, opts.delivery);
    const groups = reservation.planned.map((p) => p.record.iommuGroup).filter((g): g is string => g !== null);
    // The simulated host's VFs never reach a real QEMU through vfio: the checks are the real host's.
    if (plan && ctx.host.kind === 'linux') checkDeliveryPossible(plan, spec, groups, opts.via, opts.deliveryFacts ?? defaultDeliveryHostFacts(ctx.settings.procRoot, ctx.settings.libvirtConfDir));
  } catch (err) {
    await ctx.store.update((state) => {
      state.allocations = state.allocations.filter((a) => !(a.owner.domain === spec.name && a.worker === process.pid && a.phase === 'preparing'));
    });
    throw err;
  }
  // Step 2: configure, without the lock; undo everything on failure.
  await configureVfs(ctx, reservation, log);
  // Step 3: ready.
  const ready = await commitVfs(ctx, reservation, log);
  journal.configured(ctx, ready);
  log.info(`Step 3: prepared ${ready.length} VF(s): ${ready.map((a) => `${a.vfAddr} mac ${a.mac}`).join(', ')}`);
  // Step 4: the QEMU plan. A failure here undoes the prepare like any step before it.
  await writePlanOrUndo(ctx, spec, ready, requests, opts);
  result.vfs = ready.map(describeAllocation);
  return result;
}

async function writePlanOrUndo(ctx: Context, spec: DomainSpec, ready: Allocation[], requests: Request[], opts: PrepareOptions): Promise<void> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  try {
    const plan = buildDomainPlan(ctx, spec, ready, requests, opts.via, opts.delivery);
    if (plan) log.info(`Step 4: wrote the QEMU plan ${await writeGuestPlan(ctx, plan)} (delivery ${plan.delivery}, ${plan.vfs.length} VF(s))`);
  } catch (err) {
    const cause = asVfpoolError(err);
    log.warn(`Step 4 failed: ${cause.message}; undoing the prepare`);
    try {
      await releaseGuest(ctx, spec.name, { reason: 'prepare failed writing the QEMU plan' });
    } catch (undoErr) {
      // The state file may be on the same full or read-only file system as the plan.
      log.warn(`the release undoing the prepare failed: ${asVfpoolError(undoErr).message}`);
      return restoreUnrecorded(ctx, spec.name, ready, cause, log);
    }
    throw cause;
  }
}

/**
 * Puts a failed prepare's VFs back on the host when the state could not be written (a full or
 * read-only file system): what was changed is known from the records in hand. Their copies in
 * the state file stay as they are (a later release or `vfpool reconcile` drops them, finding
 * nothing left to restore), and nothing is handed out twice meanwhile. Throws `cause`, or a
 * RollbackError naming the restores that failed too.
 */
async function restoreUnrecorded(ctx: Context, domain: string, records: Allocation[], cause: VfpoolError, log: Logger): Promise<never> {
  log.warn(`${cause.message}; restoring the VFs on the host without recording it`);
  const r = await restoreVfs(ctx, domain, records, log);
  if (r.failures.length) throw new RollbackError(cause, r.failures.map((f) => `restore: ${f.error.message}`));
  try {
    await ctx.store.update((state) => {
      state.allocations = state.allocations.filter((a) => !(a.owner.domain === domain && r.done.has(a.vfAddr) && (a.worker === process.pid || a.worker === null) && records.some((x) => x.vfAddr === a.vfAddr && x.createdAt === a.createdAt)));
    });
  } catch (err) {
    log.warn(`the records of the restored VFs stay until \`vfpool reconcile\` or a release: ${asVfpoolError(err).message}`);
  }
  throw cause;
}

/**
 * The pool a domain asks its VFs from, when it asks from one (what `vfpool history --pool P`
 * finds a refusal by, an exhausted pool's say): vfpool:hostdev pools and the vfpool pools its
 * `<interface type='network'>`s name; null for none or several.
 */
function onePoolOf(ctx: Context, spec: DomainSpec): string | null {
  let names: string[];
  try {
    names = ctx.registry.names();
  } catch {
    return null; // the refusal is what is being recorded, not a second error about the config dir
  }
  const pools = new Set([...spec.hostdevs.flatMap((h) => (h.pool ? [h.pool] : [])), ...spec.networkInterfaces.map((n) => n.network).filter((n) => names.includes(n))]);
  return pools.size === 1 ? [...pools][0]! : null;
}
