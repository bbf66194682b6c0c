import { HostError } from '../errors.js';
import { QmpClient } from '../qemu/qmp.js';
import type { MigrationQmp, QmpEventWaiter } from './ports.js';
import { runVirsh, virshFailure } from './virsh.js';

/** MigrationQmp over vfpool's QMP socket (`qemu/NAME/qmp.sock`), through src/qemu's client. */
export async function connectQmp(path: string, timeoutMs = 10_000): Promise<MigrationQmp & { close(): void }> {
  const client = await QmpClient.connect(path, { timeoutMs });
  return {
    execute: (command, args, ms) => client.execute(command, args, { timeoutMs: ms ?? timeoutMs }),
    listen: (event, match, ms): QmpEventWaiter => client.events.waitFor(event, match, { timeoutMs: ms }),
    close: () => client.close(),
  };
}

/**
 * MigrationQmp through another host's libvirt (`virsh -c URI qemu-monitor-command`): how
 * `vfpool migrate DOMAIN DEST_URI` reaches the destination's QEMU. Commands only: libvirt's
 * monitor passes no events to virsh.
 */
export function virshQmp(uri: string, domain: string): MigrationQmp {
  return {
    async execute(command, args, ms = 30_000) {
      const what = `virsh -c ${uri} qemu-monitor-command ${domain} ${command}`;
      const r = await runVirsh(['-c', uri, 'qemu-monitor-command', domain, JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })], what, ms);
      if (r.exitCode !== 0) throw new HostError(`${what}: ${virshFailure(r, ms)}`);
      const msg = JSON.parse(r.stdout) as { return?: unknown; error?: { class?: string; desc?: string } };
      if (msg.error) throw new HostError(`QMP ${msg.error.class ?? 'error'} from ${domain} at ${uri}: ${msg.error.desc ?? ''}`, { code: msg.error.class });
      return msg.return;
    },
    listen(event) {
      throw new HostError(`waiting for ${event} through virsh is not possible (libvirt keeps QEMU's events)`, { hint: 'use vfpool\'s QMP socket on that host' });
    },
  };
}
