import { BadInputError } from '../errors.js';
import { parseNetdevName, parseObjectName, pciAddressFromParts, POOL_MODES, type NetdevName, type PciAddress, type PoolMode } from '../types.js';
import { attr, child, children, findNsElement, misnamedNsElement, parseXml, text, VFPOOL_NS, type XmlElement } from '../util/xml.js';
import { escapeControl, quoteInput } from '../util/quote.js';

export { POOL_MODES, type PoolMode } from '../types.js';

export interface PoolPf {
  dev: NetdevName;
  /** `<vf num>`: how many VFs to create at start; null leaves the PF's count alone. */
  numVfs: number | null;
}

/** A validated pool definition: nothing downstream sees parser output. */
export interface PoolSpec {
  name: string;
  mode: PoolMode;
  managed: boolean;
  pfs: PoolPf[];
  /** `<interface dev>`: a PF stands for all its VFs, a VF for itself (resolved against the host). */
  interfaces: NetdevName[];
  addresses: PciAddress[];
  /**
   * The network's `<vlan><tag id='N'/></vlan>`: libvirt gives every guest interface of a hostdev
   * or macvtap network this VLAN unless the interface names its own (seed 002: "the VLAN tags can
   * also be taken care of by the <interface>/<network> elements"). null: none.
   */
  vlan: number | null;
  /** Where it came from: a vfpool definition file, or a libvirt network's `<metadata>`. */
  origin: 'definition' | 'libvirt-metadata';
}

/** Modes whose guests get the VF through vfio-pci (passthrough uses the VF's host netdev for macvtap). */
export function modeUsesVfio(mode: PoolMode): boolean {
  return mode === 'hostdev' || mode === 'pci-passthrough-hybrid';
}

function parseMode(value: string | undefined, where: string): PoolMode {
  if (value === undefined) {
    throw new BadInputError(`${where}: <forward> has no mode`, `use mode='${POOL_MODES.join("', '")}'`);
  }
  if (!(POOL_MODES as readonly string[]).includes(value)) {
    throw new BadInputError(`${where}: forward mode ${quoteInput(value)} is not a vfpool mode`, `use one of '${POOL_MODES.join("', '")}'`);
  }
  return value as PoolMode;
}

function parseManaged(value: string | undefined, where: string): boolean {
  if (value === undefined || value === 'no') return false;
  if (value === 'yes') return true;
  throw new BadInputError(`${where}: managed=${quoteInput(value)} must be 'yes' or 'no'`);
}

function parseVfNum(pfEl: XmlElement, vfTag: string, where: string): number | null {
  const vfs = children(pfEl, vfTag);
  if (vfs.length === 0) return null;
  if (vfs.length > 1) throw new BadInputError(`${where}: more than one <vf> in <pf dev=${quoteInput(attr(pfEl, 'dev') ?? '')}>`, 'give one <vf num=.../>');
  const raw = attr(vfs[0], 'num');
  if (raw === undefined) throw new BadInputError(`${where}: <vf> in <pf dev=${quoteInput(attr(pfEl, 'dev') ?? '')}> has no num`, "write <vf num='N'/>");
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1 || Number(raw) > 4096) {
    throw new BadInputError(`${where}: vf num=${quoteInput(raw)} is not a number from 1 to 4096`);
  }
  return Number(raw);
}

/** The members (`<pf>`, `<interface>`, `<address>`) of a forward element or a vfpool:pool element. */
function parseMembers(el: XmlElement, tag: (l: string) => string, where: string): Pick<PoolSpec, 'pfs' | 'interfaces' | 'addresses'> {
  const pfs: PoolPf[] = children(el, tag('pf')).map((pfEl) => {
    const dev = attr(pfEl, 'dev');
    if (dev === undefined) throw new BadInputError(`${where}: <pf> has no dev attribute`, "write <pf dev='eth1'/>");
    return { dev: parseNetdevName(dev, `${where}: pf dev`), numVfs: parseVfNum(pfEl, tag('vf'), where) };
  });
  const interfaces = children(el, tag('interface')).map((ifEl) => {
    const dev = attr(ifEl, 'dev');
    if (dev === undefined) throw new BadInputError(`${where}: <interface> has no dev attribute`, "write <interface dev='eth20'/>");
    return parseNetdevName(dev, `${where}: interface dev`);
  });
  const addresses = children(el, tag('address')).map((a) => {
    const type = attr(a, 'type');
    if (type !== 'pci') throw new BadInputError(`${where}: <address type=${quoteInput(type ?? '')}> must be type='pci'`);
    return pciAddressFromParts({ domain: attr(a, 'domain'), bus: attr(a, 'bus'), slot: attr(a, 'slot'), function: attr(a, 'function') }, `${where}: address`);
  });
  const seen = new Set<string>();
  for (const m of [...pfs.map((p) => p.dev), ...interfaces, ...addresses]) {
    if (seen.has(m)) throw new BadInputError(`${where}: '${m}' is listed twice`, 'list each device once');
    seen.add(m);
  }
  return { pfs, interfaces, addresses };
}

