import { BadInputError, ConflictError } from '../errors.js';
import type { PfInfo, VfInfo } from '../host/host.js';
import { modeUsesVfio, type PoolSpec } from '../config/pool-xml.js';
import type { NetdevName, PciAddress } from '../types.js';
import type { BoundVf } from '../state/schema.js';
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
 * Which VFs of which PFs a pool draws from: every VF of a `<pf>` and of an `<interface>` that is
 * a PF, the listed ones of the others (resolved by the caller against the host).
 */
export type PoolUse = Map<NetdevName, 'all' | PciAddress[]>;

/** For each PF, the other active pools that draw from it (their VFs would go with a count change). */
export type Sharers = Map<NetdevName, string[]>;

/**
 * Seed 000's network start, as a plan: for each `<pf dev><vf num='N'>`: refuse N above
 * `sriov_totalvfs`; leave a PF that already has N VFs alone; otherwise refuse while another
 * active pool draws from the PF or any of its VFs is in use (changing the count replaces every
 * VF: it would hot-unplug them from guests, and take the other pool's from under it), and write
 * 0 then N (the kernel answers EBUSY to a change between two non-zero counts). Then, for a
 * managed pool whose guests get VFs through vfio, bind its VFs to vfio-pci: every member, not
 * only those of `<pf>`s; those not in use and not bound already, named here so a dry run shows
 * them (VFs the writes create: all of them). All checks happen here, before the first change.
 */
export function planPoolStart(pool: PoolSpec, facts: Map<NetdevName, PfFacts>, use: PoolUse, sharers: Sharers): Action[] {
  const actions: Action[] = [];
  const changing = new Set<NetdevName>();
  for (const { dev, numVfs } of pool.pfs) {
    const f = factsOf(facts, dev);
    if (numVfs !== null && numVfs > f.info.totalVfs) {
      throw new BadInputError(
        `pool '${pool.name}': <vf num='${numVfs}'> on PF ${dev} is more than its sriov_totalvfs ${f.info.totalVfs}`,
        `lower num to at most ${f.info.totalVfs}`,
      );
    }
    if (numVfs === null || numVfs === f.info.numVfs) continue;
    const other = sharers.get(dev)?.[0];
    if (other !== undefined) {
      throw new ConflictError(
        `pool '${pool.name}': cannot change ${dev} from ${f.info.numVfs} to ${numVfs} VFs: active pool '${other}' draws from it`,
        `stop pool '${other}' first, or give both pools the same <vf num>`,
      );
    }
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
    changing.add(dev);
  }
  if (!pool.managed || !modeUsesVfio(pool.mode)) return actions;
  for (const [dev, which] of use) {
    const f = factsOf(facts, dev);
    const listed = (addr: string) => which === 'all' || which.includes(addr as PciAddress);
    if (changing.has(dev)) {
      actions.push({ kind: 'bind-vfs', pf: dev, driver: VFIO, vfs: which === 'all' ? 'created' : which, skip: [] });
      continue;
    }
    const members = f.vfs.filter((vf) => listed(vf.address));
    if (members.length === 0) continue;
    const skip = inUseVfs(f).filter((u) => listed(u.vf.address)).map((u) => u.vf.address as PciAddress);
    const vfs = members.filter((vf) => vf.driver !== VFIO && !skip.includes(vf.address)).map((vf) => vf.address);
    actions.push({ kind: 'bind-vfs', pf: dev, driver: VFIO, vfs, skip });
  }
  return actions;
}

/**
 * `<pf>` members without `<vf num>` whose PF has no VFs: vfpool never changes their count, so
 * the start succeeds and the pool hands out nothing from them (libvirt refuses such a network
 * outright, "No usable Vf's present"); said at the start, not first when a guest is refused.
 */
