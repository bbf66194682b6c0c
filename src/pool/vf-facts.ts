import { HostError } from '../errors.js';
import type { Host, PfInfo, VfInfo } from '../host/host.js';
import type { NetdevName, PciAddress, VfLinkConfig } from '../types.js';
import type { VfFacts } from './vf-plan.js';

/** The per-PF host reads a planning pass repeats: a Host, or a `HostReads` memo over one. */
export type PfReader = Pick<Host, 'getPf' | 'listVfs' | 'getVfLinks' | 'getMtu'>;

/**
 * Host reads memoised for ONE planning pass (planPrepare, under the state lock, where nothing
 * changes the host): `getPf`, `listVfs` and `getVfLinks` of a PF and the MTU of a netdev are read
 * once however many of its VFs are planned (on Linux each `getVfLinks` is an `ip` process).
 * A failed read fails the same way for every caller. Never keep one past the pass.
 */
export class HostReads implements PfReader {
  private readonly memo = new Map<string, Promise<unknown>>();
  constructor(private readonly host: Host) {}

  private once<T>(key: string, read: () => Promise<T>): Promise<T> {
    let p = this.memo.get(key) as Promise<T> | undefined;
    if (!p) this.memo.set(key, (p = read()));
    return p;
  }

  getPf(pf: NetdevName): Promise<PfInfo> {
    return this.once(`pf\0${pf}`, () => this.host.getPf(pf));
  }

  listVfs(pf: NetdevName): Promise<VfInfo[]> {
    return this.once(`vfs\0${pf}`, () => this.host.listVfs(pf));
  }

  getVfLinks(pf: NetdevName): Promise<Map<number, VfLinkConfig>> {
    return this.once(`links\0${pf}`, () => this.host.getVfLinks(pf));
  }

  getMtu(netdev: NetdevName): Promise<number> {
    return this.once(`mtu\0${netdev}`, () => this.host.getMtu(netdev));
  }
}

/** Reads what the planners need about one VF (the per-PF reads through `reads`, if given). */
export async function readVfFacts(host: Host, pf: NetdevName, vfAddr: PciAddress, reads: PfReader = host): Promise<VfFacts> {
  const info = await reads.getPf(pf);
  const vf = (await reads.listVfs(pf)).find((v) => v.address === vfAddr);
  if (!vf) throw new HostError(`${vfAddr} is no longer a VF of ${pf}`, { code: 'ENODEV', hint: 'was the PF\'s VF count changed? see `vfpool status`' });
  const link = (await reads.getVfLinks(pf)).get(vf.index);
  if (!link) throw new HostError(`${pf} does not report VF ${vf.index} (${vfAddr}) in its vfinfo_list`, { code: 'ENODEV' });
  return {
    pf: info,
    pfMtu: await reads.getMtu(pf),
    vf,
    link,
    mtu: vf.netdev ? await host.getMtu(vf.netdev) : null,
    group: vf.iommuGroup ? await host.iommuGroupDevices(vf.iommuGroup) : [],
  };
}

/**
 * readVfFacts for a VF recorded under the name its PF had then. A PF renamed since (`ip link set
 * eth1 name lan0`, udev) still has the VF, with the guest's settings: it is found through the
 * VF's `physfn`, so a release restores it rather than taking it for gone and dropping its record.
 */
export async function readRecordedVfFacts(host: Host, pf: NetdevName, vfAddr: PciAddress): Promise<VfFacts> {
  try {
    return await readVfFacts(host, pf, vfAddr);
  } catch (err) {
    if (!(err instanceof HostError) || (err.code !== 'ENODEV' && err.code !== 'ENOENT')) throw err;
    const now = await host.physfnOf(vfAddr).catch(() => null);
    if (now === null || now === pf) throw err;
    return readVfFacts(host, now, vfAddr);
  }
}
