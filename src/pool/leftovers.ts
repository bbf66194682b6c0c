import { HostError } from '../errors.js';
import type { NetdevName } from '../types.js';
import type { VfpoolState } from '../state/schema.js';
import type { Context } from './context.js';
import { describeUses, findVfUses } from './in-use.js';
import type { OwnerEnv } from './owners.js';
import { applyPlan } from './plan.js';
import { activeDrawers } from './pool-use.js';
import { pfNameNow } from './pf-identity.js';

/** What `vfpool reconcile` did (or would do) about VFs a stopped pool left behind. */
export interface LeftoverOutcome {
  pool: string;
  pf: NetdevName;
  what: string;
  /** Still left: its VFs stay, and so does the record. */
  kept: boolean;
}

/**
 * For `vfpool reconcile`: removes the VFs a stopped pool left behind once none of them is in
 * use, and forgets a record with nothing left to remove (its PF gone, or emptied since by
 * another pool's stop). A PF an active pool draws from is that pool's now: left as it is, the
 * record kept until that pool is gone too.
 *
 * Judged and removed under the state lock, unlike a pool's stop: writing 0 to sriov_numvfs
 * returns once the kernel has removed the VFs (nothing to wait for), and a prepare must not pick
 * one of them between the verdict and the write.
 */
export async function clearLeftovers(ctx: Context, env: OwnerEnv, opts: { dryRun: boolean }): Promise<LeftoverOutcome[]> {
  if (ctx.store.read().leftovers.length === 0) return [];
  const judge = async (state: VfpoolState): Promise<LeftoverOutcome[]> => {
    const out: LeftoverOutcome[] = [];
    const drawers = await activeDrawers(ctx, state);
    for (const l of state.leftovers) {
      const said = (what: string, kept: boolean) => out.push({ pool: l.pool, pf: l.pf, what, kept });
      // Recorded under the PF's name then: a PF renamed since is found by its PCI address.
      const pf = await pfNameNow(ctx.host, l.pf, l.pfAddr);
      const info = pf === null ? null : await ctx.host.getPf(pf).catch((err) => (err instanceof HostError && err.code === 'ENOENT' ? null : Promise.reject(err)));
      if (pf === null || info === null) {
        said('its PF is gone: nothing left to remove', false);
        continue;
      }
      if (info.numVfs === 0) {
        said(`${pf} has no VFs left: nothing to remove`, false);
        continue;
      }
      const other = drawers.get(pf)?.[0];
      if (other !== undefined) {
        said(`${pf} keeps its ${info.numVfs} VFs: active pool '${other}' draws from it`, true);
        continue;
      }
      const vfs = await ctx.host.listVfs(pf);
      const uses = await findVfUses(ctx.host, state, vfs, undefined, env);
      const busy = vfs.find((vf) => uses.get(vf.address)?.length);
      if (busy) {
        said(`${pf} keeps its ${info.numVfs} VFs: ${describeUses(busy, uses.get(busy.address)!)}`, true);
        continue;
      }
      if (!opts.dryRun) {
        await applyPlan(ctx.host, [
          { kind: 'write-numvfs', pf, from: info.numVfs, to: 0 },
          { kind: 'await-vfs', pf, count: 0, probed: false },
        ], ctx.log.child(`pool '${l.pool}'`), ctx.apply);
      }
      said(`${opts.dryRun ? 'would remove' : 'removed'} the ${info.numVfs} VFs of ${pf} it left when libvirt stopped it: none is in use now`, false);
    }
    return out;
  };
  if (opts.dryRun) return judge(ctx.store.read());
  return ctx.store.update(async (state) => {
    const out = await judge(state);
    state.leftovers = state.leftovers.filter((l) => out.some((o) => o.pf === l.pf && o.kept));
    return out;
  });
}
