import { HostError, asVfpoolError } from '../errors.js';
import type { QmpDeviceAdd } from './args.js';
import { QmpClient, QmpCommandError } from './qmp.js';
import { monotonicMs } from '../util/process.js';

/** One device of QEMU's `query-pci`, flattened (bridges and root ports walked into). */
export interface PciDeviceSeen {
  qdevId: string;
  bus: number;
  slot: number;
  function: number;
  vendor: number;
  device: number;
  className: string | null;
  /** A bridge's (root port's) secondary bus number; 0 until the guest firmware numbered it. */
  secondaryBus: number | null;
}

interface QueryPciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id?: string;
  id?: { vendor: number; device: number };
  class_info?: { desc?: string };
  pci_bridge?: { bus?: { number?: number; secondary?: number }; devices?: QueryPciDevice[] };
}

/** Every device `query-pci` lists, behind bridges too (a VF sits behind its pcie-root-port). */
export function flattenQueryPci(result: unknown): PciDeviceSeen[] {
  const out: PciDeviceSeen[] = [];
  const walk = (devs: QueryPciDevice[] | undefined) => {
    for (const d of devs ?? []) {
      out.push({
        qdevId: d.qdev_id ?? '',
        bus: d.bus,
        slot: d.slot,
        function: d.function,
        vendor: d.id?.vendor ?? 0,
        device: d.id?.device ?? 0,
        className: d.class_info?.desc ?? null,
        secondaryBus: d.pci_bridge ? d.pci_bridge.bus?.secondary ?? 0 : null,
      });
      walk(d.pci_bridge?.devices);
    }
  };
  for (const bus of (Array.isArray(result) ? result : []) as Array<{ devices?: QueryPciDevice[] }>) walk(bus.devices);
  return out;
}

export interface HotplugOptions {
  /** Only say which devices are missing and would be added (read-only QMP commands). */
  dryRun?: boolean;
  /** How long to wait for each device to show in query-pci after device_add. */
  timeoutMs: number;
  pollMs?: number;
  log?: (line: string) => void;
}

/**
 * `device_add`s each device over `qmp` and waits (bounded) until `query-pci` lists its id, the
 * way libvirt waits for a hostdev it hotplugs. A device already there is left alone (a second
 * `started` hook, or a reconnect, adds nothing). A failover primary (`failover_pair_id`) is not
 * waited for: QEMU keeps it hidden, out of query-pci, until the guest's virtio-net acks
 * STANDBY, which may be long after the hook returned.
 */
export async function hotplugDevices(qmp: QmpClient, devices: QmpDeviceAdd[], opts: HotplugOptions): Promise<string[]> {
  const pollMs = opts.pollMs ?? 100;
  // QEMU's query-pci lists what is behind a bridge only once the guest firmware gave the bridge
  // a secondary bus number; before that (a guest still in its firmware, or started with -S) a
  // device behind an unnumbered root port counts as there when QOM says it is realized.
  const seen = async () => {
    const all = flattenQueryPci(await qmp.execute('query-pci'));
    const ids = new Set(all.map((d) => d.qdevId));
    for (const d of devices) {
      if (ids.has(d.id) || !all.some((b) => b.qdevId === d.bus && b.secondaryBus === 0)) continue;
      const realized = await qmp.execute('qom-get', { path: `/machine/peripheral/${d.id}`, property: 'realized' }).catch(() => false);
      if (realized === true) ids.add(d.id);
    }
    return ids;
  };
  const added: string[] = [];
  const present = await seen();
  for (const d of devices) {
    if (present.has(d.id)) {
      opts.log?.(`${d.id} is already on the guest's PCI bus`);
      continue;
    }
    if (opts.dryRun) {
      added.push(d.id);
      opts.log?.(`would device_add ${d.id} (${d.driver}) into ${d.bus}`);
      continue;
    }
    try {
      await qmp.execute('device_add', { ...d });
    } catch (err) {
      // The QEMU answer names the cause (no /dev/vfio/N, memlock, the bus): keep it whole.
      const why = err instanceof QmpCommandError ? err.message : asVfpoolError(err).message;
      throw new HostError(`device_add of ${d.id} (${d.driver}${d.host ? ` host=${d.host}` : ''}) into ${d.bus} failed: ${why}`, { hint: 'see the domain log; the VF goes back to the pool when libvirt releases the domain' });
    }
    added.push(d.id);
    opts.log?.(`device_add ${d.id} (${d.driver}) into ${d.bus}`);
    if (d.failover_pair_id !== undefined) continue;
    const deadline = monotonicMs() + opts.timeoutMs;
    while (!(await seen()).has(d.id)) {
      if (monotonicMs() > deadline) {
        throw new HostError(`${d.id} (${d.driver}) was added but did not show in QEMU's query-pci within ${Math.round(opts.timeoutMs / 1000)} s`, { code: 'ETIMEDOUT', hint: 'QEMU may be overloaded; look at the domain log and try starting it again' });
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
  return added;
}
