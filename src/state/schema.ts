import type { MacAddress, NetdevName, PciAddress, PoolMode, VfLinkChange, VfLinkConfig } from '../types.js';
import type { VfSettings } from '../vf-settings.js';

/**
 * The schema of `$VFPOOL_STATE_DIR/state.json`: what vfpool holds, in the current version.
 * Files of older versions are upgraded on read by `normaliseState` (src/state/normalise.ts), so
 * every field here is present: callers never patch around a field that came later.
 */
export const STATE_VERSION = 2;

/** A pool that is running: its definition is kept so a libvirt-carried pool can be stopped later. */
export interface ActivePool {
  /** The XML it was started from (a definition file, or the libvirt network with metadata). */
  xml: string;
  origin: 'definition' | 'libvirt-metadata';
  startedAt: string;
  /** PFs whose VF count vfpool set, and to what: only these are removed at stop. */
  activated: Array<{ pf: NetdevName; numVfs: number }>;
  /**
   * The PCI address of every PF the start drew from, under the name it had then (the name used
   * in `activated`, `bound`, `change`): a PF renamed since is found by it, and a netdev that
   * took the name is not taken for it. Absent in records written before it was kept (then the
   * names are all there is).
   */
  pfAddresses?: Array<{ pf: NetdevName; address: PciAddress }>;
  /**
   * Set while a start or stop changes VF counts (outside the state lock, which is held only to
   * record this intent): guests of these PFs are refused meanwhile, and a process killed
   * mid-way leaves it for `vfpool reconcile` / the next start or stop, which undo the start
   * (back to `from`) or finish the stop. null when the pool is settled.
   */
  change: PoolChange | null;
  /**
   * The VFs that existed before the start and that it bound to vfio-pci (`managed='yes'`), with
   * what they had: the stop gives them back their driver (VFs the start created are removed
   * instead). Recorded with the intent, before the first bind.
   */
  bound: BoundVf[];
  /**
   * When libvirt's start of this pool, already running (`vfpool net-start`), was refused. libvirt
   * follows a refused `start begin` with `stopped end` (networkStartNetwork's cleanup), which
   * must not stop what ran before that start; that `stopped end` clears it. null otherwise.
   */
  libvirtStartRefused: string | null;
}

export interface BoundVf {
  pf: NetdevName;
  vf: PciAddress;
  /** Its driver before (null: none bound). */
  driver: string | null;
  /** Its netdev before (it has none on vfio-pci): how an `<interface dev>` member is still found. */
  netdev: NetdevName | null;
}

export interface PoolChange {
  kind: 'starting' | 'stopping';
  /** The vfpool process making the change. */
  worker: number;
  /** Its start time (/proc/PID/stat), as an allocation's `workerStart`. */
  workerStart?: number | null;
  since: string;
  /** The PFs being changed and their VF count before the change. */
  from: Array<{ pf: NetdevName; numVfs: number }>;
}

/** What a VF looked like before vfpool touched it: restored at release. */
export interface SavedVfConfig {
  /** Everything the PF reports for the VF (admin MAC, VLAN, qos, spoofchk, trust, link-state, rates). */
  link: VfLinkConfig;
  /** The VF's driver (null: none bound). */
  driver: string | null;
  /** The VF netdev's MTU, if it had a netdev. */
  mtu: number | null;
  netdev: NetdevName | null;
}

/** What vfpool changed on the VF (only these are put back at release). */
export interface AppliedVfConfig {
  link: VfLinkChange;
  mtu: number | null;
  driver: string | null;
}

export interface AllocationOwner {
  domain: string;
  uuid: string | null;
  /** QEMU's pid once known (start/started/reconnect); until then the domain counts as running. */
  pid: number | null;
  /**
   * When that process started (/proc/PID/stat's starttime, clock ticks since boot), recorded
   * with the pid: a pid is reused once its process is gone (pid_max wraps), and another
   * process given it must not pin the VF. Absent or null: recorded before it was kept (the pid
   * alone then), or /proc did not say.
   */
  pidStart?: number | null;
  /** Who prepared it: libvirt's qemu hook, or `vfpool prepare` (no libvirt pid file to check). */
  via: 'libvirt' | 'cli';
  /**
   * The libvirt daemon whose qemu hook prepared it (the hook's parent pid). libvirt runs one
   * start of a domain at a time, so once that daemon is gone a pid-less record is an interrupted
   * start, not one still going (absent: `vfpool prepare`, or recorded before the field existed).
   */
  daemon?: number | null;
  /**
   * That daemon's start time (as pidStart): a daemon that is gone may leave its pid to another
   * process, which must not keep a pid-less record waiting out the grace. Absent or null:
   * recorded before it was kept (the pid alone then), or /proc did not say.
   */
  daemonStart?: number | null;
}

/**
 * `preparing` while being configured; `ready` once everything was set and read back;
 * `releasing` once a restore began. (Migration will add its own phases here; until it exists,
 * a phase this vfpool cannot act on is refused on read rather than guessed at.)
 */
export const ALLOCATION_PHASES = ['preparing', 'ready', 'releasing'] as const;
export type AllocationPhase = (typeof ALLOCATION_PHASES)[number];

export interface VfioOwnerRecord {
  /** The owner of `/dev/vfio/GROUP` before vfpool handed it over (null: the node did not exist). */
  saved: { uid: number; gid: number } | null;
  granted: { uid: number; gid: number };
}

