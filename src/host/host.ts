import type { NetdevName, PciAddress, VfIndex, VfLinkChange, VfLinkConfig } from '../types.js';

/** What `/sys/class/net/PF/device` and the PF's netdev say about a physical function. */
export interface PfInfo {
  name: NetdevName;
  address: PciAddress;
  totalVfs: number;
  numVfs: number;
  driver: string | null;
  /** IFF_UP: VF settings made through a down PF are lost by some drivers. */
  up: boolean;
  /** `sriov_drivers_autoprobe`: whether new VFs get their host driver (and a netdev) at once. */
  autoprobe: boolean;
}

/** One VF as sysfs shows it through the PF's `virtfnN` link. */
export interface VfInfo {
  index: VfIndex;
  address: PciAddress;
  netdev: NetdevName | null;
  driver: string | null;
  iommuGroup: string | null;
}

// The VF link settings are shared with config/ and state/, so they live in src/types.ts.
export type { LinkState, VfLinkChange, VfLinkConfig } from '../types.js';

/**
 * The one door to the machine. `LinuxHost` talks to sysfs and iproute2; `SimHost` keeps a
 * simulated kernel in a JSON file. Both implement this interface and pass the same behavioural
 * suite (test/host/host-suite.ts), so they cannot drift.
 *
 * Methods are thin: they do one kernel operation and report kernel errors with their errno in
 * `HostError.code`. Policy (in-use guards, ordering, rollback) lives above, in src/pool.
 */
export interface Host {
  readonly kind: 'linux' | 'sim';
  /**
   * This boot of the machine (`/proc/sys/kernel/random/boot_id`, new at every boot), or null
   * when there is none to read. Synchronous: the state store asks it at every read.
   */
  bootId(): string | null;
  /** Netdevs with an SR-IOV capability (a `device/sriov_totalvfs` file). */
  listPfs(): Promise<NetdevName[]>;
  /** Throws HostError ENOENT if there is no such netdev, ENOTSUP if it is not an SR-IOV PF. */
  getPf(pf: NetdevName): Promise<PfInfo>;
  /** The PF's VFs in index order, from its `virtfnN` links. */
  listVfs(pf: NetdevName): Promise<VfInfo[]>;
  /** The PCI device behind a netdev (`/sys/class/net/DEV/device`), or null if it has none. */
  netdevDevice(netdev: NetdevName): Promise<PciAddress | null>;
  /** The PF netdev a VF belongs to (its `physfn` link), or null if the device is not a VF. */
  physfnOf(dev: PciAddress): Promise<NetdevName | null>;
  /** One write to `sriov_numvfs`: the kernel's EBUSY/ERANGE/ENOSPC come back as HostError codes. */
  writeNumVfs(pf: NetdevName, count: number): Promise<void>;
  getVfLinks(pf: NetdevName): Promise<Map<number, VfLinkConfig>>;
  setVfLink(pf: NetdevName, vf: VfIndex, change: VfLinkChange): Promise<void>;
  getMtu(netdev: NetdevName): Promise<number>;
  setMtu(netdev: NetdevName, mtu: number): Promise<void>;
  /**
   * Binds the device to `driver` through `driver_override`, unbind and `drivers_probe`
   * (libvirt's virPCIDeviceBindToStub order), or leaves it driverless for `null`.
   * Clears `driver_override` when binding back to a host driver so later probes are normal.
   */
  bindDriver(dev: PciAddress, driver: string | null): Promise<void>;
  /**
   * Every netdev that has devices stacked on it (its `upper_*` links in /sys/class/net/DEV: a
   * macvtap of a guest's `<interface type='direct'>`, a bridge or bond it is a port of, a VLAN
   * device), with their names, from one pass: the in-use guard asks about every VF of a pool.
   */
  stackedDevices(): Promise<Map<NetdevName, string[]>>;
  /** Pids that hold `/dev/vfio/GROUP` open. */
  vfioGroupHolders(group: string): Promise<number[]>;
  /**
   * Every held `/dev/vfio/GROUP`, by group, from one pass over /proc: the in-use guard asks
   * about every VF of a pool, and a pass per VF would scan every fd of every process N times.
   */
  vfioHolders(): Promise<Map<string, number[]>>;
  /** Hands `/dev/vfio/GROUP` to the user QEMU runs as. */
  setVfioGroupOwner(group: string, uid: number, gid: number): Promise<void>;
  getVfioGroupOwner(group: string): Promise<{ uid: number; gid: number } | null>;
  /**
   * Every PCI device in an IOMMU group (`/sys/kernel/iommu_groups/GROUP/devices`) with its
   * driver: vfio can hand a group to a guest only when none of them is bound to a host driver.
   */
  iommuGroupDevices(group: string): Promise<Array<{ address: PciAddress; driver: string | null }>>;
}
