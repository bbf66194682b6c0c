import { BadInputError, HostError } from './errors.js';
import { quoteInput } from './util/quote.js';

/**
 * Branded identifiers: a PCI address, a MAC and a VF index are all strings or numbers, and
 * mixing them up is exactly the bug that hands the wrong VF to a guest. Values of these types
 * only come out of the parse functions below, which validate before anything uses them
 * (they end up in sysfs paths and in `ip` argv).
 */
declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

export type PciAddress = Brand<string, 'PciAddress'>;
export type MacAddress = Brand<string, 'MacAddress'>;
export type VfIndex = Brand<number, 'VfIndex'>;
/** A kernel network interface name: what may safely stand in a sysfs path. */
export type NetdevName = Brand<string, 'NetdevName'>;

const PCI_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
// What vfpool accepts from XML: a subset of the kernel's dev_valid_name() (at most 15 bytes,
// not "." or "..", no '/', ':' or whitespace) that is safe in paths and argv without quoting.
const NETDEV_RE = /^[A-Za-z0-9_.@+-]{1,15}$/;

export function parsePciAddress(value: string, field = 'address'): PciAddress {
  const v = value.trim().toLowerCase();
  if (!PCI_RE.test(v)) {
    throw new BadInputError(`${field} ${quoteInput(value)} is not a PCI address`, "write it as DDDD:BB:SS.F, e.g. '0000:3b:02.0'");
  }
  return v as PciAddress;
}

/** libvirt's `<address type='pci' domain='0x0000' bus='0x06' slot='0x02' function='0x0'/>`. */
export function pciAddressFromParts(parts: { domain?: string; bus?: string; slot?: string; function?: string }, field = 'address'): PciAddress {
  const num = (name: string, raw: string | undefined, max: number, dflt?: number): number => {
    if (raw === undefined) {
      if (dflt !== undefined) return dflt;
      throw new BadInputError(`${field}: attribute '${name}' is missing`, `give ${name}='0x..'`);
    }
    // libvirt reads these with strtoul's base 0 (virPCIDeviceAddressParseXML): 0x is hex, a
    // leading 0 octal (bus='010' is bus 8 to libvirt), and '08' no number at all.
    if (/^0[0-9]+$/.test(raw) && !/^0[0-7]+$/.test(raw)) {
      throw new BadInputError(`${field}: ${name}=${quoteInput(raw)} is not a number libvirt reads: a leading 0 makes it octal`, `write it in hex (${name}='0x${parseInt(raw, 10).toString(16)}') or without the leading 0`);
    }
    const n = /^0x[0-9a-f]+$/i.test(raw) ? parseInt(raw, 16) : /^0[0-7]+$/.test(raw) ? parseInt(raw, 8) : /^[0-9]+$/.test(raw) ? parseInt(raw, 10) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > max) {
      throw new BadInputError(`${field}: ${name}=${quoteInput(raw)} is not a number from 0 to 0x${max.toString(16)}`);
    }
    return n;
  };
  const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
  const d = num('domain', parts.domain, 0xffff, 0);
  const b = num('bus', parts.bus, 0xff);
  const s = num('slot', parts.slot, 0x1f);
  const f = num('function', parts.function, 7, 0);
  return `${hex(d, 4)}:${hex(b, 2)}:${hex(s, 2)}.${f}` as PciAddress;
}

export function parseMac(value: string, field = 'mac'): MacAddress {
  const v = value.trim().toLowerCase();
  if (!MAC_RE.test(v)) {
    throw new BadInputError(`${field} ${quoteInput(value)} is not a MAC address`, "write six hex bytes, e.g. '52:54:00:11:22:33'");
  }
  return v as MacAddress;
}

/** A MAC a guest may be given: unicast and not all zeros (the kernel refuses both for a VF). */
export function parseGuestMac(value: string, field = 'mac'): MacAddress {
  const mac = parseMac(value, field);
  if (mac === '00:00:00:00:00:00') {
    throw new BadInputError(`${field} ${quoteInput(value)} is the zero MAC`, "pick a unicast address, e.g. '52:54:00:xx:xx:xx'");
  }
  if (parseInt(mac.slice(0, 2), 16) & 1) {
    throw new BadInputError(`${field} ${quoteInput(value)} is a multicast MAC (low bit of the first byte set)`, "pick a unicast address, e.g. '52:54:00:xx:xx:xx'");
  }
  return mac;
}

/** For values read back from the kernel, which are trusted but still normalised. */
export function macFromKernel(value: string): MacAddress {
  return value.toLowerCase() as MacAddress;
}

/**
 * A name the kernel reported (a readdir of sysfs): the kernel's own rule is enough, since udev
 * may give legal names outside the set accepted from XML. Still never a path component escape.
 */
export function netdevFromKernel(value: string): NetdevName {
  if (value === '' || value === '.' || value === '..' || value.includes('/')) {
    throw new HostError(`the kernel reported a network interface named ${quoteInput(value)}`, { code: 'EINVAL' });
  }
  return value as NetdevName;
}

export function parseNetdevName(value: string, field = 'dev'): NetdevName {
  if (!NETDEV_RE.test(value) || value === '.' || value === '..') {
    throw new BadInputError(`${field} ${quoteInput(value)} is not a valid network interface name`, 'use 1-15 characters from A-Z a-z 0-9 _ . - + @');
  }
  return value as NetdevName;
}

/**
 * libvirt object names (networks, domains) also name files in our state: keep them path-safe.
 * Not starting with '.' (hidden files, '..') nor '-': `vfpool net-undefine -x` reads it as an
 * option, so such a pool could be defined but never named on the command line again.
 */
const OBJECT_NAME_RE = /^[A-Za-z0-9_+][A-Za-z0-9_.+:-]{0,127}$/;
/** Whether vfpool can use `value` as a name (in a file name, its state): parseObjectName's rule, as a test. */
export function isObjectName(value: string): boolean {
  return OBJECT_NAME_RE.test(value);
}

export function parseObjectName(value: string, field: string): string {
  if (!OBJECT_NAME_RE.test(value)) {
    throw new BadInputError(`${field} ${quoteInput(value)} is not a name vfpool accepts`, 'use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters');
  }
  return value;
}

/** How a pool hands its VFs to guests (DESIGN "Pools"): by vfio-pci, or as the VF's host netdev. */
export const POOL_MODES = ['hostdev', 'passthrough', 'pci-passthrough-hybrid'] as const;
export type PoolMode = (typeof POOL_MODES)[number];

export type LinkState = 'auto' | 'enable' | 'disable';

/**
 * A VF's settings as the PF reports them (`ip -d link show PF`, `vfinfo_list`): the admin MAC
 * and the rest live in the PF driver, not in the VF, which is why they are set through the PF.
 * `null` means the driver does not report that setting. (Here, below config/, host/ and state/,
 * because all three speak of it.)
 */
export interface VfLinkConfig {
  mac: MacAddress;
  vlan: number;
  qos: number;
  spoofchk: boolean | null;
  trust: boolean | null;
  linkState: LinkState | null;
  minTxRate: number;
  maxTxRate: number;
}

export type VfLinkChange = Partial<VfLinkConfig>;
