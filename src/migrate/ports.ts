import type { DomainPlanV1 } from '../state/domain-plan.js';
import type { MacAddress, PciAddress } from '../types.js';
import type { VfSettings, VfSettingsJson } from '../vf-settings.js';
export type { MigrationRecordStore } from '../state/migration-record.js';

/**
 * What the migration stages need from the rest of vfpool, injected so the stages stay pure
 * logic over QEMU's and the pool's behaviour (and so the pool code can change under them).
 */

/** One QMP event as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A listener registered BEFORE the command that causes its event (an event is never missed). */
export interface QmpEventWaiter {
  /** Resolves with the first matching event; rejects with a HostError after the timeout or when QEMU is gone. */
  readonly promise: Promise<QmpEvent>;
  cancel(): void;
}

/** vfpool's QMP connection to one QEMU (src/qemu/qmp.ts, or libvirt's monitor through virsh). */
export interface MigrationQmp {
  /** Runs a command, bounded; a QMP error becomes a HostError naming QMP's error class. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  /** Starts listening now. */
  listen(event: string, match: (data: Record<string, unknown>) => boolean, timeoutMs: number): QmpEventWaiter;
}

/** What the destination asks its pool for: one VF per source VF, same id, same MAC. */
export interface MigrationVfRequest {
  /** The plan id on the source (`vfpool-vfN`): the destination keeps it (same guest slot). */
  id: string;
  /** A pool of the destination (any free VF of it will do). */
  pool: string;
  mac: MacAddress | null;
  /** The pool request's other settings (VLAN, QoS, spoofchk, …) as the source recorded them. */
  settings: VfSettings;
}

/** A VF the destination's pool reserved and configured for the incoming domain. */
export interface ReservedVf {
  id: string;
  /** vfio-pci host=; null when the destination is a simulated host with an emulated model. */
  host: PciAddress | null;
  emulatedModel: string | null;
  mac: MacAddress | null;
}

/** What `reserve` and `configure` would do for one request: a dry run's answer. */
export interface PlannedMigrationVf {
  id: string;
  pool: string;
  vfAddr: PciAddress;
  pf: string;
  vfIndex: number;
  mac: MacAddress | null;
  /** The settings the VF would get beyond its MAC, only those asked for. */
  settings: VfSettingsJson;
  /** 'new': would be picked now; 'kept': an earlier prepare of this migration reserved it. */
  reserved: 'new' | 'kept';
  /** The configuration steps, one line each (as `vfpool prepare --dry-run` shows them). */
  steps: string[];
  /** For the plan: what `reserve` would return. */
  vf: ReservedVf;
}

/** The pool code's part (reserve → configure → commit; release restores and frees). */
export interface MigrationPool {
  /**
   * Reserves VFs for the requests, owned by the domain and its uuid; idempotent: a domain that
   * already holds a reservation gets it back. Refusal: ConflictError (exhausted), BadInputError (unknown pool).
   */
  reserve(domain: string, requests: MigrationVfRequest[], uuid: string | null): Promise<ReservedVf[]>;
  /** Sets MAC/VLAN/… and binds vfio-pci on what `reserve` gave; saved first, so `release` restores. Idempotent. */
  configure(domain: string, vfs: ReservedVf[]): Promise<void>;
  /** Restores and frees every VF the domain holds on this host. Idempotent (nothing held: no-op). */
  release(domain: string, reason: 'migrated' | 'migration-failed'): Promise<void>;
  /**
   * A dry run of `reserve` + `configure`: the same checks and the same pick, read from the state
   * and the host, with nothing recorded or set. Refuses what `reserve` refuses.
   */
  plan(domain: string, requests: MigrationVfRequest[], uuid: string | null): Promise<PlannedMigrationVf[]>;
  /** A dry run of `release`: what it would restore and free, one line each. */
  planRelease(domain: string): Promise<string[]>;
}

/** The per-domain wrapper file (src/state/domain-plan.ts). */
export interface PlanStore {
  read(domain: string): DomainPlanV1 | null;
  write(plan: DomainPlanV1): Promise<void>;
  remove(domain: string): void;
}

/** The QEMU command line a domain's QEMU runs with (to rebuild the device it would have got). */
export type QemuArgvReader = (domain: string) => string[];
