import { BadInputError, ConflictError, HostError, prefixError } from '../errors.js';
import type { PoolMode, PoolSpec } from '../config/pool-xml.js';
import type { VfRequest } from './requests.js';
import type { Host, VfInfo } from '../host/host.js';
import type { NetdevName, PciAddress } from '../types.js';
import { isSameProcessAlive } from '../util/process.js';
import type { VfpoolState } from '../state/schema.js';
import { portHoldsVf, stackedOnce, vfioHoldersOnce, type StackedLookup, type VfioHolderLookup } from './in-use.js';
import type { PfReader } from './vf-facts.js';

/** A VF as a candidate for a request: where it is and what it is. */
export interface Member {
  pf: NetdevName;
  vf: VfInfo;
}

/** Where a request's VF comes from, once its pool and named device are resolved against the host. */
export interface ResolvedRequest {
  request: VfRequest;
  pool: PoolSpec | null;
  mode: PoolMode;
  /** The named VF (netdev= or address=), or null for "any free VF of the pool". */
  named: Member | null;
}

/** A pool's `<pf dev>` the host refused (no such netdev, no SR-IOV…): the error names pool and PF. */
export function pfError(pool: PoolSpec, pf: NetdevName, err: unknown): unknown {
  return err instanceof HostError ? prefixError(`pool '${pool.name}': PF ${pf}`, err, 'check the <pf dev> name against `ip link`') : err;
}

async function memberOf(host: Host, addr: PciAddress, reads: PfReader): Promise<Member | null> {
  const pf = await host.physfnOf(addr);
  if (!pf) return null;
  const vf = (await reads.listVfs(pf)).find((v) => v.address === addr);
  return vf ? { pf, vf } : null;
}

/**
 * The VF netdev names vfpool has seen on VFs that may have no netdev now: a VF bound to vfio-pci
 * loses it (the host driver's netdev goes with the driver), so an `<interface dev='eth1v0'>`
 * member handed to a guest, or bound by its managed pool, would drop out of its pool (counted
 * neither free nor in use, and "no VFs" once all are taken). Read from the state, where every
 * such unbinding is recorded first.
 */
export function knownVfNetdevs(state: VfpoolState): Map<NetdevName, PciAddress> {
  const known = new Map<NetdevName, PciAddress>();
  for (const p of Object.values(state.pools)) for (const b of p.bound) if (b.netdev) known.set(b.netdev, b.vf);
  for (const port of state.ports) if (port.netdev && port.vfAddr) known.set(port.netdev, port.vfAddr);
  for (const a of state.allocations) {
    for (const n of [a.saved?.netdev, a.netdev, a.requestedNetdev]) if (n) known.set(n, a.vfAddr);
  }
  return known;
}

/** Whether a netdev is an SR-IOV PF. "Not a PF" is ENOENT (no such netdev) or ENOTSUP (no SR-IOV); any other failure is real. */
export function isSriovPf(reads: Pick<PfReader, 'getPf'>, dev: NetdevName): Promise<boolean> {
  return reads.getPf(dev).then(
    () => true,
    (e) => (e instanceof HostError && (e.code === 'ENOENT' || e.code === 'ENOTSUP') ? false : Promise.reject(e)),
  );
}

/**
 * What a pool's `<interface dev>` is on this host: a PF ('pf': it stands for all its VFs, seed
 * 004), the device of a VF netdev, or null. A VF netdev that does not exist now is the VF vfpool
 * saw under that name, if it saw one (on vfio-pci, see knownVfNetdevs), else nothing now: a typo
 * or an unplugged NIC must not stop the rest of the pool from being used. The allocator's
 * members and the pool start's binding both ask this.
 */
export async function interfaceMember(host: Host, dev: NetdevName, known: Map<NetdevName, PciAddress>, reads: PfReader = host): Promise<'pf' | { addr: PciAddress } | null> {
  if (await isSriovPf(reads, dev)) return 'pf';
  const addr = (await host.netdevDevice(dev)) ?? known.get(dev) ?? null;
  return addr === null ? null : { addr };
}

