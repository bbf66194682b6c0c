import { BadInputError } from '../errors.js';
import { quoteInput } from '../util/quote.js';
import type { DomainSpec } from '../config/domain-xml.js';
import { noVfSettings, type VfSettings } from '../vf-settings.js';
import type { MacAddress, NetdevName, PciAddress, PoolMode } from '../types.js';

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
  /** A guest slot pinned by the metadata (`guest-slot`); null: generated, stable per command line. */
  guestSlot: number | null;
}

/** What `domainRequests` needs to know about a pool: whether it exists, and its mode. */
export type PoolModeLookup = (name: string) => PoolMode | undefined;

/**
 * The VFs a domain needs, in a fixed order that gives each its guest-side slot: the
 * `<vfpool:hostdev>` elements in document order, then the `<interface type='network'>` on
 * pci-passthrough-hybrid pools in device order. An interface on a vfpool pool of another mode
 * is libvirt's own business (its hostdev/passthrough network hands out the VF, and the network
 * hook records it at port-created), so it is not a request. Pure: pools come from `poolMode`.
 *
 * Validation (one line each, exit 2): an unknown pool; vfpool:hostdev on a passthrough pool; a
 * MAC used twice in the domain.
 */
export function domainRequests(spec: DomainSpec, poolMode: PoolModeLookup): VfRequest[] {
  const requests: VfRequest[] = [];
  for (const h of spec.hostdevs) {
    const mode = h.pool === null ? undefined : poolMode(h.pool);
    if (h.pool !== null && mode === undefined) {
      throw new BadInputError(`${h.field}: unknown pool '${h.pool}'`, 'define it with `vfpool net-define FILE`, or start the libvirt network that carries it');
    }
    // vfpool:hostdev gives QEMU a PCI device; a passthrough pool's VF reaches a guest as macvtap
    // on its host netdev, which libvirt makes for an <interface>, and vfpool has no way to.
    if (mode === 'passthrough') {
      throw new BadInputError(
        `${h.field}: pool '${h.pool}' is a passthrough (macvtap) pool, whose VFs reach a guest as a host netdev, not as the PCI device vfpool:hostdev gives QEMU`,
        `use <interface type='network'><source network='${h.pool}'/></interface> on libvirt's passthrough network of that name, or name a hostdev or pci-passthrough-hybrid pool`,
      );
    }
    const { field, pool, netdev, address, mac, ...settings } = h;
    requests.push({ index: requests.length, field, source: 'metadata', pool, netdev, address, mac, pairedMac: null, ...settings });
  }
  for (const n of spec.networkInterfaces) {
    if (poolMode(n.network) !== 'pci-passthrough-hybrid') continue;
    if ('error' in n.vfSettings) throw n.vfSettings.error;
    if (n.teaming != null) {
      // libvirt pairs this virtio-net with a primary of its own (another interface's
      // <teaming type='transient'>): a second primary for one standby QEMU refuses.
      throw new BadInputError(
        `${n.field}: has libvirt's own <teaming type=${quoteInput(n.teaming)}/>, and on pool '${n.network}' (pci-passthrough-hybrid) vfpool gives it its failover primary: QEMU allows one primary per standby`,
        "drop the <teaming> elements: the pool's VF partner is the primary",
      );
    }
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
      guestSlot: null,
      ...noVfSettings(),
      vlan: n.vfSettings.vlan,
      mtu: n.vfSettings.mtu,
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
  // libvirt's own failover pair is one NIC to the guest: the transient primary
  // (<teaming type='transient' persistent='…'/>) carries its standby's MAC, as net_failover needs.
  for (const m of spec.interfaceMacs) if (m.teaming !== 'transient') claim(m.mac, m.field);
  for (const r of requests) if (r.source === 'metadata') claim(r.mac, r.field);
  return requests;
}
