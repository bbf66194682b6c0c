import { BadInputError } from '../errors.js';
import type { LinkState } from '../host/host.js';
import {
  parseGuestMac,
  parseNetdevName,
  parseObjectName,
  parsePciAddress,
  type MacAddress,
  type NetdevName,
  type PciAddress,
} from '../types.js';
import { attr, child, children, findNsElement, parseXml, text, type XmlElement } from '../util/xml.js';
import { escapeControl, quoteInput } from '../util/quote.js';

/**
 * A libvirt domain as vfpool needs it, parsed once at the boundary (the hook's stdin, or
 * `vfpool prepare --xml FILE`). Nothing downstream sees parser output.
 *
 * Two ways to ask for a VF (DESIGN.md "Guests"):
 * - `<metadata><vfpool:domain><vfpool:hostdev pool=|netdev=|address= mac=…/>` (seed 001 steps 3, 2, 1);
 * - `<interface type='network'><source network='X'/>` where X is a vfpool pool: which of those
 *   become requests depends on the pool's mode, so they are kept here as `networkInterfaces`
 *   and turned into requests by `domainRequests()` once the pools are known.
 */
export interface DomainSpec {
  name: string;
  uuid: string | null;
  /** `<vfpool:hostdev>` elements in document order. */
  hostdevs: HostdevRequest[];
  /** Every `<interface type='network'>`, in device order. */
  networkInterfaces: NetworkInterface[];
  /** The MAC of every `<interface>` of any type: no two NICs of a domain may share one. */
  interfaceMacs: Array<{ field: string; mac: MacAddress }>;
  /** The DAC label QEMU runs under (`<seclabel model='dac'><label>+64055:+64055</label>`), once libvirt filled it in. */
  dacLabel: DacLabel | null;
}

/** Settings a request may ask for; `null` = leave as the VF has it. */
export interface VfSettings {
  vlan: number | null;
  qos: number | null;
  spoofchk: boolean | null;
  trust: boolean | null;
  linkState: LinkState | null;
  minTxRate: number | null;
  maxTxRate: number | null;
  mtu: number | null;
}

export interface HostdevRequest extends VfSettings {
  /** "vfpool:hostdev #2": how messages name the element. */
  field: string;
  pool: string | null;
  netdev: NetdevName | null;
  address: PciAddress | null;
  mac: MacAddress;
}

export interface NetworkInterface {
  field: string;
  network: string;
  mac: MacAddress | null;
  vlan: number | null;
  mtu: number | null;
}

/** `user:group` as libvirt writes it: `+64055:+64055` (numeric) or names. */
export interface DacLabel {
  user: { uid: number } | { name: string };
  group: { gid: number } | { name: string };
}

/** One VF the domain needs, whatever way it asked. `index` fixes its guest-side slot. */
export interface VfRequest extends VfSettings {
  index: number;
  field: string;
  source: 'metadata' | 'interface';
  pool: string | null;
  netdev: NetdevName | null;
  address: PciAddress | null;
  mac: MacAddress;
  /** For an `<interface>` on a pci-passthrough-hybrid pool: the virtio-net NIC it partners (same MAC). */
  pairedMac: MacAddress | null;
}

const HOSTDEV_ATTRS = new Set([
  'pool', 'netdev', 'address', 'mac', 'vlan', 'qos', 'spoofchk', 'trust', 'link-state', 'min-tx-rate', 'max-tx-rate', 'mtu',
]);
/** Children of `<vfpool:domain>` that other parts of vfpool read (seed 003's emulated SR-IOV NIC). */
const OTHER_VFPOOL_ELEMENTS = new Set(['sriov-nic']);

function intIn(raw: string, field: string, what: string, min: number, max: number, hint?: string): number {
  if (!/^[0-9]+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max) {
    throw new BadInputError(`${field}: ${what}=${quoteInput(raw)} is not a whole number from ${min} to ${max}`, hint);
  }
  return Number(raw);
}