/**
 * A pool's VFs as the host has them now, in the pool's order: each `<pf>` and each
 * `<interface dev>` naming a PF by VF index, then `<interface dev>` naming VFs and `<address>`es
 * in the order written (seed 004: an interface that is a PF stands for all its VFs).
 * `reads` (a HostReads memo, in one planning pass) serves the per-PF reads.
 */
export async function resolvePoolMembers(host: Host, pool: PoolSpec, known: Map<NetdevName, PciAddress>, reads: PfReader = host): Promise<Member[]> {
  const out: Member[] = [];
  for await (const m of poolMembers(host, pool, known, reads)) out.push(m);
  return out;
}

/**
 * The same members, one PF read at a time as they are consumed: a first-fit pick stops at the
 * first free VF, so a prepare on a pool of 4 PFs x 128 VFs reads the PFs it needs, not all four
 * (on Linux each PF is a sysfs walk and an `ip` process).
 */
export async function* poolMembers(host: Host, pool: PoolSpec, known: Map<NetdevName, PciAddress>, reads: PfReader = host): AsyncGenerator<Member> {
  const seen = new Set<string>();
  const fresh = (m: Member) => !seen.has(m.vf.address) && (seen.add(m.vf.address), true);
  async function* allOf(pf: NetdevName): AsyncGenerator<Member> {
    for (const vf of await reads.listVfs(pf)) if (fresh({ pf, vf })) yield { pf, vf };
  }
  for (const p of pool.pfs) {
    try {
      await reads.getPf(p.dev);
    } catch (err) {
      throw pfError(pool, p.dev, err);
    }
    yield* allOf(p.dev);
  }
  for (const dev of pool.interfaces) {
    const what = await interfaceMember(host, dev, known, reads);
    if (what === 'pf') {
      yield* allOf(dev);
      continue;
    }
    const m = what ? await memberOf(host, what.addr, reads) : null;
    if (m && fresh(m)) yield m;
  }
  for (const addr of pool.addresses) {
    const m = await memberOf(host, addr, reads);
    if (m && fresh(m)) yield m;
  }
}

/**
 * Resolves a device a request names (seed 001 steps 1 and 2). The VF must be a VF of a network
 * PF: that is what makes it a network device whose MAC can be set through the PF. A request
 * with both `netdev=` and `address=` must have them agree (step 2's check); a `netdev=` seen
 * before for this domain (`boundAddr`) must still resolve to the same address.
 */
export async function resolveNamedVf(
  host: Host,
  r: VfRequest,
  boundAddr: PciAddress | null,
  domain: string,
  reads: PfReader = host,
  known: Map<NetdevName, PciAddress> = new Map(),
): Promise<Member> {
  let addr = r.address;
  if (r.netdev !== null) {
    // A VF on vfio-pci has no netdev; one that vfpool bound (a managed pool's start) or handed
    // out is still known by the name it had (knownVfNetdevs), as a pool's <interface dev> is.
    const resolved = (await host.netdevDevice(r.netdev)) ?? known.get(r.netdev) ?? null;
    if (resolved === null) {
      throw new HostError(`${r.field}: netdev '${r.netdev}' does not exist on this host`, {
        code: 'ENODEV',
        hint: 'a VF bound to vfio-pci has no netdev: name it by address= instead',
      });
    }
    if (addr !== null && resolved !== addr) {
      throw new BadInputError(
        `${r.field}: netdev '${r.netdev}' is now ${resolved}, but the domain names address '${addr}'`,
        'the VFs were renumbered: correct address= (or netdev=) in the domain\'s vfpool metadata',
      );
    }
    if (boundAddr !== null && resolved !== boundAddr) {
      throw new BadInputError(
        `${r.field}: netdev '${r.netdev}' is now ${resolved}, but it was ${boundAddr} when domain '${domain}' last started`,
        `the VFs were renumbered: write address='${resolved}' (or the old one) next to netdev= to say which you mean, or run \`vfpool release ${domain} --forget-netdevs\``,
      );
    }
    addr = resolved;
  }
  if (addr === null) throw new BadInputError(`${r.field}: names no device`);
  const m = await memberOf(host, addr, reads);
  if (!m) {
    throw new HostError(`${r.field}: ${addr}${r.netdev ? ` (netdev ${r.netdev})` : ''} is not a VF of a network PF (no physfn with a netdev), so vfpool cannot set its MAC`, {
      code: 'ENOTSUP',
      hint: 'name a VF of an SR-IOV network card; `vfpool status` lists them',
    });
  }
  return m;
}