/**
 * The network-level `<vlan>` as a VF takes it: one tag, no trunk (a VF tags the guest's frames
 * itself, one access VLAN; libvirt refuses a trunk on SR-IOV devices too). vfpool does not pick
 * portgroups, so with `refusePortgroupVlans` a `<portgroup>` with a `<vlan>` is refused: in a
 * vfpool definition nothing would ever apply it, and on a hybrid pool libvirt would tag the
 * failover standby and not its VF. (A libvirt hostdev or passthrough network applies its
 * portgroups to its own interfaces, which is libvirt's business.)
 */
function parseNetworkVlan(net: XmlElement, where: string, refusePortgroupVlans: boolean, lenient: boolean): number | null {
  if (lenient) {
    try {
      return parseNetworkVlan(net, where, false, false);
    } catch (err) {
      if (err instanceof BadInputError) return null;
      throw err;
    }
  }
  for (const pg of refusePortgroupVlans ? children(net, 'portgroup') : []) {
    if (child(pg, 'vlan')) {
      throw new BadInputError(
        `${where}: <portgroup name=${quoteInput(attr(pg, 'name') ?? '')}> has a <vlan>, which vfpool does not apply to its VFs`,
        "put the VLAN on the network (<vlan><tag id='N'/></vlan>), or on each guest's <interface> or vfpool:hostdev vlan=",
      );
    }
  }
  const vlanEl = child(net, 'vlan');
  if (!vlanEl) return null;
  const tags = children(vlanEl, 'tag');
  if (tags.length !== 1 || attr(vlanEl, 'trunk')?.toLowerCase() === 'yes') {
    throw new BadInputError(`${where}: the network's <vlan> must be one <tag id='N'/> without trunk='yes' (a VF has one access VLAN), not ${tags.length} tag(s)${attr(vlanEl, 'trunk') ? ` with trunk=${quoteInput(attr(vlanEl, 'trunk')!)}` : ''}`, "write <vlan><tag id='N'/></vlan>");
  }
  const raw = attr(tags[0], 'id') ?? '';
  if (!/^[0-9]+$/.test(raw) || Number(raw) > 4095) throw new BadInputError(`${where}: the network's <vlan> tag id=${quoteInput(raw)} is not a whole number from 0 to 4095`);
  return Number(raw);
}

/**
 * `<forward dev='eth2'/>`, libvirt's shorthand for one `<interface dev='eth2'/>`
 * (virNetworkForwardDefParseXML): with `<interface>` children it must name the first one, as
 * libvirt requires; beside a `<pf>`, libvirt would use that one device and not the PF's VFs.
 */
function withForwardDev(forward: XmlElement, members: Pick<PoolSpec, 'pfs' | 'interfaces' | 'addresses'>, where: string): Pick<PoolSpec, 'pfs' | 'interfaces' | 'addresses'> {
  const raw = attr(forward, 'dev');
  if (raw === undefined) return members;
  const dev = parseNetdevName(raw, `${where}: forward dev`);
  const first = members.interfaces[0];
  if (first !== undefined && first !== dev) {
    throw new BadInputError(`${where}: <forward dev='${dev}'> must name the first <interface>, '${first}' (libvirt refuses it too)`, `write <forward dev='${first}'>, or leave dev= out`);
  }
  if (members.pfs.length > 0 || members.addresses.length > 0) {
    throw new BadInputError(`${where}: <forward dev='${dev}'> beside <pf> or <address>: libvirt would use '${dev}' alone`, `leave dev= out, or list '${dev}' as the pool's only <interface>`);
  }
  return first === undefined ? { ...members, interfaces: [dev] } : members;
}

