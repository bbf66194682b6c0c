import { ConflictError, HostError } from '../errors.js';
import type { PoolSpec } from '../config/pool-xml.js';
import type { NetdevName } from '../types.js';
import { planPoolStart, planPoolStop, type PfFacts, type StopPlan } from './activation.js';
import type { Context } from './context.js';
import { findVfUses } from './in-use.js';
import { applyPlan, describeAction, type Action } from './plan.js';
import type { VfpoolState } from './state-store.js';

/** Reads what the planners need about each PF; a missing PF is an error naming the pool. */
async function gatherFacts(ctx: Context, pool: PoolSpec, pfs: NetdevName[], state: VfpoolState): Promise<Map<NetdevName, PfFacts>> {
  const facts = new Map<NetdevName, PfFacts>();
  for (const pf of pfs) {
    let info;
    try {
      info = await ctx.host.getPf(pf);
    } catch (err) {
      if (err instanceof HostError) {
        throw new HostError(`pool '${pool.name}': PF ${pf}: ${err.message}`, { code: err.code, hint: 'check the <pf dev> name against `ip link`', cause: err });
      }
      throw err;
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
  if (opts.dryRun) {
    const state = ctx.store.read();
    const actions = planPoolStart(pool, await gatherFacts(ctx, pool, pfs, state));
    return { pool, actions, applied: false };
  }
  return ctx.store.update(async (state) => {
    if (state.pools[pool.name] && !opts.allowActive) {
      throw new ConflictError(`pool '${pool.name}' is already active`, `stop it with \`vfpool net-destroy ${pool.name}\` first`);
    }
    const actions = planPoolStart(pool, await gatherFacts(ctx, pool, pfs, state));
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
  });
}

export interface StopResult extends StopPlan {
  pool: string;
  wasActive: boolean;
  applied: boolean;
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
      return { pool: name, wasActive: false, applied: false, actions: [], kept: [] };
    }
    const pool = ctx.registry.get(name, state);
    const activated = active.activated.map((a) => a.pf);
    const plan = planPoolStop(pool, activated, await gatherFacts(ctx, pool, activated, state), { refuse: opts.refuse });
    if (!apply) return { pool: name, wasActive: true, applied: false, ...plan };
    const log = ctx.log.child(`pool '${name}'`);
    log.info(`stopping: ${plan.actions.length} step(s)`);
    await applyPlan(ctx.host, plan.actions, log, ctx.apply);
    for (const k of plan.kept) log.warn(k.reason);
    delete state.pools[name];
    log.info('stopped');
    return { pool: name, wasActive: true, applied: true, ...plan };
  };
  if (opts.dryRun) return run(ctx.store.read(), false);
  return ctx.store.update((state) => run(state, true));
}

export function formatPlan(actions: Action[]): string[] {
  return actions.length ? actions.map((a, i) => `${i + 1}. ${describeAction(a)}`) : ['nothing to do'];
}