/** Who holds a VF, for the in-use checks and the "pool exhausted" message. */
export async function holdersOf(state: VfpoolState, vf: VfInfo, vfioHolders: VfioHolderLookup, stackedOn: StackedLookup): Promise<string[]> {
  const who: string[] = [];
  for (const a of state.allocations) {
    if (a.vfAddr !== vf.address) continue;
    const dead = a.owner.pid !== null && !isSameProcessAlive(a.owner.pid, a.owner.pidStart);
    who.push(`domain '${a.owner.domain}'${a.owner.pid ? ` (pid ${a.owner.pid}${dead ? ', gone: run `vfpool reconcile`' : ''})` : ''}`);
  }
  for (const p of state.ports) {
    if (portHoldsVf(p, vf)) who.push(`domain '${p.domain}' through libvirt network '${p.network}'`);
  }
  if (who.length === 0 && vf.driver === 'vfio-pci' && vf.iommuGroup !== null) {
    for (const pid of await vfioHolders(vf.iommuGroup)) who.push(`pid ${pid} holding /dev/vfio/${vf.iommuGroup}`);
  }
  const stacked = who.length === 0 ? await stackedOn(vf) : null;
  if (stacked !== null) who.push(stacked);
  return who;
}

/**
 * Picks a VF for each request, under the state lock: named devices first (they may not be
 * taken by a first-fit pick), then first-fit by the pool's order. A VF is free when vfpool has no
 * allocation on it (in any phase, whoever the owner: a dead owner's VF is freed by release or
 * `vfpool reconcile`, never silently reused), libvirt handed it to nobody, and nobody holds its
 * vfio group open. An exhausted pool is a ConflictError (exit 3) naming the pool and its holders.
 */
