import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { startFakeQmp, type FakeQmp, type FakeReply } from './fake-qmp.js';

/**
 * A QEMU as vfpool's QMP socket shows it, in-process: the devices under /machine/peripheral,
 * device_add/device_del with DEVICE_DELETED (sent before the reply, as QEMU does when no guest
 * has to acknowledge), query-pci, qom-get of `mac`, query-status and migrate/query-migrate.
 * Its argv is written as /proc/PID/cmdline under `procRoot` (VFPOOL_PROC), where vfpool finds
 * the QEMU that serves the socket.
 */
export interface FakeQemuDevice {
  driver: string;
  mac?: string;
  /** Slot on bus 0; a device behind a root port not numbered yet has none (`behind`). */
  slot?: number;
  behind?: string;
  /** A root port: query-pci shows it as a bridge, with bus number 0 until the firmware numbers it. */
  bridge?: boolean;
}

export interface FakeQemu extends FakeQmp {
  devices: Map<string, FakeQemuDevice>;
  /** What query-status answers, in order (the last one stays). */
  statuses: string[];
  /** What query-migrate answers. */
  migrate: { status: string; 'error-desc'?: string };
  /** device_del is acknowledged (DEVICE_DELETED) only while true. */
  ackUnplug: boolean;
}

export async function startFakeQemu(socketPath: string, opts: { procRoot: string; argv: string[]; pid?: number; devices?: Record<string, FakeQemuDevice> }): Promise<FakeQemu> {
  const pid = opts.pid ?? 4242;
  mkdirSync(join(opts.procRoot, String(pid)), { recursive: true });
  writeFileSync(join(opts.procRoot, String(pid), 'cmdline'), ['/usr/bin/qemu-system-x86_64', ...opts.argv].join('\0') + '\0');
  mkdirSync(dirname(socketPath), { recursive: true });
  const devices = new Map(Object.entries(opts.devices ?? {}));
  // The handler reads the returned object, so a test changes the answers by assigning to it.
  let state!: FakeQemu;
  const handler = (cmd: string, raw: unknown): FakeReply => {
    const args = (raw ?? {}) as Record<string, unknown>;
    switch (cmd) {
      case 'qom-list':
        return { return: [{ name: 'type', type: 'string' }, ...[...devices].map(([name, d]) => ({ name, type: `child<${d.driver}>` }))] };
      case 'qom-get': {
        const id = String(args.path).replace('/machine/peripheral/', '');
        const d = devices.get(id);
        if (d && args.property === 'mac' && d.mac) return { return: d.mac };
        if (d && args.property === 'parent_bus' && d.behind) return { return: `/machine/peripheral/${d.behind}/${d.behind}` };
        return { error: { class: 'GenericError', desc: `Property '${d?.driver ?? id}.${String(args.property)}' not found` } };
      }
      case 'query-pci': {
        const listed = [...devices].filter(([, d]) => d.slot !== undefined);
        return { return: [{ bus: 0, devices: listed.map(([id, d]) => ({
          bus: 0, slot: d.slot, function: 0, qdev_id: id, id: { vendor: 0x8086, device: d.bridge ? 0x000c : 0x10d3 },
          class_info: { desc: d.bridge ? 'PCI bridge' : 'Ethernet controller' },
          ...(d.bridge ? { pci_bridge: { bus: { number: 0, secondary: 0, subordinate: 0 }, devices: [] } } : {}),
        })) }] };
      }
      case 'device_add': {
        const { id, driver, mac } = args as { id: string; driver: string; mac?: string };
        if (devices.has(id)) return { error: { class: 'GenericError', desc: `Duplicate device ID '${id}'` } };
        devices.set(id, { driver, ...(mac ? { mac } : {}), slot: 10 + devices.size });
        return { return: {} };
      }
      case 'device_del': {
        const id = String(args.id);
        if (!devices.has(id)) return { error: { class: 'DeviceNotFound', desc: `Device '${id}' not found` } };
        if (!state.ackUnplug) return { return: {} };
        devices.delete(id);
        return { return: {}, eventsBefore: [{ event: 'DEVICE_DELETED', data: { device: id, path: `/machine/peripheral/${id}` } }] };
      }
      case 'query-status':
        return { return: { status: state.statuses.length > 1 ? state.statuses.shift()! : state.statuses[0]!, running: true } };
      case 'migrate':
        return { return: {} };
      case 'query-migrate':
        return { return: state.migrate };
      case 'migrate_cancel':
        return { return: {} };
      default:
        return { error: { class: 'CommandNotFound', desc: `The command ${cmd} has not been found` } };
    }
  };
  const qmp = await startFakeQmp(socketPath, handler);
  state = Object.assign(qmp, { devices, statuses: ['running'], migrate: { status: 'completed' }, ackUnplug: true });
  return state;
}