/** One VF handed to one guest. Written before the first change to the VF, deleted after restore. */
export interface Allocation {
  pool: string | null;
  /** The pool's forward mode (`hostdev` for a request that names a device): vfio or host netdev. */
  mode: PoolMode;
  pf: NetdevName;
  vfIndex: number;
  vfAddr: PciAddress;
  /** The VF's host netdev (what a `passthrough` pool hands out for macvtap); null on vfio-pci. */
  netdev: NetdevName | null;
  iommuGroup: string | null;
  owner: AllocationOwner;
  mac: MacAddress | null;
  vlan: number | null;
  /** The device id in the guest (`vfpool-vfN`), for the QEMU arguments. */
  alias: string;
  /** For a pci-passthrough-hybrid `<interface>`: the virtio-net NIC (by MAC) it partners. */
  pairedMac: MacAddress | null;
  phase: AllocationPhase;
  /** The vfpool process configuring or restoring it right now (others leave it alone while it lives). */
  worker: number | null;
  /**
   * That process's start time (/proc/PID/stat), recorded with it: a vfpool killed mid-way
   * leaves its pid here, and another process given that pid later is not working on anything.
   * Absent or null in records written before it was kept (the pid alone then). Meaningful only
   * with `worker`.
   */
  workerStart?: number | null;
  saved: SavedVfConfig | null;
  /** What vfpool changed; null exactly when `saved` is (nothing was taken from the VF yet). */
  applied: AppliedVfConfig | null;
  /** `/dev/vfio/GROUP` handed to QEMU's user at `start`, and its owner before. */
  vfioOwner: VfioOwnerRecord | null;
  /** Guest-side PCI slot on its own root port, stable across boots. */
  guestSlot: number | null;
  /** What the request asked for by name (seed 001 step 2): checked again on later starts. */
  requestedNetdev: NetdevName | null;
  /**
   * The settings the request asked for (VLAN, qos, spoofchk, …, MTU), as parsed: what a
   * migration asks the destination for. `applied` holds only what was set on the VF, which
   * leaves out a vfio VF's MTU (checked against the PF's, never set). null in records written
   * before it was kept.
   */
  requested: VfSettings | null;
  createdAt: string;
  /**
   * CLOCK_MONOTONIC (ms) when written: the age the grace period measures, which a step of the
   * wall clock (NTP at boot, \`date -s\`) does not change. null in records written before it was kept.
   */
  createdMonoMs: number | null;
  /** Why the last restore failed (phase `releasing`). */
  lastError: string | null;
}

/** Seed 001 step 2: the PCI address a `netdev=` request resolved to, checked on later starts. */
export interface NetdevBinding {
  domain: string;
  netdev: NetdevName;
  vfAddr: PciAddress;
  since: string;
}

/** A VF that libvirt's own hostdev network handed out (recorded from `port-created`). */
export interface PortRecord {
  network: string;
  portUuid: string;
  domain: string;
  domainUuid: string | null;
  vfAddr: PciAddress | null;
  netdev: NetdevName | null;
  /** `hostdev-pci` (a VF by address) or `direct` (a netdev for macvtap). */
  plug: 'hostdev-pci' | 'direct';
  mac: MacAddress | null;
  /** null in records upgraded from version 1 files that did not say. */
  createdAt: string | null;
  /**
   * CLOCK_MONOTONIC (ms) when written: the age the grace period measures, which a step of the
   * wall clock (NTP at boot, \`date -s\`) does not change. null in records written before it was kept.
   */
  createdMonoMs: number | null;
  /**
   * The domain's QEMU pid, learnt at the qemu hook's `started`/`reconnect`: once known, the
   * record pins its VF exactly while that process lives (libvirt sends no `port-deleted` for a
   * network that is no longer active, nor after a daemon crash). null until then.
   */
  pid: number | null;
  /** That process's start time, as an allocation owner's `pidStart`. */
  pidStart?: number | null;
}

export interface VfpoolState {
  version: typeof STATE_VERSION;
  pools: Record<string, ActivePool>;
  allocations: Allocation[];
  ports: PortRecord[];
  /** netdev= resolutions kept across releases. */
  bindings: NetdevBinding[];
  /** VFs a stopped pool left because they were in use (libvirt's `stopped end` cannot refuse). */
  leftovers: LeftoverVfs[];
  /**
   * The host's boot (the kernel's boot_id) when this was written: a file of an earlier boot (a
   * state directory on persistent storage) describes VFs, pools and QEMUs that ended with it,
   * and is read as empty (StateStore). null: written before it was kept, or no boot id to read.
   */
  boot: string | null;
}

/**
 * A PF whose VFs vfpool created for a pool that libvirt stopped while a guest used one of them:
 * `vfpool reconcile` removes them once none is in use (or forgets them once another pool starts
 * on the PF: they are that pool's then).
 */
export interface LeftoverVfs {
  pool: string;
  pf: NetdevName;
  /** The PF's PCI address (absent in records written before it was kept): see ActivePool.pfAddresses. */
  pfAddr?: PciAddress;
  since: string;
}

export function emptyState(): VfpoolState {
  // Pool names are user input: a plain object would find `constructor` or `toString` in every
  // state, so `pools` never has a prototype (see normalise.ts, which builds it the same way).
  return { version: STATE_VERSION, pools: Object.create(null) as VfpoolState['pools'], allocations: [], ports: [], bindings: [], leftovers: [], boot: null };
}