export async function pickVfs(
  host: Host,
  state: VfpoolState,
  resolved: ResolvedRequest[],
  /** The pool's members in order, read as consumed (poolMembers). */
  members: (pool: PoolSpec) => AsyncIterable<Member>,
  domain: string,
  /** PCI devices the domain's own `<hostdev>`/`<interface type='hostdev'>` assign (libvirt's). */
  ownDevices: Array<{ field: string; address: PciAddress }> = [],
): Promise<Map<number, Member>> {
  const picked = new Map<number, Member>();
  const taken = new Set<string>();
  // Each device as the line names it within its domain ("<hostdev> #1"), keyed by address.
  const own = new Map(ownDevices.map((d) => [d.address as string, d.field.replace(/^domain '[^']*': /, '')]));
  const vfioHolders = vfioHoldersOnce(host);
  const stackedOn = stackedOnce(host);
  const order = [...resolved.filter((r) => r.named), ...resolved.filter((r) => !r.named)];
  for (const r of order) {
    if (r.named) {
      const m = r.named;
      if (taken.has(m.vf.address)) {
        throw new BadInputError(`${r.request.field}: ${m.vf.address} is asked for twice in domain '${domain}'`, 'name each VF once');
      }
      const libvirts = own.get(m.vf.address);
      if (libvirts !== undefined) {
        throw new BadInputError(
          `${r.request.field}: VF ${m.vf.address} is also ${libvirts} of domain '${domain}', which libvirt assigns itself: a VF reaches a guest once`,
          'drop the libvirt device or the vfpool:hostdev',
        );
      }
      if (r.pool && !(await isMember(members(r.pool), m.vf.address))) {
        throw new BadInputError(`${r.request.field}: ${m.vf.address} is not a member of pool '${r.pool.name}'`, 'drop pool= or name one of its VFs');
      }
      const who = await holdersOf(state, m.vf, vfioHolders, stackedOn);
      if (who.length) {
        throw new ConflictError(`${r.request.field}: VF ${m.vf.address}${m.vf.netdev ? ` (${m.vf.netdev})` : ''} is in use by ${who.join(' and ')}`, 'stop that guest first, or ask for another VF');
      }
      picked.set(r.request.index, m);
      taken.add(m.vf.address);
      continue;
    }
    const pool = r.pool!;
    let found: Member | undefined;
    let count = 0;
    const held: string[] = [];
    for await (const m of members(pool)) {
      count++;
      if (taken.has(m.vf.address)) {
        held.push(`VF ${m.vf.address}: another request of this domain`);
        continue;
      }
      const libvirts = own.get(m.vf.address);
      if (libvirts !== undefined) {
        held.push(`VF ${m.vf.address}: this domain's ${libvirts}`);
        continue;
      }
      const who = await holdersOf(state, m.vf, vfioHolders, stackedOn);
      if (who.length === 0) {
        found = m;
        break;
      }
      held.push(`VF ${m.vf.address}: ${who.join(' and ')}`);
    }
    if (!found) {
      if (count === 0) {
        // An active pool whose VFs are gone had its sriov_numvfs changed (or its PF removed)
        // behind vfpool's back: "start it" would be answered "already active".
        if (state.pools[pool.name] !== undefined) {
          // A restart only brings back what a <vf num> creates: a pool with none (the README's
          // `<pf dev='eth2'/>`) on PFs without VFs has none to bring back.
          if (!pool.pfs.some((p) => p.numVfs !== null)) {
            const pfs = pool.pfs.map((p) => p.dev);
            throw new ConflictError(
              `domain '${domain}': pool '${pool.name}' is active but has no VFs on this host (${pfs.length ? `${pfs.join(', ')} ${pfs.length > 1 ? 'have' : 'has'} none, and vfpool creates VFs only for a <pf> with <vf num>` : 'its <interface> and <address> members name no VF here'})`,
              pfs.length ? `give ${pfs.map((d) => `<pf dev='${d}'>`).join(' and ')} a <vf num='N'/>, then restart the pool (${pool.origin === 'libvirt-metadata'
                ? `in its <vfpool:pool>: \`virsh net-edit ${pool.name}\`, \`virsh net-destroy ${pool.name}\`, \`virsh net-start ${pool.name}\``
                : `\`vfpool net-define FILE\`, \`vfpool net-destroy ${pool.name}\`, \`vfpool net-start ${pool.name}\``})` : 'check them against `vfpool status`',
            );
          }
          throw new ConflictError(
            `domain '${domain}': pool '${pool.name}' is active but has no VFs on this host (its PFs' sriov_numvfs changed outside vfpool, or its members are gone)`,
            `restart it (\`vfpool net-destroy ${pool.name}\` then \`vfpool net-start ${pool.name}\`, or the libvirt network); \`vfpool doctor\` names the PF`,
          );
        }
        throw new ConflictError(`domain '${domain}': pool '${pool.name}' has no VFs on this host`, `start it (\`vfpool net-start ${pool.name}\`, or the libvirt network) so its VFs exist`);
      }
      const shown = held.slice(0, 8).join('; ') + (held.length > 8 ? `; and ${held.length - 8} more` : '');
      throw new ConflictError(`domain '${domain}': pool '${pool.name}' is exhausted, all ${count} VFs are held (${shown})`, 'stop a guest, or add VFs to the pool');
    }
    picked.set(r.request.index, found);
    taken.add(found.vf.address);
  }
  return picked;
}

async function isMember(members: AsyncIterable<Member>, address: PciAddress): Promise<boolean> {
  for await (const m of members) if (m.vf.address === address) return true;
  return false;
}
