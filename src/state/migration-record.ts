import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, errnoOf, HostError } from '../errors.js';
import { parseObjectName } from '../types.js';
import { DEFAULT_LOCK, readTextNoFollow, symlinkRefused, updateJsonFileLocked, type LockOptions } from '../util/json-file.js';
import { makeDir } from '../util/make-dir.js';
import { assertStateDirTrusted } from '../util/state-dir-owner.js';

/**
 * The per-domain migration record: the crash-recovery log of one migration on one host. Every
 * step writes it BEFORE it touches QEMU or the pool (intent) and after (done), so a re-run of
 * the same stage after a crash knows what was unplugged, plugged, reserved.
 *
 * It lives at `$VFPOOL_STATE_DIR/migrate/<domain>.json` (dir 0700, file 0600), beside
 * state.json and written the same way: under a lock, temp file + fsync + rename.
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
  /**
   * How it left: 'device_del', 'failover' (QEMU's UNPLUG_PRIMARY), 'hidden' (guest never
   * negotiated: never plugged). 'device_del' with `unplugged` false: perform sent (or was about
   * to send) device_del and did not see it through (killed, or the guest did not ack in time),
   * so the device may be gone from the guest: a failed migration's confirm plugs it back.
   */
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

/**
 * The VFs vfpool took out of the guest (device_del, done or begun) and has not plugged back:
 * what `confirm --role source --failed` plugs back.
 */
export function unpluggedByVfpool(record: MigrationRecordV1): VfMigrationRecord[] {
  return record.vfs.filter((v) => v.unplugMode === 'device_del' && !v.plugged);
}

export function validateRecord(value: unknown, file: string): MigrationRecordV1 {
  const bad = (what: string): never => {
    // Not "finish it with confirm": confirm reads this record too, and would stop at the same line.
    throw new BadInputError(`${file}: ${what}`, 'this is vfpool\'s record of a migration in progress, which `vfpool migrate confirm` needs: restore it, or remove it and finish by hand (`vfpool status` shows what the domain holds here; `vfpool release DOMAIN` frees it once no guest uses it)');
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

/** The store of migration records (the stages write whole records; reconcile reads and drops them). */
export interface MigrationRecordStore {
  read(domain: string): MigrationRecordV1 | null;
  /** Atomic, 0600, under the record's lock; the record is the crash-recovery log of a migration. */
  write(record: MigrationRecordV1): Promise<void>;
  /** Lock, read, apply, write (or remove when `fn` returns null), unlock. */
  update(domain: string, fn: (current: MigrationRecordV1 | null) => MigrationRecordV1 | null | undefined): Promise<MigrationRecordV1 | null>;
  remove(domain: string): Promise<void>;
  /** The domains with a record on this host. */
  list(): string[];
}

export function migrationRecordDir(stateDir: string): string {
  return join(stateDir, 'migrate');
}

/** The file store: one record per domain, each behind its own lock (proper-lockfile), 0600. */
export function fileRecordStore(stateDir: string, lock: LockOptions = DEFAULT_LOCK): MigrationRecordStore {
  const dir = migrationRecordDir(stateDir);
  const path = (domain: string) => join(dir, `${parseObjectName(domain, 'domain')}.json`);
  const read = (domain: string): MigrationRecordV1 | null => {
    const file = path(domain);
    assertStateDirTrusted(stateDir);
    let text: string;
    try {
      text = readTextNoFollow(file);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      if (errnoOf(err) === 'ELOOP') throw symlinkRefused('the migration record', file, err);
      throw new HostError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
    }
    try {
      return validateRecord(JSON.parse(text), file);
    } catch (err) {
      if (err instanceof SyntaxError) throw new BadInputError(`${file}: is not valid JSON: ${err.message}`, 'remove it if no migration of this domain is under way');
      throw err;
    }
  };
  const update: MigrationRecordStore['update'] = (domain, fn) => {
    const file = path(domain);
    assertStateDirTrusted(stateDir);
    // A link planted for migrate/ would send root's writes (and its lock) elsewhere.
    try {
      if (lstatSync(dir).isSymbolicLink()) throw symlinkRefused('the migration records directory', dir);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
    // The state directory first, with its own mode: made as migrate/'s parent it would be 0755.
    makeDir(stateDir, 0o700);
    return updateJsonFileLocked<MigrationRecordV1 | null, MigrationRecordV1 | null>(file, () => read(domain), (current) => {
      const next = fn(current);
      if (next === undefined) return { result: current };
      if (next === null) return { result: null, afterWrite: () => rmSync(file, { force: true }) };
      const stamped = { ...next, updatedAt: new Date().toISOString() };
      return { next: stamped, result: stamped };
    }, lock);
  };
  return {
    read,
    update,
    async write(record) {
      try {
        await update(record.domain, () => record);
      } catch (err) {
        if (err instanceof BadInputError) throw err;
        throw new HostError(`cannot write the migration record ${path(record.domain)}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
      }
    },
    async remove(domain) {
      await update(domain, () => null);
    },
    list() {
      assertStateDirTrusted(stateDir);
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') return [];
        throw new HostError(`cannot list ${dir}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
      }
      return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length)).filter((d) => {
        try { parseObjectName(d, 'domain'); return true; } catch { return false; }
      });
    },
  };
}
