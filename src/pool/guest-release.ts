import { ConflictError, HostError, asVfpoolError, prefixError, type VfpoolError } from '../errors.js';
import { journal } from './journal-entries.js';
import { isSameProcessAlive, selfStartTicks } from '../util/process.js';
import type { Logger } from '../util/log.js';
import { crashPoint } from '../util/crash-point.js';
import type { Allocation } from '../state/schema.js';
import type { Context } from './context.js';
import { allocationsOf, describeAllocation, whereOf, type GuestVf, type ReleaseResult } from './guest-model.js';
import { readRecordedVfFacts } from './vf-facts.js';
import { planVfRestore, type VfFacts } from './vf-plan.js';
import { applyVfSteps, describeVfStep } from './vf-steps.js';
import { dropGuestPlan } from './guest-qemu-plan.js';
import { probeQmpSocket } from '../qemu/qmp-probe.js';
import { domainQmpSocketPath } from '../state/domain-plan.js';

/**
 * `release end` (any reason, `failed` included) and `vfpool release`: restore each VF of the
 * domain as it was (admin MAC before the host driver is bound again, then the rest) and free
 * it. Idempotent: a domain with nothing recorded is success, without taking the lock. A record
 * is deleted only after its restore succeeded; a failed one stays (phase `releasing`) for a
 * later release or `vfpool reconcile`, and the error (exit 1) names the domain, VF and cause.
 * `vfAddrs` limits it to some VFs (reconcile); `refuseIfRunning` makes a live QEMU a conflict.
 * `keepReason` (reconcile) judges each record again under the lock, as it is then: a record it
 * gives a reason to keep is left alone (and is in neither list of the result). `preparedBy`
 * limits it to the records that caller prepared (libvirt's hook: see qemu-hook's release).
 */
export async function releaseGuest(
  ctx: Context,
  domain: string,
  opts: {
    reason: string;
    vfAddrs?: Set<string>;
    refuseIfRunning?: boolean;
    forgetNetdevs?: boolean;
    keepReason?: (a: Allocation) => string | null;
    preparedBy?: Allocation['owner']['via'];
  },
): Promise<ReleaseResult> {
  const log = ctx.log.child(`domain '${domain}'`);
  const result: ReleaseResult = { domain, released: [], vanished: [] };
  const ofDomain = (a: Allocation) => a.owner.domain === domain;
  const selected = (a: Allocation) => ofDomain(a) && (!opts.vfAddrs || opts.vfAddrs.has(a.vfAddr)) && (!opts.preparedBy || a.owner.via === opts.preparedBy);
  const peek = ctx.store.read();
  const hasBindings = opts.forgetNetdevs && peek.bindings.some((b) => b.domain === domain);
  if (!peek.allocations.some(selected) && !hasBindings) {
    const others = opts.preparedBy ? peek.allocations.filter(ofDomain) : [];
    // Another's guest of that name (a QEMU run by hand) keeps its plan too: its wrapper and QMP socket use it.
    if (others.length) log.info(`${others.length} VF(s) of domain '${domain}' were prepared by \`vfpool prepare\`, not by libvirt: left for \`vfpool release ${domain}\``);
    else if (!opts.vfAddrs) dropGuestPlan(ctx, domain);
    return result;
  }

  // A QEMU started by hand (`vfpool prepare` without --pid) has no pid on record; one started
  // through vfpool-qemu still accepts on vfpool's QMP socket while it runs, and releasing under
  // it would give its VFs back (and to the next guest) while it still uses them.
  if (opts.refuseIfRunning && peek.allocations.some((a) => selected(a) && a.owner.pid === null)) {
    const socket = domainQmpSocketPath(ctx.settings.stateDir, domain);
    if ((await probeQmpSocket(socket)) === 'live') {
      const e = new ConflictError(`domain '${domain}' still runs: its QEMU answers on vfpool's QMP socket ${socket}`, 'quit that QEMU first (vfpool release is for after QEMU exits), then release');
      journal.releaseRefused(ctx, domain, e);
      throw e;
    }
  }

  // Step 1: claim the records.
  const claimed = await ctx.store.update((state) => {
    const list = state.allocations.filter((a) => selected(a) && (opts.keepReason?.(a) ?? null) === null);
    for (const a of list) {
      if (a.worker && a.worker !== process.pid && isSameProcessAlive(a.worker, a.workerStart)) {
        throw new ConflictError(`domain '${domain}': VF ${a.vfAddr} is being ${a.phase === 'preparing' ? 'prepared' : 'released'} by vfpool (pid ${a.worker})`, 'wait for it to finish, then try again');
      }
      if (opts.refuseIfRunning && a.owner.pid !== null && isSameProcessAlive(a.owner.pid, a.owner.pidStart)) {
        throw new ConflictError(`domain '${domain}' still runs (QEMU pid ${a.owner.pid}) and uses VF ${a.vfAddr}`, 'stop the guest first');
      }
    }
    for (const a of list) Object.assign(a, { phase: 'releasing', worker: process.pid, workerStart: selfStartTicks() });
    if (opts.forgetNetdevs) state.bindings = state.bindings.filter((b) => b.domain !== domain);
    return structuredClone(list);
  }).catch((e) => Promise.reject((journal.releaseRefused(ctx, domain, e), e)));
  if (claimed.length) log.info(`releasing ${claimed.length} VF(s) (${opts.reason})`);
  crashPoint('release:claimed');

  // Step 2: restore each VF.
  const restored = await restoreVfs(ctx, domain, claimed, log);
  result.released = restored.released;
  result.vanished = restored.vanished;
  const { done, failures } = restored;
  crashPoint('release:restored');

  // Step 3: delete the restored records; keep the others with their error.
  await freeVfs(ctx, selected, restored);
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
  // The wrapper must not put VFs the domain no longer holds on a later command line.
  if (!ctx.store.read().allocations.some((a) => a.owner.domain === domain)) dropGuestPlan(ctx, domain);
  log.info(`released ${done.size} VF(s)`);
  return result;
}