function onOff(raw: string, field: string, what: string): boolean {
  if (raw === 'on' || raw === 'yes') return true;
  if (raw === 'off' || raw === 'no') return false;
  throw new BadInputError(`${field}: ${what}=${quoteInput(raw)} must be 'on' or 'off' ('yes'/'no' also accepted)`);
}

function parseLinkState(raw: string, field: string): LinkState {
  if (raw === 'auto' || raw === 'enable' || raw === 'disable') return raw;
  throw new BadInputError(`${field}: link-state=${quoteInput(raw)} must be 'auto', 'enable' or 'disable'`);
}

function parseSettings(el: XmlElement, field: string): VfSettings {
  const get = (n: string) => attr(el, n);
  const vlan = get('vlan');
  const qos = get('qos');
  const mtu = get('mtu');
  const min = get('min-tx-rate');
  const max = get('max-tx-rate');
  const s: VfSettings = {
    vlan: vlan === undefined ? null : intIn(vlan, field, 'vlan', 0, 4095, 'a VLAN id is 0 (none) to 4095'),
    qos: qos === undefined ? null : intIn(qos, field, 'qos', 0, 7, 'qos is the 802.1p priority, 0 to 7'),
    spoofchk: get('spoofchk') === undefined ? null : onOff(get('spoofchk')!, field, 'spoofchk'),
    trust: get('trust') === undefined ? null : onOff(get('trust')!, field, 'trust'),
    linkState: get('link-state') === undefined ? null : parseLinkState(get('link-state')!, field),
    minTxRate: min === undefined ? null : intIn(min, field, 'min-tx-rate', 0, 1_000_000, 'rates are in Mbit/s'),
    maxTxRate: max === undefined ? null : intIn(max, field, 'max-tx-rate', 0, 1_000_000, 'rates are in Mbit/s'),
    mtu: mtu === undefined ? null : intIn(mtu, field, 'mtu', 68, 65535),
  };
  if (s.qos !== null && s.vlan === null) {
    throw new BadInputError(`${field}: qos='${s.qos}' needs a vlan`, "the kernel sets the priority together with the VLAN: add vlan='…'");
  }
  if (s.minTxRate !== null && s.maxTxRate !== null && s.maxTxRate !== 0 && s.minTxRate > s.maxTxRate) {
    throw new BadInputError(`${field}: min-tx-rate='${s.minTxRate}' is above max-tx-rate='${s.maxTxRate}'`);
  }
  return s;
}

function parseHostdev(el: XmlElement, field: string): HostdevRequest {
  for (const key of Object.keys(el)) {
    if (!key.startsWith('@_') || key.startsWith('@_xmlns')) {
      if (!key.startsWith('@_') && key !== '#text') throw new BadInputError(`${field}: unexpected child <${escapeControl(key)}>`, 'vfpool:hostdev takes attributes only');
      continue;
    }
    const name = key.slice(2);
    if (!HOSTDEV_ATTRS.has(name)) {
      throw new BadInputError(`${field}: unknown attribute ${quoteInput(name)}`, `known: ${[...HOSTDEV_ATTRS].join(', ')}`);
    }
  }
  const pool = attr(el, 'pool');
  const netdev = attr(el, 'netdev');
  const address = attr(el, 'address');
  const mac = attr(el, 'mac');
  if (pool === undefined && netdev === undefined && address === undefined) {
    throw new BadInputError(`${field}: names no VF`, "give pool='POOL' (any free VF of it), netdev='ethN' or address='DDDD:BB:SS.F'");
  }
  if (mac === undefined) {
    throw new BadInputError(`${field}: has no mac`, "add mac='52:54:00:…': a pinned MAC is what keeps the guest's NIC the same on every boot");
  }
  return {
    field,
    pool: pool === undefined ? null : parseObjectName(pool, `${field}: pool`),
    netdev: netdev === undefined ? null : parseNetdevName(netdev, `${field}: netdev`),
    address: address === undefined ? null : parsePciAddress(address, `${field}: address`),
    mac: parseGuestMac(mac, `${field}: mac`),
    ...parseSettings(el, field),
  };
}

