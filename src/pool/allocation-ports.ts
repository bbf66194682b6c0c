import { ConflictError } from '../errors.js';
import type { NetworkPort } from '../config/network-port.js';
import { parseObjectName, type NetdevName, type PciAddress } from '../types.js';
import type { Context } from './context.js';
import type { PortRecord } from '../state/schema.js';

/**
 * VFs that libvirt's own networks hand out: `port-created` records them so vfpool's in-use guard
 * sees them, and vetoes one that vfpool holds for another domain; `port-deleted` drops the record.
 */
/**
 * `port-created`: records a VF libvirt handed to a domain. A VF that vfpool holds for another
 * domain is refused (ConflictError, exit 3: libvirt then does not start the guest). Plugs that
 * are no VF (bridges, networks, macvtap on a plain NIC) need nothing: returns without the lock.
 */
export async function recordPort(ctx: Context, network: string, port: NetworkPort): Promise<PortRecord | null> {
  if (port.plug.type === 'other') return null;
  let vfAddr: PciAddress | null = null;
  let netdev: NetdevName | null = null;
  if (port.plug.type === 'hostdev-pci') vfAddr = port.plug.address;
  else {
    netdev = port.plug.dev;
    const dev = await ctx.host.netdevDevice(netdev);
    if (dev && (await ctx.host.physfnOf(dev))) vfAddr = dev;
    // macvtap on an ordinary NIC (bridge, vepa, or passthrough of a PF): no VF, nothing for
    // the in-use guard, and no vfpool allocation can be on a netdev that is not a VF.
    if (vfAddr === null) return null;
  }
  const record: PortRecord = {
    network: parseObjectName(network, 'network name'),
    portUuid: port.uuid,
    domain: port.domain,
    domainUuid: port.domainUuid,
    vfAddr,
    netdev,
    plug: port.plug.type,
    mac: port.mac,
    createdAt: new Date().toISOString(),
  };
  return ctx.store.update((state) => {
    const held = state.allocations.find(
      (a) => a.owner.domain !== port.domain && ((vfAddr !== null && a.vfAddr === vfAddr) || (netdev !== null && a.netdev === netdev)),
    );
    if (held) {
      throw new ConflictError(
        `libvirt network '${network}' hands VF ${vfAddr ?? netdev} to domain '${port.domain}', but vfpool holds it for domain '${held.owner.domain}'${held.pool ? ` (pool '${held.pool}')` : ''}`,
        'do not let a libvirt network and a vfpool pool share VFs, or stop that guest first',
      );
    }
    state.ports = state.ports.filter((p) => !(p.network === record.network && p.portUuid === record.portUuid));
    state.ports.push(record);
    ctx.log.info(`libvirt network '${network}': port ${port.uuid} gives ${vfAddr ?? netdev} to domain '${port.domain}'`);
    return record;
  });
}

/** `port-deleted`: forgets the port. Idempotent: an unknown port is success, without the lock. */
export async function removePort(ctx: Context, network: string, portUuid: string): Promise<boolean> {
  if (!ctx.store.read().ports.some((p) => p.network === network && p.portUuid === portUuid)) return false;
  return ctx.store.update((state) => {
    const before = state.ports.length;
    state.ports = state.ports.filter((p) => !(p.network === network && p.portUuid === portUuid));
    return state.ports.length !== before;
  });
}
