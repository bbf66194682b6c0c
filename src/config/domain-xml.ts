import { BadInputError } from '../errors.js';
import {
  parseGuestMac,
  parseNetdevName,
  parseObjectName,
  parsePciAddress,
  pciAddressFromParts,
  type MacAddress,
  type NetdevName,
  type PciAddress,
} from '../types.js';
import { MAX_SRIOV_NIC_VFS, validateBackend } from '../sriov-nic-settings.js';
import { attr, child, children, findNsElement, misnamedNsElement, parseXml, text, VFPOOL_NS, type XmlElement } from '../util/xml.js';
import { escapeControl, quoteInput } from '../util/quote.js';
import { parseVfSettings, VF_SETTING_KEYS, VF_SETTINGS, type VfSettings } from '../vf-settings.js';

/**
 * A libvirt domain as vfpool needs it, parsed once at the boundary (the hook's stdin, or
 * `vfpool prepare --xml FILE`). Nothing downstream sees parser output.
 *
 * Two ways to ask for a VF (DESIGN.md "Guests"):
 * - `<metadata><vfpool:domain><vfpool:hostdev pool=|netdev=|address= mac=…/>` (seed 001 steps 3, 2, 1);
 * - `<interface type='network'><source network='X'/>` where X is a vfpool pool: which of those
 *   become requests depends on the pool's mode, so they are kept here as `networkInterfaces`
 *   and turned into requests by `domainRequests()` (src/pool/requests.ts) once the pools are known.
 */
export interface DomainSpec {
  name: string;
  uuid: string | null;
  /** `<vfpool:hostdev>` elements in document order. */
  hostdevs: HostdevRequest[];
  /** Every `<interface type='network'>`, in device order. */
  networkInterfaces: NetworkInterface[];
  /** The MAC of every `<interface>` of any type: no two NICs of a domain may share one. */
  interfaceMacs: Array<{ field: string; mac: MacAddress; /** `<teaming type>`: libvirt's own failover pair shares one MAC by design. */ teaming?: string | null }>;
  /**
   * PCI devices the domain's own XML assigns through libvirt (`<hostdev type='pci'>`,
   * `<interface type='hostdev'>`): libvirt detaches and assigns them itself, so vfpool must not
   * hand one of them to the same guest a second time. Absent in a spec vfpool builds itself.
   */
  libvirtPciDevices?: Array<{ field: string; address: PciAddress }>;
  /**
   * Host netdevs the domain's `<interface type='direct'>` put macvtap on (`<source dev>`): a VF
   * among them must keep its host driver, so vfpool must not take it for the same guest.
   */
  libvirtDirectNetdevs?: Array<{ field: string; netdev: NetdevName }>;
  /** The DAC label QEMU runs under (`<seclabel model='dac'><label>+64055:+64055</label>`), once libvirt filled it in. */
  dacLabel: DacLabel | null;
  /** `<vfpool:sriov-nic>` elements in document order (seed 003: emulated virtio-net SR-IOV). */
  sriovNics: SriovNicRequest[];
  /** The guest's maximum memory in KiB (`<memory>`, else `<currentMemory>`): vfio pins all of it. */
  memoryKiB: bigint | null;
  /** `<memtune><hard_limit>` in KiB: libvirt sets QEMU's memlock limit to it. */
  hardLimitKiB: bigint | null;
  /**
   * `<os><type machine='pc-q35-10.0'>` (libvirt fills it in by prepare); null when the XML has
   * none, absent in a spec vfpool builds itself (a migration's, from its description).
   */
  machine?: string | null;
}

/** `<vfpool:sriov-nic vfs='N' backend='user' [backend-options='k=v,…']/>`: needs no VF, only QEMU >= 10.1. */
export interface SriovNicRequest {
  field: string;
  vfs: number;
  backend: string;
  backendOptions: string | null;
}

/** Settings a request may ask for; `null` = leave as the VF has it (defined in src/vf-settings.ts). */
export type { VfSettings } from '../vf-settings.js';

export interface HostdevRequest extends VfSettings {
  /** "vfpool:hostdev #2": how messages name the element. */
  field: string;
  pool: string | null;
  netdev: NetdevName | null;
  address: PciAddress | null;
  mac: MacAddress;
  /** `guest-slot='0x1a'`: the slot of the guest's root bus the VF (its root port, on q35) is pinned to. */
  guestSlot: number | null;
}

