import type { Settings } from '../config/settings.js';
import { asVfpoolError } from '../errors.js';
import type { Action } from './plan.js';
import type { Allocation } from '../state/schema.js';
import { Journal, type JournalInput, type JournalLog, type VfValues } from '../state/journal.js';

/**
 * The journal's vocabulary for the pool code: one call per event, each a single line at its
 * call site, so the places that record history stay easy to find (grep `journal.`).
 * What goes in before/after is what an administrator asks about later: MAC, VLAN, driver, owner.
 */
interface JournalCtx {
  settings: Pick<Settings, 'journalDir'>;
  log: JournalLog;
  /** Whose boot the entries record (absent: none recorded). */
  host?: { bootId(): string | null };
}

const journals = new WeakMap<object, Journal>();
function journalOf(ctx: JournalCtx): Journal {
  let j = journals.get(ctx);
  if (!j) journals.set(ctx, (j = new Journal(ctx.settings.journalDir, ctx.log, undefined, () => ctx.host?.bootId() ?? null)));
  return j;
}

function saved(a: Allocation): VfValues {
  return { mac: a.saved?.link.mac ?? null, vlan: a.saved?.link.vlan ?? null, driver: a.saved?.driver ?? null };
}
function applied(a: Allocation): VfValues {
  return { mac: a.applied?.link.mac ?? a.mac, vlan: a.applied?.link.vlan ?? a.vlan, driver: a.applied?.driver ?? a.saved?.driver ?? null };
}
const where = (a: Allocation) => ({ domain: a.owner.domain, pool: a.pool, vf: a.vfAddr, pf: a.pf });

export const journal = {
  /** Step 1 of prepare: the VF is recorded for the domain (nothing changed on it yet). */
  allocated(ctx: JournalCtx, allocations: Allocation[]): void {
    journalOf(ctx).record(...allocations.map((a): JournalInput => ({ op: 'allocate', ...where(a), before: { owner: null }, after: { owner: a.owner.domain } })));
  },
  /** Step 3 of prepare: MAC, VLAN and driver as the guest gets them, and what they were. */
  configured(ctx: JournalCtx, allocations: Allocation[]): void {
    journalOf(ctx).record(...allocations.map((a): JournalInput => ({ op: 'configure', ...where(a), before: saved(a), after: applied(a) })));
  },
  /** A prepare refused (exit 2/3) or failed and rolled back (exit 1). */
  prepareFailed(ctx: JournalCtx, domain: string, err: unknown, pool: string | null = null): void {
    const e = asVfpoolError(err);
    journalOf(ctx).record({ op: 'prepare-failed', domain, pool, error: e.message, exitCode: e.exitCode });
  },
  /** A VF put back as it was before the guest (what the guest had -> what it has again). */
  restored(ctx: JournalCtx, a: Allocation): void {
    journalOf(ctx).record({ op: 'restore', ...where(a), before: applied(a), after: saved(a) });
  },
  /** Records deleted: the VFs are free again (or vanished with the PF). */
  released(ctx: JournalCtx, allocations: Allocation[], vanished: Set<string> = new Set()): void {
    journalOf(ctx).record(
      ...allocations.map((a): JournalInput => ({ op: 'release', ...where(a), before: { owner: a.owner.domain }, after: { owner: null }, ...(vanished.has(a.vfAddr) ? { error: 'the VF was gone from the host', exitCode: 0 } : {}) })),
    );
  },
  /** A release refused before anything was restored (the guest still runs, another vfpool works on it). */
  releaseRefused(ctx: JournalCtx, domain: string, err: unknown): void {
    const e = asVfpoolError(err);
    journalOf(ctx).record({ op: 'release-failed', domain, error: e.message, exitCode: e.exitCode });
  },
  releaseFailed(ctx: JournalCtx, a: Allocation, err: unknown): void {
    const e = asVfpoolError(err);
    journalOf(ctx).record({ op: 'release-failed', ...where(a), error: e.message, exitCode: e.exitCode });
  },
  /** A pool started or stopped: per PF whose count changed, the VF count before and after. */
  pool(ctx: JournalCtx, op: 'pool-start' | 'pool-stop', pool: string, actions: Action[]): void {
    const counts = new Map<string, { pf: string; before: number; after: number }>();
    for (const a of actions) {
      if (a.kind !== 'write-numvfs') continue;
      const c = counts.get(a.pf);
      if (c) c.after = a.to;
      else counts.set(a.pf, { pf: a.pf, before: a.from, after: a.to });
    }
    if (counts.size === 0) journalOf(ctx).record({ op, pool });
    else journalOf(ctx).record(...[...counts.values()].map((c): JournalInput => ({ op, pool, pf: c.pf, before: { numVfs: c.before }, after: { numVfs: c.after } })));
  },
  poolRefused(ctx: JournalCtx, pool: string, what: 'start' | 'stop', err: unknown): void {
    const e = asVfpoolError(err);
    journalOf(ctx).record({ op: 'pool-refused', pool, error: `${what}: ${e.message}`, exitCode: e.exitCode });
  },
};