export function emptyPfs(pool: PoolSpec, facts: Map<NetdevName, PfFacts>): string[] {
  const members = [...pool.pfs.filter((p) => p.numVfs === null).map((p) => ({ dev: p.dev, el: 'pf' })), ...pool.interfaces.map((dev) => ({ dev, el: 'interface' }))];
  return members.flatMap(({ dev, el }) => {
    const info = facts.get(dev)?.info; // only PFs have facts: an <interface> naming a VF has none
    if (!info || info.numVfs !== 0) return [];
    const give = el === 'pf' ? `give it <vf num='N'/>` : `write <pf dev='${dev}'><vf num='N'/></pf> in its place`;
    return [`<${el} dev='${dev}'> is a PF with no VFs, and vfpool creates VFs only for a <pf> with <vf num>: the pool has no VF from it; ` +
      `${give} (N at most ${info.totalVfs}) and start the pool again, or create them: echo N > /sys/class/net/${dev}/device/sriov_numvfs`];
  });
}

/** The VFs a start's plan binds that existed before it, with what they had: recorded so the stop gives them back. */
export function boundByPlan(actions: Action[], facts: Map<NetdevName, PfFacts>): BoundVf[] {
  const out: BoundVf[] = [];
  for (const a of actions) {
    if (a.kind !== 'bind-vfs' || a.vfs === 'created') continue;
    const created = actions.some((w) => w.kind === 'write-numvfs' && w.pf === a.pf);
    if (created) continue;
    for (const addr of a.vfs) {
      const vf = facts.get(a.pf)?.vfs.find((v) => v.address === addr);
      if (vf) out.push({ pf: a.pf, vf: vf.address, driver: vf.driver, netdev: vf.netdev });
    }
  }
  return out;
}

export interface StopPlan {
  actions: Action[];
  /** PFs left alone because a VF is in use, with the sentence saying who uses it. */
  kept: Array<{ pf: NetdevName; reason: string }>;
  /** PFs whose VFs stay because another active pool draws from them (not an error: theirs to remove). */
  shared: Array<{ pf: NetdevName; reason: string }>;
}

/**
 * Network stop: remove the VFs vfpool created (only PFs listed in `activated`), never while one
 * is in use, nor while another active pool draws from the PF. With `refuse`, the first VF in use
 * is an error (`vfpool net-destroy`); without it (libvirt's `stopped end`, which cannot fail)
 * that PF is kept and reported. The VFs the start bound to vfio-pci (`bound`) and that stay get
 * their driver back, unless in use or another active pool binds them to vfio-pci too (`vfioKept`:
 * a managed pool of a vfio mode that draws from them); a pool that merely shares the PF (a
 * passthrough pool, whose VFs need their host driver) gets them back as they were.
 */
export function planPoolStop(
  pool: PoolSpec,
  activated: NetdevName[],
  facts: Map<NetdevName, PfFacts>,
  opts: { refuse: boolean; bound?: BoundVf[]; sharers?: Sharers; vfioKept?: PoolUse },
): StopPlan {
  const plan: StopPlan = { actions: [], kept: [], shared: [] };
  const removed = new Set<NetdevName>();
  for (const dev of activated) {
    const f = factsOf(facts, dev);
    if (f.info.numVfs === 0) continue;
    const other = opts.sharers?.get(dev)?.[0];
    if (other !== undefined) {
      plan.shared.push({ pf: dev, reason: `${dev} keeps its ${f.info.numVfs} VFs: active pool '${other}' draws from it` });
      continue;
    }
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
    removed.add(dev);
  }
  const back = new Map<string, Extract<Action, { kind: 'bind-vfs' }>>();
  for (const b of opts.bound ?? []) {
    const f = facts.get(b.pf);
    const kept = opts.vfioKept?.get(b.pf);
    if (!f || removed.has(b.pf) || kept === 'all' || kept?.includes(b.vf)) continue;
    const vf = f.vfs.find((v) => v.address === b.vf);
    if (!vf || vf.driver !== VFIO || f.uses.get(vf.address)?.length) continue;
    const key = `${b.pf} ${b.driver}`;
    const a = back.get(key) ?? { kind: 'bind-vfs', pf: b.pf, driver: b.driver, vfs: [], skip: [] };
    (a.vfs as PciAddress[]).push(vf.address);
    back.set(key, a);
  }
  plan.actions.push(...back.values());
  return plan;
}
