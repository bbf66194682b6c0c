import { HostError } from '../errors.js';
import { QmpClient } from '../qemu/qmp.js';
import type { MigrationQmp, QmpEventWaiter } from './ports.js';

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
      const { execa } = await import('execa'); // loaded only when used (CLI start-up)
      const r = await execa('virsh', ['-c', uri, 'qemu-monitor-command', domain, JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })], { reject: false, timeout: ms });
      if (r.exitCode !== 0) throw new HostError(`virsh -c ${uri} qemu-monitor-command ${domain} ${command}: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`);
      const msg = JSON.parse(String(r.stdout)) as { return?: unknown; error?: { class?: string; desc?: string } };
      if (msg.error) throw new HostError(`QMP ${msg.error.class ?? 'error'} from ${domain} at ${uri}: ${msg.error.desc ?? ''}`, { code: msg.error.class });
      return msg.return;
    },
    listen(event) {
      throw new HostError(`waiting for ${event} through virsh is not possible (libvirt keeps QEMU's events)`, { hint: 'use vfpool\'s QMP socket on that host' });
    },
  };
}
