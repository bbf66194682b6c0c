import type { DomainSpec, HostdevRequest } from '../config/domain-xml.js';
import { BadInputError, ConflictError } from '../errors.js';
import type { Context } from '../pool/context.js';
import { commitVfs, configureVfs, guestOptions, planReleaseGuest, releaseGuest, requestsOf, reserveVfs, type Reservation } from '../pool/guests.js';
import { describeVfStep } from '../pool/vf-steps.js';
import { DryRunStateStore } from '../state/store.js';
import { Logger } from '../util/log.js';
import { journal } from '../pool/journal-entries.js';
import type { Allocation } from '../state/schema.js';
import { parseGuestMac, type MacAddress } from '../types.js';
import { noVfSettings, VF_SETTING_KEYS, VF_SETTINGS, vfSettingsOf, vfSettingsToJson, type VfSettingKey, type VfSettings, type VfSettingsJson } from '../vf-settings.js';
import { isSameProcessAlive } from '../util/process.js';
import type { RequestLookup } from './begin.js';
import type { MigrationPool, MigrationVfRequest, PlannedMigrationVf, ReservedVf } from './ports.js';

/**
 * The pool's staged prepare behind src/migrate's MigrationPool: `reserve` is the pool's
 * reserveVfs (pick under the lock, record `preparing` with what will change), `configure` its
 * configureVfs + commitVfs (set MAC/VLAN, bind vfio-pci, record `ready`; a failure undoes every
 * step), `release` its releaseGuest (restore and free, idempotent); `plan` and `planRelease`
 * their dry runs.
 */
export function migrationPool(ctx: Context, emulatedModel: string | null): MigrationPool {
  // reserve → configure run in one process (prepareStage's one step); the reservation between them
  // is the pool's own in-memory plan. A crash between leaves `preparing` records that reconcile frees.
  const reservations = new Map<string, Reservation>();
  const reservedOf = (a: Allocation, id: string, req: MigrationVfRequest): ReservedVf =>
    ({ id, host: emulatedModel ? null : a.vfAddr, emulatedModel, mac: (a.mac as MacAddress | null) ?? req.mac });

  return {
    async reserve(domain, requests, uuid) {
      const held = ctx.store.read().allocations.filter((a) => a.owner.domain === domain);
      if (held.length > 0) return heldFor(domain, requests, held).map((a, i) => reservedOf(a, requests[i]!.id, requests[i]!));
      const spec = migratedSpec(domain, uuid, requests);
      const reservation = await reserveVfs(ctx, spec, requestsOf(ctx, spec), guestOptions('cli', ctx.settings), null);
      reservations.set(domain, reservation);
      journal.allocated(ctx, reservation.planned.map((p) => p.record));
      // Requests are planned in order, one VF each: the n-th planned VF serves the n-th request.
      return requests.map((req, i) => reservedOf(reservation.planned[i]!.record, req.id, req));
    },
    async configure(domain) {
      const reservation = reservations.get(domain);
      if (!reservation) {
        // A re-run: `reserve` handed back what an earlier run committed (only `ready` is returned).
        return;
      }
      await configureVfs(ctx, reservation);
      const ready = await commitVfs(ctx, reservation);
      reservations.delete(domain);
      journal.configured(ctx, ready);
    },
    async release(domain, reason) {
      reservations.delete(domain);
      await releaseGuest(ctx, domain, { reason: reason === 'migrated' ? 'migrated' : 'migration failed' });
    },
    async plan(domain, requests, uuid) {
      const planned = (a: Allocation, req: MigrationVfRequest, reserved: 'new' | 'kept', steps: string[]): PlannedMigrationVf => ({
        id: req.id, pool: req.pool, vfAddr: a.vfAddr, pf: a.pf, vfIndex: a.vfIndex, mac: (a.mac as MacAddress | null) ?? req.mac,
        settings: requestedSettings(a), reserved, steps, vf: reservedOf(a, req.id, req),
      });
      const held = ctx.store.read().allocations.filter((a) => a.owner.domain === domain);
      if (held.length > 0) return heldFor(domain, requests, held).map((a, i) => planned(a, requests[i]!, 'kept', []));
      // `reserve`'s own code on a store that keeps nothing and a log that writes nowhere: the
      // same checks (pool exhausted, a PF being changed, …) and the same pick, nothing recorded.
      const dry: Context = { ...ctx, store: DryRunStateStore.of(ctx.store), log: new Logger(null, 'dry run') };
      const spec = migratedSpec(domain, uuid, requests);
      const reservation = await reserveVfs(dry, spec, requestsOf(dry, spec), guestOptions('cli', ctx.settings), null);
      return requests.map((req, i) => {
        const p = reservation.planned[i]!;
        return planned(p.record, req, 'new', p.steps.map(describeVfStep));
      });
    },
    async planRelease(domain) {
      return (await planReleaseGuest(ctx, domain)).plan;
    },
  };
}

