import type { Context } from '../pool/context.js';
import { guestOptions, prepareGuest, releaseGuest } from '../pool/guests.js';
import type { DomainSpec, HostdevRequest } from '../config/domain-xml.js';
import type { MigrationPool, MigrationVfRequest, ReservedVf } from '../migrate/ports.js';
import type { RequestLookup } from '../migrate/begin.js';
import { parseGuestMac, type MacAddress } from '../types.js';
import { BadInputError, ConflictError } from '../errors.js';

/**
 * Today's pool code behind src/migrate's MigrationPool. `prepareGuest` reserves and configures
 * in one locked pass (its own rollback on failure), so `reserve` does both and `configure` has
 * nothing left; once src/pool is split into reserve/configure/commit, each maps to its stage.
 */
export function migrationPool(ctx: Context): MigrationPool {
  const emulated = ctx.settings.host.startsWith('sim:') ? (ctx.settings.simVfDevice || null) : null;
  return {
    async reserve(domain, requests: MigrationVfRequest[]): Promise<ReservedVf[]> {
      const hostdevs: HostdevRequest[] = requests.map((r, i) => {
        if (r.mac === null) throw new BadInputError(`domain '${domain}': ${r.id} has no MAC`, 'a migrated VF keeps its MAC: the source must send it');
        const s = r.settings as Record<string, number | boolean | null | undefined>;
        return {
          field: `migrated ${r.id} (#${i + 1})`, pool: r.pool, netdev: null, address: null, mac: parseGuestMac(r.mac, `${r.id}: mac`) as MacAddress, guestSlot: null,
          vlan: (s.vlan as number | null) ?? null, qos: null, spoofchk: null, trust: null, linkState: null, minTxRate: null, maxTxRate: null, mtu: null,
        };
      });
      // Idempotent: a re-run of prepare gets the reservation it made (prepareGuest refuses a second prepare).
      const held = ctx.store.read().allocations.filter((a) => a.owner.domain === domain);
      if (held.length > 0) {
        if (held.length !== requests.length || held.some((a) => a.phase !== 'ready')) {
          throw new ConflictError(`domain '${domain}' holds ${held.length} VF(s) here (${held.map((a) => `${a.vfAddr} ${a.phase}`).join(', ')}), the migration asks for ${requests.length}`, `finish or undo the earlier attempt: \`vfpool migrate confirm ${domain} --role destination --failed\``);
        }
        return requests.map((req, i) => {
          const a = held.find((x) => x.alias === `vfpool-vf${i}`) ?? held[i]!;
          return { id: req.id, host: emulated ? null : a.vfAddr, emulatedModel: emulated, mac: a.mac ?? req.mac };
        });
      }
      const spec: DomainSpec = { name: domain, uuid: null, hostdevs, networkInterfaces: [], interfaceMacs: [], dacLabel: null, sriovNics: [], memoryKiB: null, hardLimitKiB: null };
      const r = await prepareGuest(ctx, spec, guestOptions('cli', ctx.settings));
      const byAlias = new Map(r.vfs.map((v) => [v.alias, v]));
      return requests.map((req, i) => {
        const got = byAlias.get(`vfpool-vf${i}`) ?? r.vfs[i]!;
        return { id: req.id, host: emulated ? null : got.vfAddr, emulatedModel: emulated, mac: (got.mac as MacAddress | null) ?? req.mac };
      });
    },
    async configure() {},
    async release(domain, reason) {
      await releaseGuest(ctx, domain, { reason: reason === 'migrated' ? 'migrated' : 'migration failed' });
    },
  };
}

/** The source's requests behind each plan id, from its allocations (pool and VLAN). */
export function requestLookup(ctx: Context): RequestLookup {
  const state = ctx.store.read();
  return (domain, vfId) => {
    const a = state.allocations.find((x) => x.owner.domain === domain && x.alias === vfId);
    if (!a || a.pool === null) return null;
    return { pool: a.pool, settings: { vlan: a.vlan } };
  };
}