/** `vfpool release --dry-run`: what a release would do, one line per step; nothing changes. */
export async function planReleaseGuest(ctx: Context, domain: string): Promise<{ domain: string; vfs: GuestVf[]; plan: string[] }> {
  const mine = allocationsOf(ctx.store.read(), domain);
  const plan: string[] = [];
  for (const a of mine) {
    const where = whereOf(domain, a.pool, a);
    try {
      const steps = planVfRestore(a, await readRecordedVfFacts(ctx.host, a.pf, a.vfAddr));
      plan.push(`${where}: restore (${steps.length} step(s)) and free`);
      for (const s of steps) plan.push(describeVfStep(s));
    } catch (err) {
      plan.push(`${where}: cannot plan the restore: ${asVfpoolError(err).message}`);
    }
  }
  return { domain, vfs: mine.map(describeAllocation), plan };
}

/** The outcome of restoring claimed VFs: which are done (restored, or gone), which failed and why. */
export interface Restored {
  done: Set<string>;
  released: GuestVf[];
  vanished: string[];
  failures: Array<{ a: Allocation; error: VfpoolError }>;
}

/**
 * Release's host half: puts each claimed VF back as it was (admin MAC before the host driver is
 * bound again, then the rest). A VF that vanished has nothing left to restore and counts as done.
 * Touches no state: `freeVfs` records the outcome.
 */
export async function restoreVfs(ctx: Context, domain: string, claimed: Allocation[], log: Logger): Promise<Restored> {
  const result: Restored = { done: new Set(), released: [], vanished: [], failures: [] };
  const { done, failures } = result;
  for (const a of claimed) {
    const where = whereOf(domain, a.pool, a);
    let facts: VfFacts;
    try {
      facts = await readRecordedVfFacts(ctx.host, a.pf, a.vfAddr);
      if (facts.pf.name !== a.pf) log.warn(`${where}: PF ${a.pf} is called ${facts.pf.name} now; restoring the VF through that name`);
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

  return result;
}

/** Release's state half: deletes the records of the VFs restored, keeps the failed ones with their error. */
export async function freeVfs(ctx: Context, selected: (a: Allocation) => boolean, r: Pick<Restored, 'done' | 'failures'>): Promise<void> {
  const { done, failures } = r;
  await ctx.store.update((state) => {
    state.allocations = state.allocations.filter((a) => !(selected(a) && done.has(a.vfAddr) && a.worker === process.pid));
    for (const f of failures) {
      const a = state.allocations.find((x) => selected(x) && x.vfAddr === f.a.vfAddr);
      if (a) Object.assign(a, { worker: null, lastError: f.error.message });
    }
  });
}
