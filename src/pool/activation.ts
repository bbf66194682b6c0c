import { BadInputError, ConflictError } from '../errors.js';
import type { PfInfo, VfInfo } from '../host/host.js';
import { modeUsesVfio, type PoolSpec } from '../config/pool-xml.js';
import type { NetdevName, PciAddress } from '../types.js';
import { describeUses, type VfUse } from './in-use.js';
import type { Action } from './plan.js';

const VFIO = 'vfio-pci';

/** What the planners know about one PF: read from the host before planning. */
export interface PfFacts {
  info: PfInfo;
  vfs: VfInfo[];
  uses: Map<string, VfUse[]>;
}

function inUseVfs(facts: PfFacts): Array<{ vf: VfInfo; uses: VfUse[] }> {
  return facts.vfs.flatMap((vf) => {
    const uses = facts.uses.get(vf.address) ?? [];
    return uses.length ? [{ vf, uses }] : [];
  });
}

function factsOf(facts: Map<NetdevName, PfFacts>, pf: NetdevName): PfFacts {
  const f = facts.get(pf);
  if (!f) throw new Error(`planner called without facts for ${pf}`);
  return f;
}

/**
 * Seed 000's network start, as a plan: for each `<pf dev><vf num='N'>`: refuse N above
 * `sriov_totalvfs`; leave a PF that already has N VFs alone; otherwise refuse while any of its
 * VFs is in use (changing the count would hot-unplug them from guests), and write 0 then N
 * (the kernel answers EBUSY to a change between two non-zero counts). Then, for a managed pool
 * whose guests get VFs through vfio, bind its VFs to vfio-pci: those not in use and not bound
 * already, named here so a dry run shows them (VFs the writes create: all of them).
 * All checks happen here, before the first change.
 */
export function planPoolStart(pool: PoolSpec, facts: Map<NetdevName, PfFacts>): Action[] {
  const actions: Action[] = [];
  for (const { dev, numVfs } of pool.pfs) {
    const f = factsOf(facts, dev);
    if (numVfs !== null && numVfs > f.info.totalVfs) {
      throw new BadInputError(
        `pool '${pool.name}': <vf num='${numVfs}'> on PF ${dev} is more than its sriov_totalvfs ${f.info.totalVfs}`,
        `lower num to at most ${f.info.totalVfs}`,
      );
    }
    if (numVfs !== null && numVfs !== f.info.numVfs) {
      const busy = inUseVfs(f);
      if (busy.length) {
        throw new ConflictError(
          `pool '${pool.name}': cannot change ${dev} from ${f.info.numVfs} to ${numVfs} VFs: ${describeUses(busy[0]!.vf, busy[0]!.uses)}`,
          'stop the guests using its VFs first, or set <vf num> to the current count',
        );
      }
      if (f.info.numVfs !== 0) actions.push({ kind: 'write-numvfs', pf: dev, from: f.info.numVfs, to: 0 });
      actions.push({ kind: 'write-numvfs', pf: dev, from: 0, to: numVfs });
      actions.push({ kind: 'await-vfs', pf: dev, count: numVfs, probed: f.info.autoprobe });
    }
    if (pool.managed && modeUsesVfio(pool.mode)) {
      const created = numVfs !== null && numVfs !== f.info.numVfs;
      const skip = created ? [] : inUseVfs(f).map((u) => u.vf.address as PciAddress);
      const vfs = created ? 'created' : f.vfs.filter((vf) => vf.driver !== VFIO && !skip.includes(vf.address)).map((vf) => vf.address);
      actions.push({ kind: 'bind-vfs', pf: dev, driver: VFIO, vfs, skip });
    }
  }
  return actions;
}

export interface StopPlan {
  actions: Action[];
  /** PFs left alone because a VF is in use, with the sentence saying who uses it. */
  kept: Array<{ pf: NetdevName; reason: string }>;
}

/**
 * Network stop: remove the VFs vfpool created (only PFs listed in `activated`), never while one
 * is in use. With `refuse`, the first VF in use is an error (`vfpool net-destroy`); without it
 * (libvirt's `stopped end`, which cannot fail) that PF is kept and reported.
 */
export function planPoolStop(
  pool: PoolSpec,
  activated: NetdevName[],
  facts: Map<NetdevName, PfFacts>,
  opts: { refuse: boolean },
): StopPlan {
  const plan: StopPlan = { actions: [], kept: [] };
  for (const dev of activated) {
    const f = factsOf(facts, dev);
    if (f.info.numVfs === 0) continue;
    const busy = inUseVfs(f);
    if (busy.length) {
      const reason = `${dev} keeps its ${f.info.numVfs} VFs: ${describeUses(busy[0]!.vf, busy[0]!.uses)}`;
      if (opts.refuse) {
        throw new ConflictError(`pool '${pool.name}': cannot remove VFs: ${reason}`, 'stop the guests using them first');
      }
      plan.kept.push({ pf: dev, reason });
      continue;
    }
    plan.actions.push({ kind: 'write-numvfs', pf: dev, from: f.info.numVfs, to: 0 });
    plan.actions.push({ kind: 'await-vfs', pf: dev, count: 0, probed: false });
  }
  return plan;
}
