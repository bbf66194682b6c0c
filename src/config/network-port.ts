import { BadInputError } from '../errors.js';
import { parseGuestMac, parseNetdevName, pciAddressFromParts, type MacAddress, type NetdevName, type PciAddress } from '../types.js';
import { attr, child, text, type XmlElement } from '../util/xml.js';

/**
 * VFs that libvirt's own networks hand out (`<forward mode='hostdev'>` with a `<pf>`, or
 * `passthrough` with a `<pf>`, which gives a free VF's netdev for macvtap: seed 004 as libvirt
 * implements it). The network hook's `port-created` says which VF went to which domain
 * (src/pool/allocation-ports.ts records it); this is the parsed `<networkport>`.
 */
export interface NetworkPort {
  uuid: string;
  /** As libvirt wrote it (any guest's name: libvirt refuses only '/' and a newline); recordPort checks it before recording it. */
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
    domain: name,
    domainUuid: text(owner, 'uuid') ?? null,
    mac: macRaw ? parseGuestMac(macRaw, `${where}: port mac`) : null,
    plug,
  };
}

