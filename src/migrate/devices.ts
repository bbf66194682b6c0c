import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, HostError } from '../errors.js';
import { planHotplugDevices, type QmpDeviceAdd } from '../qemu/args.js';
import { parseQemuArgv } from '../qemu/cmdline.js';
import type { DomainPlanV1 } from '../state/domain-plan.js';

/**
 * The device the wrapper gave (or, on a migration target, left off for) each VF of a plan,
 * as QMP device_add takes it: src/qemu's planHotplugDevices over the QEMU's own argv (minus
 * -incoming), the same bus, slot and properties the wrapper computed.
 */
export function generatedDevices(plan: DomainPlanV1, argv: string[]): Map<string, QmpDeviceAdd> {
  const withoutIncoming: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-incoming' || argv[i] === '--incoming') {
      i++;
      continue;
    }
    withoutIncoming.push(argv[i]!);
  }
  // q35: the wrapper's root ports are on the running command line and say where each VF goes.
  // i440fx: vfpool's own devices are dropped first, or the generator refuses its own ids.
  const running = parseQemuArgv(withoutIncoming);
  const devices = planHotplugDevices(plan, running.machine.kind === 'q35' ? running : parseQemuArgv(stripVfpoolDevices(withoutIncoming)));
  return new Map(devices.map((d) => [d.id, d]));
}

/** Removes what the wrapper appended (vfpool-* devices, root ports, its QMP monitor) from a QEMU argv. */
export function stripVfpoolDevices(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const opt = argv[i]!;
    const val = argv[i + 1];
    if ((opt === '-device' || opt === '-chardev') && val !== undefined && /(^|,)id=vfpool-|"id":\s*"vfpool-/.test(val)) {
      i++;
      continue;
    }
    if (opt === '-mon' && val !== undefined && /chardev=vfpool-qmp/.test(val)) {
      i++;
      continue;
    }
    out.push(opt);
  }
  return out;
}

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
    if (argv.some((a, i) => argv[i - 1] === '-chardev' && a.includes(`path=${socketPath}`))) return argv.slice(1);
  }
  throw new HostError(`no running QEMU has vfpool's QMP socket ${socketPath} on its command line`, { hint: 'start the domain through vfpool-qemu (the wrapper), or check that it still runs' });
}

export function deviceOf(devices: Map<string, QmpDeviceAdd>, id: string, where: string): QmpDeviceAdd {
  const d = devices.get(id);
  if (!d) throw new BadInputError(`${where}: the plan's ${id} has no device on this QEMU's command line`, 'the plan and the running QEMU disagree: run `vfpool qemu-args DOMAIN` to compare');
  return d;
}
