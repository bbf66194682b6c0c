import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, HostError } from '../errors.js';
import type { QmpDeviceAdd } from '../qemu/args.js';
import { hasQmpSocket } from '../qemu/qmp-monitor.js';

/**
 * The argv of the QEMU that serves vfpool's QMP socket for the domain: the wrapper put the
 * socket's path on that command line, and nothing else runs with it. Read from /proc.
 */
export function qemuArgvBySocket(socketPath: string, proc = '/proc'): string[] {
  for (const pid of readdirSync(proc)) {
    if (!/^[0-9]+$/.test(pid)) continue;
    let raw: string;
    try {
      raw = readFileSync(join(proc, pid, 'cmdline'), 'latin1');
    } catch {
      continue;
    }
    if (!raw.includes(socketPath)) continue;
    const argv = raw.split('\0');
    if (argv[argv.length - 1] === '') argv.pop();
    if (hasQmpSocket(argv, socketPath)) return argv.slice(1);
  }
  throw new HostError(`no running QEMU has vfpool's QMP socket ${socketPath} on its command line`, { hint: 'start the domain through vfpool-qemu (the wrapper), or check that it still runs' });
}

export function deviceOf(devices: Map<string, QmpDeviceAdd>, id: string, where: string): QmpDeviceAdd {
  const d = devices.get(id);
  if (!d) throw new BadInputError(`${where}: the plan's ${id} has no device on this QEMU's command line`, 'the plan and the running QEMU disagree: run `vfpool qemu-args DOMAIN` to compare');
  return d;
}