/** What an earlier prepare of the same migration reserved and committed: the allocation serving each request. */
function heldFor(domain: string, requests: MigrationVfRequest[], held: Allocation[]): Allocation[] {
  const unfinished = held.filter((a) => a.phase !== 'ready');
  if (held.length !== requests.length || unfinished.length > 0) {
    const busy = unfinished.find((a) => a.worker !== null && isSameProcessAlive(a.worker, a.workerStart));
    throw new ConflictError(
      `domain '${domain}' holds ${held.length} VF(s) here (${held.map((a) => `${a.vfAddr} ${a.phase}`).join(', ')}), the migration asks for ${requests.length}`,
      busy ? `another vfpool process (pid ${busy.worker}) is preparing it: wait for it` : `undo the earlier attempt: \`vfpool migrate confirm ${domain} --role destination --failed\``,
    );
  }
  const byMac = new Map(held.map((a) => [a.mac, a]));
  return requests.map((req, i) => (req.mac !== null ? byMac.get(req.mac) : undefined) ?? held[i]!);
}

/**
 * The incoming domain's requests as pool requests: its pool, its MAC, every setting the source
 * recorded (checked when the description was read), its uuid for the owner.
 */
function migratedSpec(domain: string, uuid: string | null, requests: MigrationVfRequest[]): DomainSpec {
  const hostdevs: HostdevRequest[] = requests.map((r, i) => {
    if (r.mac === null) throw new BadInputError(`domain '${domain}': ${r.id} has no MAC`, 'a migrated VF keeps its MAC: the source must send it');
    return {
      field: `migrated ${r.id} (#${i + 1})`, pool: r.pool, netdev: null, address: null, mac: parseGuestMac(r.mac, `${r.id}: mac`) as MacAddress, guestSlot: null,
      ...vfSettingsOf(r.settings),
    };
  });
  return { name: domain, uuid, hostdevs, networkInterfaces: [], interfaceMacs: [], dacLabel: null, sriovNics: [], memoryKiB: null, hardLimitKiB: null };
}

/**
 * The settings a VF's request asked for. A record from before `requested` was kept: what
 * prepare set on the VF is the request's link settings (`applied.link`, qos with a VLAN), and
 * the MTU only if it was set.
 */
function requestedSettings(a: Allocation): VfSettingsJson {
  if (a.requested !== null) return vfSettingsToJson(a.requested);
  const s = noVfSettings() as Record<VfSettingKey, unknown>;
  const link = (a.applied?.link ?? {}) as Record<string, unknown>;
  for (const k of VF_SETTING_KEYS) if (VF_SETTINGS[k].ip !== null && link[k] !== undefined) s[k] = link[k];
  s.vlan ??= a.vlan;
  s.mtu = a.applied?.mtu ?? null;
  return vfSettingsToJson(s as unknown as VfSettings);
}

/** The source's requests behind each plan id, from its allocations (pool and settings). */
export function requestLookup(ctx: Context): RequestLookup {
  const state = ctx.store.read();
  return (domain, vfId) => {
    const a = state.allocations.find((x) => x.owner.domain === domain && x.alias === vfId);
    if (!a || a.pool === null) return null;
    return { pool: a.pool, settings: requestedSettings(a) };
  };
}
