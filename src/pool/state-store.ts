import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_LOCK, readJsonFile, updateJsonFileLocked, type LockOptions } from '../util/json-file.js';
import type { MacAddress, NetdevName, PciAddress } from '../types.js';
import type { VfLinkChange, VfLinkConfig } from '../host/host.js';
import type { PoolMode } from '../config/pool-xml.js';

/** A pool that is running: its definition is kept so a libvirt-carried pool can be stopped later. */
export interface ActivePool {
  /** The XML it was started from (a definition file, or the libvirt network with metadata). */
  xml: string;
  origin: 'definition' | 'libvirt-metadata';
  startedAt: string;
  /** PFs whose VF count vfpool set, and to what: only these are removed at stop. */
  activated: Array<{ pf: NetdevName; numVfs: number }>;
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
  /** Who prepared it: libvirt's qemu hook, or `vfpool prepare` (no libvirt pid file to check). */
  via?: 'libvirt' | 'cli';
}

/** One VF handed to one guest. Written before the first change to the VF, deleted after restore. */
export interface Allocation {
  pool: string | null;
  /** The pool's forward mode (`hostdev` for a request that names a device): vfio or host netdev. */
  mode?: PoolMode;
  pf: NetdevName;
  vfIndex: number;
  vfAddr: PciAddress;
  /** The VF's host netdev (what a `passthrough` pool hands out for macvtap); null on vfio-pci. */
  netdev: NetdevName | null;
  iommuGroup?: string | null;
  owner: AllocationOwner;
  mac: MacAddress | null;
  vlan: number | null;
  /** The device id in the guest (`vfpool-vfN`), for the QEMU arguments. */
  alias: string;
  /** For a pci-passthrough-hybrid `<interface>`: the virtio-net NIC (by MAC) it partners. */
  pairedMac?: MacAddress | null;
  /** `preparing` while being configured; `ready` once everything was set and read back; `releasing` once a restore began. */
  phase: 'preparing' | 'ready' | 'releasing';
  /** The vfpool process configuring or restoring it right now (others leave it alone while it lives). */
  worker?: number | null;
  saved: SavedVfConfig | null;
  applied?: AppliedVfConfig | null;
  /** `/dev/vfio/GROUP` handed to QEMU's user at `start`, and its owner before. */
  vfioOwner?: { saved: { uid: number; gid: number } | null; granted: { uid: number; gid: number } } | null;
  /** Guest-side PCI slot on its own root port, stable across boots. */
  guestSlot: number | null;
  /** What the request asked for by name (seed 001 step 2): checked again on later starts. */
  requestedNetdev: NetdevName | null;
  createdAt: string;
  /** Why the last restore failed (phase `releasing`). */
  lastError?: string | null;
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
  plug?: 'hostdev-pci' | 'direct';
  mac?: MacAddress | null;
  createdAt?: string;
}

export interface VfpoolState {
  version: 1;
  pools: Record<string, ActivePool>;
  allocations: Allocation[];
  ports: PortRecord[];
  /** netdev= resolutions kept across releases (absent in state files from before they existed). */
  bindings?: NetdevBinding[];
}

export function emptyState(): VfpoolState {
  return { version: 1, pools: {}, allocations: [], ports: [], bindings: [] };
}

/**
 * The runtime state in `$VFPOOL_STATE_DIR` (default /run/vfpool: VFs vanish at reboot, so does
 * this). The only write path is `update(fn)`: lock, read, apply, atomic replace, unlock.
 *
 * Beside `state.json` it keeps `index/pool.NAME` and `index/domain.NAME` marker files: the
 * hook shims test them with plain `[ -e ]` to decide, without starting Node, whether a call
 * concerns vfpool at all. Markers are a superset of the truth: added before the state that
 * needs them is written, removed after the state that dropped them is written.
 */
export class StateStore {
  readonly file: string;
  readonly indexDir: string;
  constructor(readonly dir: string, private readonly lock: LockOptions = DEFAULT_LOCK) {
    this.file = join(dir, 'state.json');
    this.indexDir = join(dir, 'index');
  }

  /** Creates the directory 0700 (state holds saved MACs and who owns what: root's business). */
  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    mkdirSync(this.indexDir, { recursive: true, mode: 0o700 });
  }

  read(): VfpoolState {
    return readJsonFile<VfpoolState>(this.file) ?? emptyState();
  }

  async update<R>(fn: (s: VfpoolState) => Promise<R> | R): Promise<R> {
    this.ensureDir();
    return updateJsonFileLocked<VfpoolState, R>(
      this.file,
      emptyState,
      async (current) => {
        const before = this.markersOf(current);
        const result = await fn(current);
        const after = this.markersOf(current);
        for (const m of after) if (!before.has(m)) this.touchMarker(m);
        const stale = [...before].filter((m) => !after.has(m));
        return { next: current, result, afterWrite: () => stale.forEach((m) => rmSync(join(this.indexDir, m), { force: true })) };
      },
      this.lock,
    );
  }

  private markersOf(s: VfpoolState): Set<string> {
    const m = new Set<string>();
    for (const name of Object.keys(s.pools)) m.add(`pool.${name}`);
    for (const a of s.allocations) m.add(`domain.${a.owner.domain}`);
    for (const p of s.ports) m.add(`domain.${p.domain}`);
    return m;
  }

  private touchMarker(m: string): void {
    writeFileSync(join(this.indexDir, m), '', { mode: 0o600 });
  }

  /** Rebuilds the markers from the state (reconcile, and after a crash between the two writes). */
  rebuildIndex(): void {
    this.ensureDir();
    const want = this.markersOf(this.read());
    for (const f of readdirSync(this.indexDir)) if (!want.has(f)) rmSync(join(this.indexDir, f), { force: true });
    for (const m of want) this.touchMarker(m);
  }
}
