import { isSameProcessAlive } from '../util/process.js';
import type { Host, VfInfo } from '../host/host.js';
import type { PortRecord, VfpoolState } from '../state/schema.js';
import { allocationPinsVf, type OwnerEnv } from './owners.js';

/** Why a VF may not be touched: DESIGN.md's three meanings of "in use". */
export interface VfUse {
  by: 'allocation' | 'libvirt-port' | 'vfio-holder' | 'stacked';
  who: string;
}

/**
 * Who uses each of these VFs:
 * 1. an allocation in vfpool's state whose owner still runs (an owner whose QEMU pid is not yet
 *    known counts as running: it is between prepare and start), or that a live vfpool process
 *    is still preparing or releasing (its `worker`);
 * 2. a port libvirt's own hostdev network handed out (recorded at `port-created`);
 * 3. a process holding `/dev/vfio/GROUP` of a VF bound to vfio-pci (QEMU started by anyone);
 * 4. a device stacked on the VF's netdev: a macvtap (another guest's `<interface type='direct'>`
 *    on it, which libvirt reports to no network hook), a bridge or a bond it is a port of.
 */
/** Whether a port libvirt's own network handed out is this VF (by PCI address, or a direct plug's netdev). */
export function portHoldsVf(p: PortRecord, vf: Pick<VfInfo, 'address' | 'netdev'>): boolean {
  return p.vfAddr === vf.address || (p.netdev !== null && p.netdev === vf.netdev);
}

/** `/dev/vfio` holders, read from /proc at most once per operation and only when asked. */
export type VfioHolderLookup = (group: string) => Promise<number[]>;

export function vfioHoldersOnce(host: Host): VfioHolderLookup {
  let all: Promise<Map<string, number[]>> | undefined;
  return async (group) => (await (all ??= host.vfioHolders())).get(group) ?? [];
}

export async function findVfUses(host: Host, state: VfpoolState, vfs: VfInfo[], holders = vfioHoldersOnce(host), env?: OwnerEnv): Promise<Map<string, VfUse[]>> {
  const uses = new Map<string, VfUse[]>();
  const add = (addr: string, u: VfUse) => uses.set(addr, [...(uses.get(addr) ?? []), u]);
  const stackedOn = stackedOnce(host);
  for (const vf of vfs) {
    for (const a of state.allocations) {
      if (a.vfAddr !== vf.address) continue;
      // With `env` (every decision that changes VFs), the full owner policy: a libvirt guest
      // with no pid file past the grace period, or a prepare/release whose vfpool died, is gone.
      if (env && !allocationPinsVf(a, env)) continue;
      if (a.owner.pid === null || isSameProcessAlive(a.owner.pid, a.owner.pidStart)) {
        add(vf.address, { by: 'allocation', who: `domain '${a.owner.domain}'${a.owner.pid ? ` (pid ${a.owner.pid})` : ''}` });
      } else if (a.worker && isSameProcessAlive(a.worker, a.workerStart)) {
        add(vf.address, { by: 'allocation', who: `vfpool process ${a.worker} working on domain '${a.owner.domain}'s VF` });
      }
    }
    for (const p of state.ports) {
      if (portHoldsVf(p, vf)) {
        add(vf.address, { by: 'libvirt-port', who: `domain '${p.domain}' through libvirt network '${p.network}'` });
      }
    }
    const stacked = await stackedOn(vf);
    if (stacked !== null) add(vf.address, { by: 'stacked', who: stacked });
    if (vf.driver === 'vfio-pci' && vf.iommuGroup !== null) {
      for (const pid of await holders(vf.iommuGroup)) {
        add(vf.address, { by: 'vfio-holder', who: `pid ${pid} holding /dev/vfio/${vf.iommuGroup}` });
      }
    }
  }
  return uses;
}

/** Who sits on a VF's netdev (meaning 4 above), as the line says it; null: nobody, or no netdev. */
export type StackedLookup = (vf: Pick<VfInfo, 'netdev'>) => Promise<string | null>;

/** The devices stacked on a netdev ([] for none), from host.stackedDevices() read at most once per operation and only when asked. */
export function stackedDevicesOnce(host: Host): (netdev: string) => Promise<string[]> {
  let all: Promise<Map<string, string[]>> | undefined;
  return async (netdev) => (await (all ??= host.stackedDevices())).get(netdev) ?? [];
}

/** stackedDevicesOnce, as the in-use line says it. */
export function stackedOnce(host: Host): StackedLookup {
  const uppersOf = stackedDevicesOnce(host);
  return async (vf) => {
    if (vf.netdev === null) return null;
    const uppers = await uppersOf(vf.netdev);
    return uppers.length > 0 ? `${uppers.join(', ')} on ${vf.netdev} (a guest's <interface type='direct'>, a bridge or a bond)` : null;
  };
}

export function describeUses(vf: VfInfo, uses: VfUse[]): string {
  return `VF ${vf.index} (${vf.address}${vf.netdev ? `, ${vf.netdev}` : ''}) is in use by ${uses.map((u) => u.who).join(' and ')}`;
}
