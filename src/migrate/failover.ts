import { BadInputError, HostError } from '../errors.js';
import { quoteInput } from '../util/quote.js';
import { monotonicMs } from '../util/process.js';
import type { QmpDeviceAdd } from '../qemu/args.js';
import type { DomainPlanVf } from '../state/domain-plan.js';
import type { MigrationQmp, QmpEvent, QmpEventWaiter } from './ports.js';
import type { QmpTimeouts } from './qmp-steps.js';

/**
 * Where a failover primary stands. QEMU creates it only once the guest's virtio-net driver acks
 * VIRTIO_NET_F_STANDBY (before that it is absent from /machine/peripheral: 'hidden'); from then
 * on QEMU unplugs it itself when a migration starts. A guest that later runs a driver without
 * failover (a reboot into another OS) leaves it plugged but not negotiated: vfpool unplugs it.
 */
export async function failoverState(
  qmp: MigrationQmp, vf: DomainPlanVf, devices: Map<string, QmpDeviceAdd>, present: Set<string>, t: QmpTimeouts,
): Promise<'hidden' | 'negotiated' | 'not-negotiated'> {
  if (!present.has(vf.id)) return 'hidden';
  const standby = devices.get(vf.id)?.failover_pair_id;
  if (!standby) return 'not-negotiated';
  const status = await qmp.execute('x-query-virtio-status', { path: `/machine/peripheral/${standby}/virtio-backend` }, t.command);
  const features = JSON.stringify((status as Record<string, unknown>)['guest-features'] ?? {});
  return features.includes('VIRTIO_NET_F_STANDBY') ? 'negotiated' : 'not-negotiated';
}

// QEMU's migration URI also takes exec: (a shell command run by QEMU), fd:, file: and options
// after a comma; vfpool documents a host and port, or a socket path, and passes nothing else.
const TCP_URI = /^tcp:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([1-9][0-9]{0,4})$/;
const UNIX_URI = /^unix:\/[A-Za-z0-9_.@+/-]*$/;

/** A migration URI vfpool hands QEMU: `tcp:HOST:PORT` or `unix:/PATH`; anything else is bad input. */
export function checkMigrationUri(uri: string, where: string): string {
  const tcp = TCP_URI.exec(uri);
  if ((tcp && Number(tcp[2]) <= 65535) || UNIX_URI.test(uri)) return uri;
  throw new BadInputError(`${where}: --to ${quoteInput(uri)} is not a migration URI vfpool accepts`, 'give tcp:HOST:PORT or unix:/PATH');
}

export interface MigrateOutcome {
  status: 'completed';
  unplugPrimary: string[];
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * QMP `migrate` to `uri` without libvirt, bounded: UNPLUG_PRIMARY listeners for the failover
 * primaries are registered first (QEMU sends the event at the migration's setup, before it
 * waits for the guest to let the primary go), then `query-migrate` is polled to the end.
 * Throws a HostError naming QEMU's reason when the migration fails.
 */
export async function migrateOverQmp(qmp: MigrationQmp, domain: string, uri: string, failoverPrimaries: string[], timeoutMs: number): Promise<MigrateOutcome> {
  checkMigrationUri(uri, `domain '${domain}'`);
  const t0 = monotonicMs();
  const giveUp = `the domain stays on the source: give the migration up with \`vfpool migrate confirm ${domain} --role source --failed\` there and \`vfpool migrate confirm ${domain} --role destination --failed\` on the destination`;
  const waiters: Array<[string, QmpEventWaiter]> = failoverPrimaries.map((id) => [id, qmp.listen('UNPLUG_PRIMARY', (d) => d['device-id'] === id, timeoutMs)]);
  const seen: string[] = [];
  for (const [id, w] of waiters) w.promise.then((e: QmpEvent) => { if (e) seen.push(id); }, () => {});
  try {
    await qmp.execute('migrate', { uri }, 10_000);
    for (;;) {
      const q = (await qmp.execute('query-migrate', {}, 10_000)) as { status?: string; 'error-desc'?: string };
      if (q.status === 'completed') break;
      if (q.status === 'failed' || q.status === 'cancelled') {
        throw new HostError(`migration to ${uri} ${q.status}${q['error-desc'] ? `: ${q['error-desc']}` : ''}`, { hint: giveUp });
      }
      if (monotonicMs() - t0 > timeoutMs) {
        await qmp.execute('migrate_cancel', {}, 10_000).catch(() => {});
        throw new HostError(`migration to ${uri} did not complete within ${timeoutMs} ms (status ${q.status ?? '?'}); cancelled`, { hint: giveUp });
      }
      await sleep(100);
    }
    // QEMU sends UNPLUG_PRIMARY before it leaves the wait-unplug state, so by completion each has arrived.
    const missing = failoverPrimaries.filter((id) => !seen.includes(id));
    if (missing.length) throw new HostError(`migration completed but QEMU sent no UNPLUG_PRIMARY for ${missing.join(', ')}`, { hint: 'the failover primary moved with the guest: check the destination' });
    return { status: 'completed', unplugPrimary: seen, ms: monotonicMs() - t0 };
  } finally {
    for (const [, w] of waiters) w.cancel();
  }
}