export interface NetworkInterface {
  field: string;
  network: string;
  mac: MacAddress | null;
  /**
   * The `<vlan>` and `<mtu>` a VF partner would take, or why they cannot be set on a VF. Only an
   * interface on a pci-passthrough-hybrid pool gets a VF (requests.ts throws `error` then); any
   * other is libvirt's (an Open vSwitch trunk, say) and must not fail the domain.
   */
  vfSettings: { vlan: number | null; mtu: number | null } | { error: BadInputError };
  /** `<model type='virtio'/>`; null: none given (libvirt's default for x86 is not virtio). */
  model: string | null;
  /** `<teaming type='persistent'/>`: libvirt's own failover, whose primary is another interface. */
  teaming?: string | null;
}

/** `user:group` as libvirt writes it: `+64055:+64055` (numeric) or names. */
export interface DacLabel {
  user: { uid: number } | { name: string };
  group: { gid: number } | { name: string };
}

const HOSTDEV_ATTRS = new Set(['pool', 'netdev', 'address', 'mac', 'guest-slot', ...VF_SETTING_KEYS.map((k) => VF_SETTINGS[k].attr)]);
const SRIOV_NIC_ATTRS = new Set(['vfs', 'backend', 'backend-options']);
/** Children of `<vfpool:domain>` that other parts of vfpool read (seed 003's emulated SR-IOV NIC). */
const OTHER_VFPOOL_ELEMENTS = new Set(['sriov-nic']);

function intIn(raw: string, field: string, what: string, min: number, max: number, hint?: string): number {
  if (!/^[0-9]+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max) {
    throw new BadInputError(`${field}: ${what}=${quoteInput(raw)} is not a whole number from ${min} to ${max}`, hint);
  }
  return Number(raw);
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
    guestSlot: parseGuestSlot(attr(el, 'guest-slot'), field),
    ...parseVfSettings((name) => attr(el, name), field),
  };
}

/** A slot of the guest's root PCI bus: 0 is the host bridge, 0x1f the q35 chipset. */
function parseGuestSlot(raw: string | undefined, field: string): number | null {
  if (raw === undefined) return null;
  const n = /^0x[0-9a-f]{1,2}$/i.test(raw) ? parseInt(raw, 16) : /^[0-9]{1,2}$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= 1 && n <= 0x1e)) throw new BadInputError(`${field}: guest-slot='${raw}' is not a slot from 0x1 to 0x1e`, "slot 0 is the host bridge and 0x1f the q35 chipset: pick e.g. guest-slot='0x10'");
  return n;
}