function validateHasMembers(spec: Pick<PoolSpec, 'pfs' | 'interfaces' | 'addresses'>, where: string): void {
  if (spec.pfs.length + spec.interfaces.length + spec.addresses.length === 0) {
    throw new BadInputError(`${where}: the pool has no <pf>, <interface> or <address>`, "add e.g. <pf dev='eth1'/>");
  }
}

/** The network element, whether bare or inside libvirt's `<hookData>`. */
export function networkElement(doc: XmlElement, where: string): XmlElement {
  const net = child(doc, 'network') ?? child(child(doc, 'hookData') ?? {}, 'network');
  if (!net) throw new BadInputError(`${where}: no <network> element`);
  return net;
}

export function networkName(net: XmlElement, where: string): string {
  const name = text(net, 'name');
  if (name === undefined || name === '') throw new BadInputError(`${where}: <network> has no <name>`);
  return parseObjectName(name, `${where}: network name`);
}

/**
 * A vfpool pool definition file (`$VFPOOL_CONFIG_DIR/networks/NAME.xml`): the seeds' network XML.
 * A `<metadata><vfpool:pool>` inside it is accepted too, and then wins over `<forward>`'s members.
 */
export function parsePoolXml(xml: string, where: string): PoolSpec {
  return poolFromDefinition(networkElement(parseXml(xml, where), where), where);
}

/**
 * How a pool's XML is read: `lenient` for the XML an active pool was started with (state.json),
 * which an older vfpool accepted; a `<vlan>` it did not read then must not make that pool
 * impossible to use or stop now, so a network `<vlan>` it cannot take is no VLAN, as before.
 */
export interface PoolParseOptions {
  lenient?: boolean;
}

/** parsePoolXml on an already parsed `<network>` element. */
export function poolFromDefinition(net: XmlElement, where: string, opts: PoolParseOptions = {}): PoolSpec {
  const fromMeta = poolFromNetwork(net, where, opts);
  if (fromMeta) return { ...fromMeta, origin: 'definition' };
  const name = networkName(net, where);
  const forward = child(net, 'forward');
  if (!forward) throw new BadInputError(`${where}: network '${name}' has no <forward>`, "add <forward mode='hostdev'><pf dev='eth1'/></forward>");
  const members = withForwardDev(forward, parseMembers(forward, (l) => l, where), where);
  validateHasMembers(members, where);
  return {
    name,
    mode: parseMode(attr(forward, 'mode'), where),
    managed: parseManaged(attr(forward, 'managed'), where),
    ...members,
    vlan: parseNetworkVlan(net, where, true, opts.lenient === true),
    origin: 'definition',
  };
}

/**
 * The pool a libvirt network carries in `<metadata><vfpool:pool>` (libvirt 11 drops an unknown
 * `<vf>` in `<pf>` but keeps foreign-namespace metadata verbatim), or undefined if it has none.
 * The mode is the network's own forward mode unless `<vfpool:pool mode='…'>` says otherwise.
 */
export function poolFromNetwork(net: XmlElement, where: string, opts: PoolParseOptions = {}): PoolSpec | undefined {
  const found = findNsElement(child(net, 'metadata'), 'pool', [net]);
  // A running pool's XML (lenient) started as it was: only a new start or definition is refused.
  const misnamed = found || opts.lenient ? undefined : misnamedNsElement(child(net, 'metadata'), 'pool', [net]);
  if (misnamed) {
    throw new BadInputError(`${where}: <metadata> holds <${escapeControl(misnamed.key)}> in namespace ${quoteInput(misnamed.ns)}, not vfpool's ${VFPOOL_NS}, so the network would run without its pool`,
      `declare xmlns:vfpool='${VFPOOL_NS}'`);
  }
  if (!found) return undefined;
  const name = networkName(net, where);
  const forward = child(net, 'forward');
  const members = parseMembers(found.el, found.tag, `${where}: vfpool:pool`);
  validateHasMembers(members, `${where}: vfpool:pool`);
  const mode = parseMode(attr(found.el, 'mode') ?? attr(forward, 'mode'), `${where}: network '${name}'`);
  return {
    name,
    mode,
    managed: parseManaged(attr(found.el, 'managed') ?? attr(forward, 'managed'), where),
    ...members,
    vlan: parseNetworkVlan(net, where, mode === 'pci-passthrough-hybrid', opts.lenient === true),
    origin: 'libvirt-metadata',
  };
}
