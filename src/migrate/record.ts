import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { BadInputError, errnoOf, HostError } from '../errors.js';
import { parseObjectName } from '../types.js';
import type { MigrationRecordStore } from './ports.js';

/**
 * The per-domain migration record: the crash-recovery log of one migration on one host. Every
 * step writes it BEFORE it touches QEMU or the pool (intent) and after (done), so a re-run of
 * the same stage after a crash knows what was unplugged, plugged, reserved.
 *
 * Proposed home: src/state/ (schema + store beside state.json). Until the lead moves it, it
 * lives at `$VFPOOL_STATE_DIR/migrate/<domain>.json` (dir 0700, file 0600).
 */
export type MigrationRole = 'source' | 'destination';
export type MigrationStage = 'begun' | 'prepared' | 'performed' | 'confirmed-success' | 'confirmed-failure';
export type VfMigrationKind = 'plain' | 'failover';

export interface VfMigrationRecord {
  id: string;
  kind: VfMigrationKind;
  mac: string | null;
  /** Source: the VF left the guest (device_del + DEVICE_DELETED, or QEMU's own failover unplug). */
  unplugged: boolean;
  /** How it left: 'device_del', 'failover' (QEMU's UNPLUG_PRIMARY), 'hidden' (guest never negotiated: never plugged). */
  unplugMode: 'device_del' | 'failover' | 'hidden' | null;
  /** Destination after success, or source after failure: device_add done and seen in QOM. */
  plugged: boolean;
}

export interface MigrationRecordV1 {
  version: 1;
  domain: string;
  role: MigrationRole;
  stage: MigrationStage;
  /** Destination: the pool holds a reservation for the incoming domain. */
  reserved: boolean;
  vfs: VfMigrationRecord[];
  startedAt: string;
  updatedAt: string;
}

const STAGES: readonly MigrationStage[] = ['begun', 'prepared', 'performed', 'confirmed-success', 'confirmed-failure'];

export function newRecord(domain: string, role: MigrationRole, vfs: VfMigrationRecord[], now = new Date()): MigrationRecordV1 {
  const t = now.toISOString();
  return { version: 1, domain, role, stage: 'begun', reserved: false, vfs, startedAt: t, updatedAt: t };
}

export function validateRecord(value: unknown, file: string): MigrationRecordV1 {
  const bad = (what: string): never => {
    throw new BadInputError(`${file}: ${what}`, 'this is vfpool\'s migration record: finish the migration with `vfpool migrate confirm DOMAIN --failed` or remove the file');
  };
  const o = value as Record<string, unknown>;
  if (!o || typeof o !== 'object') bad('is not a JSON object');
  if (o.version !== 1) bad(`has version ${JSON.stringify(o.version)}, this vfpool reads version 1`);
  if (typeof o.domain !== 'string') bad('has no domain');
  parseObjectName(o.domain as string, `${file}: domain`);
  if (o.role !== 'source' && o.role !== 'destination') bad(`role ${JSON.stringify(o.role)} is not source or destination`);
  if (!STAGES.includes(o.stage as MigrationStage)) bad(`stage ${JSON.stringify(o.stage)} is not one of ${STAGES.join(', ')}`);
  if (typeof o.reserved !== 'boolean' || !Array.isArray(o.vfs)) bad('needs reserved (boolean) and vfs (array)');
  for (const [i, v] of (o.vfs as Array<Record<string, unknown>>).entries()) {
    if (typeof v?.id !== 'string' || !/^vfpool-vf[0-9]{1,3}$/.test(v.id)) bad(`vfs[${i}].id is not 'vfpool-vfN'`);
    if (v.kind !== 'plain' && v.kind !== 'failover') bad(`vfs[${i}].kind is not plain or failover`);
    if (typeof v.unplugged !== 'boolean' || typeof v.plugged !== 'boolean') bad(`vfs[${i}] needs unplugged and plugged (booleans)`);
  }
  return o as unknown as MigrationRecordV1;
}

/** The file store: one record per domain, written atomically (temp + fsync + rename), 0600. */
export function fileRecordStore(stateDir: string): MigrationRecordStore {
  const dir = join(stateDir, 'migrate');
  const path = (domain: string) => join(dir, `${parseObjectName(domain, 'domain')}.json`);
  return {
    read(domain) {
      const file = path(domain);
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') return null;
        throw new HostError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
      }
      try {
        return validateRecord(JSON.parse(text), file);
      } catch (err) {
        if (err instanceof SyntaxError) throw new BadInputError(`${file}: is not valid JSON: ${err.message}`, 'remove it if no migration of this domain is under way');
        throw err;
      }
    },
    async write(record) {
      const file = path(record.domain);
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        await writeFileAtomic(file, JSON.stringify({ ...record, updatedAt: new Date().toISOString() }, null, 2) + '\n', { mode: 0o600, fsync: true });
      } catch (err) {
        throw new HostError(`cannot write the migration record ${file}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
      }
    },
    remove(domain) {
      rmSync(path(domain), { force: true });
    },
  };
}