function parseSriovNic(el: XmlElement, field: string): SriovNicRequest {
  for (const key of Object.keys(el)) {
    if (!key.startsWith('@_')) {
      if (key !== '#text') throw new BadInputError(`${field}: unexpected child <${key}>`, 'vfpool:sriov-nic takes attributes only');
      continue;
    }
    if (key.startsWith('@_xmlns')) continue;
    if (!SRIOV_NIC_ATTRS.has(key.slice(2))) throw new BadInputError(`${field}: unknown attribute '${key.slice(2)}'`, `known: ${[...SRIOV_NIC_ATTRS].join(', ')}`);
  }
  const vfs = attr(el, 'vfs');
  if (vfs === undefined) throw new BadInputError(`${field}: has no vfs`, "give the number of VFs, e.g. vfs='3'");
  const backend = attr(el, 'backend') ?? 'user';
  const backendOptions = attr(el, 'backend-options') ?? null;
  validateBackend(backend, backendOptions, field);
  return { field, vfs: intIn(vfs, field, 'vfs', 1, MAX_SRIOV_NIC_VFS, `ARI gives a device 256 functions: the PF and at most ${MAX_SRIOV_NIC_VFS} VFs`), backend, backendOptions };
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

/**
 * An `<interface>`'s `<vlan>` and `<mtu>` as a VF takes them. A VF has one access VLAN: like
 * libvirt for SR-IOV devices (virHostdevNetConfigReplace: "vlan trunking is not supported"),
 * several tags and `trunk='yes'` are refused, since a guest told it has a trunk sends tagged
 * frames that the VF would tag again.
 */
function parseInterfaceVfSettings(ifEl: XmlElement, field: string): NetworkInterface['vfSettings'] {
  try {
    const vlanEl = child(ifEl, 'vlan');
    const tags = children(vlanEl ?? {}, 'tag');
    if (tags.length > 1) throw new BadInputError(`${field}: a VLAN trunk (${tags.length} tags) cannot be set on a VF`, 'give one <tag id>');
    if (tags.length === 1 && attr(vlanEl, 'trunk')?.toLowerCase() === 'yes') {
      const id = attr(tags[0], 'id') ?? '';
      throw new BadInputError(
        `${field}: <vlan trunk='yes'> cannot be set on a VF (it tags the guest's frames itself, one VLAN)`,
        `drop trunk='yes': the guest then sends untagged frames on VLAN ${/^[0-9]{1,4}$/.test(id) ? id : 'N'}`,
      );
    }
    const tagId = attr(tags[0], 'id');
    const mtuSize = attr(child(ifEl, 'mtu'), 'size');
    return {
      vlan: tagId === undefined ? null : intIn(tagId, field, 'vlan tag id', 0, 4095),
      mtu: mtuSize === undefined ? null : intIn(mtuSize, field, 'mtu size', 68, 65535),
    };
  } catch (err) {
    if (err instanceof BadInputError) return { error: err };
    throw err;
  }
}

function parseInterfaces(devices: XmlElement | undefined, where: string): { nets: NetworkInterface[]; macs: DomainSpec['interfaceMacs'] } {
  const nets: NetworkInterface[] = [];
  const macs: DomainSpec['interfaceMacs'] = [];
  children(devices ?? {}, 'interface').forEach((ifEl, i) => {
    const field = `${where}: <interface> #${i + 1}`;
    const macRaw = attr(child(ifEl, 'mac'), 'address');
    const mac = macRaw === undefined ? null : parseGuestMac(macRaw, `${field}: mac address`);
    const teaming = attr(child(ifEl, 'teaming'), 'type') ?? null;
    if (mac) macs.push({ field, mac, teaming });
    if (attr(ifEl, 'type') !== 'network') return;
    const network = attr(child(ifEl, 'source'), 'network');
    if (network === undefined) return;
    nets.push({
      field,
      network: parseObjectName(network, `${field}: source network`),
      mac,
      vfSettings: parseInterfaceVfSettings(ifEl, field),
      model: attr(child(ifEl, 'model'), 'type') ?? null,
      teaming,
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
  const sriovNics: SriovNicRequest[] = [];
  const found = findNsElement(child(domain, 'metadata'), 'domain', [domain]);
  const misnamed = found ? undefined : misnamedNsElement(child(domain, 'metadata'), 'domain', [domain]);
  if (misnamed) {
    throw new BadInputError(`${dwhere}: <metadata> holds <${escapeControl(misnamed.key)}> in namespace ${quoteInput(misnamed.ns)}, not vfpool's ${VFPOOL_NS}, so vfpool would give the domain nothing it asks for`,
      `declare xmlns:vfpool='${VFPOOL_NS}'`);
  }
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
    children(found.el, found.tag('sriov-nic')).forEach((el, i) => sriovNics.push(parseSriovNic(el, `${dwhere}: vfpool:sriov-nic #${i + 1}`)));
  }
  const { nets, macs } = parseInterfaces(child(domain, 'devices'), dwhere);
  const { libvirtPciDevices, libvirtDirectNetdevs } = parseLibvirtOwnDevices(child(domain, 'devices'), dwhere);
  const memoryKiB = parseKiB(child(domain, 'memory'), `${dwhere}: <memory>`) ?? parseKiB(child(domain, 'currentMemory'), `${dwhere}: <currentMemory>`);
  const hardLimitKiB = parseKiB(child(child(domain, 'memtune') ?? {}, 'hard_limit'), `${dwhere}: <memtune><hard_limit>`);
  const machine = attr(child(child(domain, 'os') ?? {}, 'type'), 'machine') ?? null;
  return { name, uuid: uuid?.toLowerCase() ?? null, hostdevs, networkInterfaces: nets, interfaceMacs: macs, dacLabel: parseDacLabel(domain, dwhere), sriovNics, memoryKiB, hardLimitKiB, machine, libvirtPciDevices, libvirtDirectNetdevs };
}

/**
 * The devices the domain's own XML takes through libvirt: the PCI addresses of `<hostdev
 * mode='subsystem' type='pci'>` and `<interface type='hostdev'>` sources, and the netdevs of
 * `<interface type='direct'>` sources. They are libvirt's to validate: one vfpool cannot read
 * (another bus type, a hex or a name libvirt would refuse) is skipped, never a reason to refuse
 * the domain.
 */
function parseLibvirtOwnDevices(
  devices: XmlElement | undefined,
  where: string,
): Required<Pick<DomainSpec, 'libvirtPciDevices' | 'libvirtDirectNetdevs'>> {
  const pci: Array<{ field: string; address: PciAddress }> = [];
  const direct: Array<{ field: string; netdev: NetdevName }> = [];
  const unlessInvalid = (read: () => void) => {
    try {
      read();
    } catch (err) {
      if (!(err instanceof BadInputError)) throw err;
    }
  };
  const addPci = (a: XmlElement | undefined, field: string) => {
    if (a) unlessInvalid(() => pci.push({ field, address: pciAddressFromParts({ domain: attr(a, 'domain'), bus: attr(a, 'bus'), slot: attr(a, 'slot'), function: attr(a, 'function') }, field) }));
  };
  children(devices ?? {}, 'hostdev').forEach((h, i) => {
    if ((attr(h, 'mode') ?? 'subsystem') === 'subsystem' && attr(h, 'type') === 'pci') addPci(child(child(h, 'source') ?? {}, 'address'), `${where}: <hostdev> #${i + 1}`);
  });
  children(devices ?? {}, 'interface').forEach((n, i) => {
    const field = `${where}: <interface> #${i + 1}`;
    const source = child(n, 'source');
    if (attr(n, 'type') === 'hostdev') {
      const a = child(source ?? {}, 'address');
      if (a && (attr(a, 'type') ?? 'pci') === 'pci') addPci(a, field);
    }
    const dev = attr(source, 'dev');
    if (attr(n, 'type') === 'direct' && dev !== undefined) unlessInvalid(() => direct.push({ field, netdev: parseNetdevName(dev, 'source dev') }));
  });
  return { libvirtPciDevices: pci, libvirtDirectNetdevs: direct };
}

const UNIT_KIB: Record<string, bigint> = { b: 0n, bytes: 0n, k: 1n, kib: 1n, kb: 1n, m: 1024n, mib: 1024n, mb: 1024n, g: 1048576n, gib: 1048576n, gb: 1048576n, t: 1073741824n, tib: 1073741824n, tb: 1073741824n };

/** A libvirt size element (`<memory unit='KiB'>131072</memory>`) in KiB (libvirt's default unit). */
function parseKiB(el: XmlElement | undefined, field: string): bigint | null {
  if (el === undefined) return null;
  const raw = (typeof el === 'string' || typeof el === 'number' ? String(el) : text(el, '#text') ?? '').trim();
  const unit = (typeof el === 'object' ? attr(el, 'unit') ?? 'KiB' : 'KiB').toLowerCase();
  if (!/^[0-9]{1,18}$/.test(raw) || !(unit in UNIT_KIB)) throw new BadInputError(`${field}: '${raw}' ${unit} is not a size libvirt writes`, "e.g. <memory unit='KiB'>131072</memory>");
  const n = BigInt(raw);
  return unit === 'b' || unit === 'bytes' ? (n + 1023n) / 1024n : n * UNIT_KIB[unit]!;
}

/**
 * Every MAC the domain's NICs already have: its `<interface>`s' and its vfpool:hostdev VFs'. An
 * emulated SR-IOV NIC's derived MACs avoid them all (two NICs with one MAC on one guest).
 */
export function domainNicMacs(spec: Pick<DomainSpec, 'interfaceMacs' | 'hostdevs'>): MacAddress[] {
  return [...spec.interfaceMacs.map((m) => m.mac), ...spec.hostdevs.map((h) => h.mac)];
}
