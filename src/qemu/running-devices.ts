import type { DomainPlanV1 } from '../state/domain-plan.js';
import { planHotplugDevices, type QmpDeviceAdd } from './args.js';
import { parseQemuArgv } from './cmdline.js';

/**
 * The device the wrapper gave (or, on a migration target, left off for) each VF of a plan,
 * as QMP device_add takes it: planHotplugDevices over the QEMU's own argv (minus
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

/**
 * Removes what the wrapper appended (vfpool-* devices and root ports) from a QEMU argv, and the
 * `-chardev`/`-mon` QMP monitor of earlier releases, whose chardev id the planner would refuse.
 * vfpool's `-qmp` has no id: it stays.
 */
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