function parseDacLabel(domain: XmlElement, where: string): DacLabel | null {
  for (const sl of children(domain, 'seclabel')) {
    if (attr(sl, 'model') !== 'dac') continue;
    const raw = text(child(sl, 'label'), '#text');
    if (raw === undefined || raw === '') return null;
    const m = /^([^:]+):([^:]+)$/.exec(raw.trim());
    if (!m) throw new BadInputError(`${where}: DAC label ${quoteInput(raw)} is not USER:GROUP`);
    const part = (s: string, kind: 'user' | 'group') => {
      const num = /^\+?([0-9]+)$/.exec(s);
      if (num) return kind === 'user' ? { uid: Number(num[1]) } : { gid: Number(num[1]) };
      if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(s)) throw new BadInputError(`${where}: DAC label ${kind} ${quoteInput(s)} is not a name or +NUMBER`);
      return { name: s };
    };
    return { user: part(m[1]!, 'user') as DacLabel['user'], group: part(m[2]!, 'group') as DacLabel['group'] };
  }
  return null;
}

function parseInterfaces(devices: XmlElement | undefined, where: string): { nets: NetworkInterface[]; macs: DomainSpec['interfaceMacs'] } {
  const nets: NetworkInterface[] = [];
  const macs: DomainSpec['interfaceMacs'] = [];
  children(devices ?? {}, 'interface').forEach((ifEl, i) => {
    const field = `${where}: <interface> #${i + 1}`;
    const macRaw = attr(child(ifEl, 'mac'), 'address');
    const mac = macRaw === undefined ? null : parseGuestMac(macRaw, `${field}: mac address`);
    if (mac) macs.push({ field, mac });
    if (attr(ifEl, 'type') !== 'network') return;
    const network = attr(child(ifEl, 'source'), 'network');
    if (network === undefined) return;
    const tags = children(child(ifEl, 'vlan') ?? {}, 'tag');
    if (tags.length > 1) throw new BadInputError(`${field}: a VLAN trunk (${tags.length} tags) cannot be set on a VF`, 'give one <tag id>');
    const tagId = attr(tags[0], 'id');
    const mtuSize = attr(child(ifEl, 'mtu'), 'size');
    nets.push({
      field,
      network: parseObjectName(network, `${field}: source network`),
      mac,
      vlan: tagId === undefined ? null : intIn(tagId, field, 'vlan tag id', 0, 4095),
      mtu: mtuSize === undefined ? null : intIn(mtuSize, field, 'mtu size', 68, 65535),
    });
  });
  return { nets, macs };
}

/**
 * Parses libvirt domain XML as libvirt hands it to hooks (`<domain>` with its `<metadata>`
 * kept verbatim, or re-serialised in double quotes) into a DomainSpec. `where` names the input
 * in errors ("domain 'vm1' (prepare begin)"). Every error is one line naming the field and value.
 */
