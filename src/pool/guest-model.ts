import type { Settings } from '../config/settings.js';
import type { Allocation, VfpoolState } from '../state/schema.js';

/**
 * What the guest lifecycle operations (guest-prepare, guest-start, guest-release) take and
 * return, shared by them and by the entry points that print it.
 */

export interface GuestOptions {
  /** Who asks: libvirt's hook, or `vfpool prepare` (whose owner has no libvirt pid file). */
  via: 'libvirt' | 'cli';
  /** The libvirt daemon running the hook (its parent), recorded with each allocation; see AllocationOwner.daemon. */
  daemon?: number | null;
  /** libvirt's QEMU runtime directory, where it keeps `NAME.pid` (/run/libvirt/qemu). */
  libvirtRunDir: string;
  /** Where /proc is (VFPOOL_PROC), where a pid in libvirt's pid file is checked to be the domain's QEMU; /proc when not given. */
  procRoot?: string;
  /** Where /etc/passwd and /etc/group are, for a DAC label given by name. */
  etcDir?: string;
}

/**
 * Guest options from the settings an entry point resolved (`VFPOOL_LIBVIRT_RUN_DIR` moves
 * libvirt's QEMU runtime directory with its `NAME.pid` files, for tests and for a libvirtd with
 * another prefix; `VFPOOL_ETC` moves /etc, where a DAC label given by name is looked up).
 */
export function guestOptions(via: GuestOptions['via'], settings: Settings): GuestOptions {
  return { via, libvirtRunDir: settings.libvirtRunDir, procRoot: settings.procRoot, etcDir: settings.etcDir, daemon: via === 'libvirt' ? process.ppid : null };
}

/**
 * One VF of a prepared guest, as `vfpool prepare --json` prints it: the allocation's public
 * fields (not its saved config, worker or owner).
 */
export type GuestVf = Pick<Allocation, 'pool' | 'mode' | 'pf' | 'vfIndex' | 'vfAddr' | 'netdev' | 'mac' | 'vlan' | 'guestSlot' | 'alias' | 'pairedMac' | 'phase'> & {
  request: number;
};

export interface PrepareResult {
  domain: string;
  vfs: GuestVf[];
  /** With --dry-run: the steps that would run, one line each. */
  plan: string[];
  /** Allocations of an earlier run of this domain that were restored and freed first. */
  releasedStale: string[];
}

export function describeAllocation(a: Allocation): GuestVf {
  return {
    request: a.guestSlot ?? 0,
    pool: a.pool,
    mode: a.mode,
    pf: a.pf,
    vfIndex: a.vfIndex,
    vfAddr: a.vfAddr,
    netdev: a.netdev,
    mac: a.mac,
    vlan: a.vlan,
    guestSlot: a.guestSlot,
    alias: a.alias,
    pairedMac: a.pairedMac,
    phase: a.phase,
  };
}

export function allocationsOf(state: VfpoolState, domain: string): Allocation[] {
  return state.allocations.filter((a) => a.owner.domain === domain);
}

export function whereOf(domain: string, pool: string | null, m: { pf: string; vfIndex: number; vfAddr: string }): string {
  return `domain '${domain}'${pool ? `, pool '${pool}'` : ''}, VF ${m.vfAddr} (${m.pf} VF ${m.vfIndex})`;
}


export interface ReleaseResult {
  domain: string;
  released: GuestVf[];
  /** VFs that vanished (PF reset, VF count changed): nothing left to restore, record dropped. */
  vanished: string[];
}

export interface StartResult {
  domain: string;
  handedOver: Array<{ vfAddr: string; group: string; uid: number; gid: number }>;
  pid: number | null;
}
