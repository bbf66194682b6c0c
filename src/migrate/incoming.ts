import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoOf, HostError } from '../errors.js';
import type { DomainPlanV1 } from '../state/domain-plan.js';
import { newRecord, type MigrationRecordStore, type MigrationRecordV1 } from '../state/migration-record.js';
import { lazyChildProcess } from '../util/lazy-builtins.js';

/**
 * The destination under libvirt. libvirt starts the incoming QEMU with `-incoming` and runs the
 * `prepare` and `started` hooks for it like for any start: `prepare` reserved and configured the
 * VFs and wrote the plan; the wrapper saw `-incoming` and left the plain VFs off (QEMU refuses a
 * stream for devices it did not send, and a vfio device cannot be sent). Nothing in libvirt
 * calls a hook once the migration finished (`started` comes before it), so `started` records
 * the migration here and hands over to `vfpool migrate confirm --role destination
 * --wait-incoming`, detached: the hook must return for libvirt to go on with the migration.
 */

/** Whether the QEMU with this pid was started to receive a migration (`-incoming` on its argv). */
export function isIncomingQemu(procRoot: string, pid: number): boolean {
  const file = join(procRoot, String(pid), 'cmdline');
  let raw: string;
  try {
    raw = readFileSync(file, 'latin1');
  } catch (err) {
    throw new HostError(`cannot read QEMU's command line ${file}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
  }
  return raw.split('\0').some((a) => a === '-incoming' || a === '--incoming');
}

/**
 * The ids of the plan's VFs that the incoming QEMU started without and confirm must plug:
 * every VF of a `hotplug` plan (the wrapper never puts one on the command line), else the plain
 * ones (a failover primary stays on an incoming command line, hidden until the guest acks).
 */
export function vfsLeftOffIncoming(plan: DomainPlanV1): string[] {
  return plan.vfs.filter((v) => plan.delivery === 'hotplug' || v.failoverStandbyMac === null).map((v) => v.id);
}

/**
 * Records the destination side of a migration libvirt drives (stage `prepared`, VFs reserved by
 * `prepare`), unless a record is there already (`vfpool migrate prepare` wrote one). Returns the
 * record, or null when the incoming QEMU waits for nothing of vfpool's.
 */
export async function recordIncoming(records: MigrationRecordStore, plan: DomainPlanV1): Promise<MigrationRecordV1 | null> {
  const leftOff = new Set(vfsLeftOffIncoming(plan));
  if (leftOff.size === 0) return null;
  return records.update(plan.domain, (current) => {
    if (current !== null) return undefined;
    const r = newRecord(plan.domain, 'destination', plan.vfs.map((v) => ({
      id: v.id,
      // What confirm plugs is what the incoming QEMU lacks; a primary of a hotplug plan is one.
      kind: leftOff.has(v.id) ? 'plain' : 'failover',
      mac: v.mac, unplugged: false, unplugMode: null, plugged: false,
    })));
    r.stage = 'prepared';
    r.reserved = true;
    return r;
  });
}

/** The argv of the detached confirm (`vfpool migrate confirm DOMAIN --role destination --wait-incoming S`). */
export function incomingConfirmArgv(cliPath: string, domain: string, waitSeconds: number): string[] {
  return [cliPath, 'migrate', 'confirm', domain, '--role', 'destination', '--wait-incoming', String(waitSeconds)];
}

/**
 * Starts the confirm in its own session, with no stdio tied to the hook (libvirt waits for the
 * hook's stdout to close), and does not wait for it. Returns its pid.
 */
export function spawnDetached(node: string, argv: string[], env: NodeJS.ProcessEnv): number {
  const child = lazyChildProcess().spawn(node, argv, { detached: true, stdio: 'ignore', env });
  if (child.pid === undefined) throw new HostError(`could not start ${node} ${argv.join(' ')}`);
  child.unref();
  return child.pid;
}