export function parseDomainXml(xml: string, where: string): DomainSpec {
  const doc = parseXml(xml, where);
  const domain = child(doc, 'domain');
  if (!domain) throw new BadInputError(`${where}: no <domain> element`, 'libvirt domain XML starts with <domain type=…>');
  const nameRaw = text(domain, 'name');
  if (nameRaw === undefined || nameRaw === '') throw new BadInputError(`${where}: <domain> has no <name>`);
  const name = parseObjectName(nameRaw, `${where}: domain name`);
  const dwhere = `domain '${name}'`;
  const uuid = text(domain, 'uuid') ?? null;
  if (uuid !== null && !/^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(uuid)) {
    throw new BadInputError(`${dwhere}: <uuid> ${quoteInput(uuid)} is not a UUID`);
  }

  const hostdevs: HostdevRequest[] = [];
  const found = findNsElement(child(domain, 'metadata'), 'domain', [domain]);
  if (found) {
    for (const key of Object.keys(found.el)) {
      if (key.startsWith('@_') || key === '#text') continue;
      const local = key.includes(':') ? key.slice(key.indexOf(':') + 1) : key;
      const prefixOk = key === found.tag(local);
      if (!prefixOk || (local !== 'hostdev' && !OTHER_VFPOOL_ELEMENTS.has(local))) {
        throw new BadInputError(`${dwhere}: unknown element <${escapeControl(key)}> in vfpool:domain`, 'vfpool:domain holds vfpool:hostdev and vfpool:sriov-nic');
      }
    }
    children(found.el, found.tag('hostdev')).forEach((el, i) => hostdevs.push(parseHostdev(el, `${dwhere}: vfpool:hostdev #${i + 1}`)));
  }
  const { nets, macs } = parseInterfaces(child(domain, 'devices'), dwhere);
  return { name, uuid: uuid?.toLowerCase() ?? null, hostdevs, networkInterfaces: nets, interfaceMacs: macs, dacLabel: parseDacLabel(domain, dwhere) };
}

/** What `domainRequests` needs to know about a pool: whether it exists, and its mode. */
export type PoolModeLookup = (name: string) => 'hostdev' | 'passthrough' | 'pci-passthrough-hybrid' | undefined;

/**
 * The VFs a domain needs, in a fixed order that gives each its guest-side slot: the
 * `<vfpool:hostdev>` elements in document order, then the `<interface type='network'>` on
 * pci-passthrough-hybrid pools in device order. An interface on a vfpool pool of another mode
 * is libvirt's own business (its hostdev/passthrough network hands out the VF, and the network
 * hook records it at port-created), so it is not a request. Pure: pools come from `poolMode`.
 *
 * Validation (one line each, exit 2): an unknown pool; a MAC used twice in the domain.
 */
export function domainRequests(spec: DomainSpec, poolMode: PoolModeLookup): VfRequest[] {
  const requests: VfRequest[] = [];
  for (const h of spec.hostdevs) {
    if (h.pool !== null && poolMode(h.pool) === undefined) {
      throw new BadInputError(`${h.field}: unknown pool '${h.pool}'`, 'define it with `vfpool net-define FILE`, or start the libvirt network that carries it');
    }
    const { field, pool, netdev, address, mac, ...settings } = h;
    requests.push({ index: requests.length, field, source: 'metadata', pool, netdev, address, mac, pairedMac: null, ...settings });
  }
  for (const n of spec.networkInterfaces) {
    if (poolMode(n.network) !== 'pci-passthrough-hybrid') continue;
    if (n.mac === null) {
      throw new BadInputError(`${n.field}: has no <mac address>`, 'the VF partner takes the virtio-net NIC\'s MAC: give it one');
    }
    requests.push({
      index: requests.length,
      field: n.field,
      source: 'interface',
      pool: n.network,
      netdev: null,
      address: null,
      mac: n.mac,
      pairedMac: n.mac,
      vlan: n.vlan,
      qos: null,
      spoofchk: null,
      trust: null,
      linkState: null,
      minTxRate: null,
      maxTxRate: null,
      mtu: n.mtu,
    });
  }
  // A MAC twice in one domain: two NICs the guest cannot tell apart. The hybrid partner shares
  // its interface's MAC by design, so each interface MAC is counted once.
  const seen = new Map<string, string>();
  const claim = (mac: string, field: string) => {
    const prev = seen.get(mac);
    if (prev !== undefined) throw new BadInputError(`${field}: mac '${mac}' is already used by ${prev}`, 'give every NIC of the domain its own MAC');
    seen.set(mac, field);
  };
  for (const m of spec.interfaceMacs) claim(m.mac, m.field);
  for (const r of requests) if (r.source === 'metadata') claim(r.mac, r.field);
  return requests;
}
