import { HostError } from '../errors.js';
import type { QmpDeviceAdd } from '../qemu/args.js';
import type { MigrationQmp } from './ports.js';

/** Bounds, in ms. device_del waits for the guest (or QEMU) to let the device go. */
export interface QmpTimeouts {
  command: number;
  unplug: number;
}
export const DEFAULT_TIMEOUTS: QmpTimeouts = { command: 10_000, unplug: 30_000 };

/** The ids of the devices QEMU has created under -device/device_add (`/machine/peripheral`). */
export async function peripheralIds(qmp: MigrationQmp, t: QmpTimeouts): Promise<Set<string>> {
  const list = (await qmp.execute('qom-list', { path: '/machine/peripheral' }, t.command)) as Array<{ name: string; type: string }>;
  return new Set(list.filter((p) => p.type.startsWith('child<')).map((p) => p.name));
}

/** QEMU's run state (`query-status`): `running`, `paused`, `inmigrate` (an incoming QEMU the migration has not reached yet), … */
export async function runState(qmp: MigrationQmp, t: QmpTimeouts): Promise<string> {
  return String(((await qmp.execute('query-status', {}, t.command)) as { status?: unknown }).status);
}

/**
 * device_del, then DEVICE_DELETED for that id, bounded. The listener is registered before the
 * command: QEMU may send the event before its reply when nothing has to ask the guest.
 * A device already gone is success (the step is re-run after a crash).
 */
export async function unplugDevice(qmp: MigrationQmp, id: string, where: string, t: QmpTimeouts): Promise<'deleted' | 'was-absent'> {
  if (!(await peripheralIds(qmp, t)).has(id)) return 'was-absent';
  const waiter = qmp.listen('DEVICE_DELETED', (d) => d.device === id, t.unplug);
  try {
    await qmp.execute('device_del', { id }, t.command);
  } catch (err) {
    waiter.cancel();
    if (err instanceof HostError && /DeviceNotFound|not found/i.test(err.message)) return 'was-absent';
    throw err;
  }
  try {
    await waiter.promise;
  } catch (err) {
    throw new HostError(
      `${where}: QEMU did not delete ${id} within ${t.unplug} ms after device_del (${(err as Error).message})`,
      { hint: 'the guest must acknowledge a PCI hot-unplug: check that its OS runs and handles hotplug (pciehp or ACPI), then run the stage again', cause: err },
    );
  }
  return 'deleted';
}

/**
 * device_add of the generated device, then checks QEMU shows it. A device already there is
 * success. A failover primary is the exception: QEMU accepts its device_add but creates it only
 * once the guest's virtio-net acks VIRTIO_NET_F_STANDBY (virtio-net.c keeps its options as the
 * standby's hidden primary), so until then it is in no /machine/peripheral: 'hidden'. Adding
 * it again with the same id is accepted the same way (a re-run), another id is refused.
 */
export async function plugDevice(qmp: MigrationQmp, device: QmpDeviceAdd, where: string, t: QmpTimeouts): Promise<'added' | 'was-present' | 'hidden'> {
  if ((await peripheralIds(qmp, t)).has(device.id)) return 'was-present';
  await qmp.execute('device_add', { ...device }, t.command);
  if (!(await peripheralIds(qmp, t)).has(device.id)) {
    if (device.failover_pair_id !== undefined) return 'hidden';
    throw new HostError(`${where}: device_add ${device.id} returned but QEMU does not list it under /machine/peripheral`, { hint: 'check QEMU\'s log' });
  }
  return 'added';
}
