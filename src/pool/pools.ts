import { journal } from './journal-entries.js';
import { ConflictError, HostError } from '../errors.js';
import type { PoolSpec } from '../config/pool-xml.js';
import type { NetdevName } from '../types.js';
import { pfError } from './allocation.js';
import { planPoolStart, planPoolStop, type PfFacts, type StopPlan } from './activation.js';
import type { Context } from './context.js';
import { findVfUses } from './in-use.js';
import { applyPlan, describeAction, type Action } from './plan.js';
import type { VfpoolState } from '../state/schema.js';

/**
 * Reads what the planners need about each PF; a missing PF is an error naming the pool, except
 * with `gone` (stopping), where a PF that no longer exists has no VFs left to remove: it is
 * listed there instead, so a pool whose NIC was unplugged can still be stopped.
 */
async function gatherFacts(ctx: Context, pool: PoolSpec, pfs: NetdevName[], state: VfpoolState, gone?: NetdevName[]): Promise<Map<NetdevName, PfFacts>> {
  const facts = new Map<NetdevName, PfFacts>();
  for (const pf of pfs) {
    let info;
    try {
      info = await ctx.host.getPf(pf);
    } catch (err) {
      if (err instanceof HostError && err.code === 'ENOENT' && gone) {
        gone.push(pf);
        continue;
      }
      throw pfError(pool, pf, err);
    }
    const vfs = await ctx.host.listVfs(pf);
    facts.set(pf, { info, vfs, uses: await findVfUses(ctx.host, state, vfs) });
  }
  return facts;
}

export interface StartResult {
  pool: PoolSpec;
  actions: Action[];
  applied: boolean;
}

/**
 * Starts a pool: activates its VFs (seed 000) and records it as running. Already running is an
 * error for a person (`net-start`, like virsh) but not for libvirt's hook, which may call start
 * for a pool that vfpool itself started before (then the plan is usually empty: N -> N).
 */
export async function startPool(
  ctx: Context,
  pool: PoolSpec,
  xml: string,
  opts: { dryRun?: boolean; allowActive?: boolean } = {},
): Promise<StartResult> {
  const pfs = pool.pfs.map((p) => p.dev);
  // One path for --dry-run and the real run, so the plan shown is checked like the real one.
  const run = async (state: VfpoolState, apply: boolean): Promise<StartResult> => {
    if (state.pools[pool.name] && !opts.allowActive) {
      throw new ConflictError(`pool '${pool.name}' is already active`, `stop it with \`vfpool net-destroy ${pool.name}\` first`);
    }
    const actions = planPoolStart(pool, await gatherFacts(ctx, pool, pfs, state));
    if (!apply) return { pool, actions, applied: false };
    const log = ctx.log.child(`pool '${pool.name}'`);
    log.info(`starting: ${actions.length} step(s)`);
    await applyPlan(ctx.host, actions, log, ctx.apply);
    const previous = state.pools[pool.name]?.activated ?? [];
    const activated = pool.pfs.filter((p) => p.numVfs !== null).map((p) => ({ pf: p.dev, numVfs: p.numVfs! }));
    state.pools[pool.name] = {
      xml,
      origin: pool.origin,
      startedAt: new Date().toISOString(),
      activated: [...previous.filter((a) => !activated.some((b) => b.pf === a.pf)), ...activated],
    };
    log.info('started');
    return { pool, actions, applied: true };
  };
  if (opts.dryRun) return run(ctx.store.read(), false);
  return ctx.store.update((state) => run(state, true)).then((r) => (journal.pool(ctx, 'pool-start', pool.name, r.actions), r), (e) => Promise.reject((journal.poolRefused(ctx, pool.name, 'start', e), e)));
}

export interface StopResult extends StopPlan {
  pool: string;
  wasActive: boolean;
  applied: boolean;
  /** Activated PFs that no longer exist (nothing to remove on them). */
  gone: NetdevName[];
}

/**
 * Stops a pool: removes the VFs vfpool created for it unless one is in use. `refuse` makes a VF
 * in use an error (a person's `net-destroy`); libvirt's `stopped end` cannot fail, so there the
 * PF is kept, the pool is marked stopped, and the caller reports what was kept.
 */
export async function stopPool(ctx: Context, name: string, opts: { refuse: boolean; dryRun?: boolean }): Promise<StopResult> {
  const run = async (state: VfpoolState, apply: boolean): Promise<StopResult> => {
    const active = state.pools[name];
    if (!active) {
      if (opts.refuse) throw new ConflictError(`pool '${name}' is not active`, `start it with \`vfpool net-start ${name}\``);
      return { pool: name, wasActive: false, applied: false, actions: [], kept: [], gone: [] };
    }
    const pool = ctx.registry.get(name, state);
    const gone: NetdevName[] = [];
    const facts = await gatherFacts(ctx, pool, active.activated.map((a) => a.pf), state, gone);
    const plan = planPoolStop(pool, [...facts.keys()], facts, { refuse: opts.refuse });
    if (!apply) return { pool: name, wasActive: true, applied: false, gone, ...plan };
    const log = ctx.log.child(`pool '${name}'`);
    log.info(`stopping: ${plan.actions.length} step(s)`);
    await applyPlan(ctx.host, plan.actions, log, ctx.apply);
    for (const k of plan.kept) log.warn(k.reason);
    for (const pf of gone) log.warn(`PF ${pf} no longer exists: nothing to remove on it`);
    delete state.pools[name];
    log.info('stopped');
    return { pool: name, wasActive: true, applied: true, gone, ...plan };
  };
  if (opts.dryRun) return run(ctx.store.read(), false);
  return ctx.store.update((state) => run(state, true)).then((r) => (r.wasActive && journal.pool(ctx, 'pool-stop', name, r.actions), r), (e) => Promise.reject((journal.poolRefused(ctx, name, 'stop', e), e)));
}

export function formatPlan(actions: Action[]): string[] {
  return actions.length ? actions.map((a, i) => `${i + 1}. ${describeAction(a)}`) : ['nothing to do'];
}
