import { BadInputError, ConflictError } from '../errors.js';
import { parseGuestMac, parseNetdevName, parseObjectName, pciAddressFromParts, type MacAddress, type NetdevName, type PciAddress } from '../types.js';
import { attr, child, text, type XmlElement } from '../util/xml.js';
import type { Context } from './context.js';
import type { PortRecord } from './state-store.js';

/**
 * VFs that libvirt's own networks hand out (`<forward mode='hostdev'>` with a `<pf>`, or
 * `passthrough` with a `<pf>`, which gives a free VF's netdev for macvtap: seed 004 as libvirt
 * implements it). The network hook's `port-created` says which VF went to which domain; vfpool
 * records it so its in-use guard sees it, and vetoes it when vfpool holds that VF for another
 * domain. `port-deleted` drops the record.
 */
export interface NetworkPort {
  uuid: string;
  domain: string;
  domainUuid: string | null;
  mac: MacAddress | null;
  plug: { type: 'hostdev-pci'; address: PciAddress } | { type: 'direct'; dev: NetdevName } | { type: 'other'; name: string };
}

/** `<networkport>` from the hook's `<hookData>` (libvirt's formatnetworkport). */
export function parseNetworkPort(hookData: XmlElement, where: string): NetworkPort {
  const port = child(hookData, 'networkport');
  if (!port) throw new BadInputError(`${where}: no <networkport> in the hook's input`);
  const uuid = text(port, 'uuid');
  if (!uuid) throw new BadInputError(`${where}: <networkport> has no <uuid>`);
  const owner = child(port, 'owner');
  const name = text(owner, 'name');
  if (!name) throw new BadInputError(`${where}: <networkport> has no <owner><name>`);
  const macRaw = attr(child(port, 'mac'), 'address');
  const plugEl = child(port, 'plug');
  const type = attr(plugEl, 'type') ?? 'none';
  let plug: NetworkPort['plug'];
  if (type === 'hostdev-pci') {
    const a = child(plugEl!, 'address');
    if (!a) throw new BadInputError(`${where}: <plug type='hostdev-pci'> has no <address>`);
    plug = {
      type,
      address: pciAddressFromParts({ domain: attr(a, 'domain'), bus: attr(a, 'bus'), slot: attr(a, 'slot'), function: attr(a, 'function') }, `${where}: plug address`),
    };
  } else if (type === 'direct') {
    const dev = attr(plugEl, 'dev');
    if (!dev) throw new BadInputError(`${where}: <plug type='direct'> has no dev`);
    plug = { type, dev: parseNetdevName(dev, `${where}: plug dev`) };
  } else plug = { type: 'other', name: type };
  return {
    uuid,
    domain: parseObjectName(name, `${where}: port owner name`),
    domainUuid: text(owner, 'uuid') ?? null,
    mac: macRaw ? parseGuestMac(macRaw, `${where}: port mac`) : null,
    plug,
  };
}

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
