import type { Settings } from '../config/settings.js';
import { HostError } from '../errors.js';
import { flattenQueryPci } from '../qemu/hotplug.js';
import { QmpClient } from '../qemu/qmp.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { escapeControl } from '../util/quote.js';

export interface GuestDevice {
  id: string;
  /** Where the guest sees it: `BB:SS.F` on its PCI bus numbering. */
  address: string;
  vendor: string;
  device: string;
  class: string | null;
  /** A NIC's MAC (QOM property `mac`), else null. */
  mac: string | null;
}

const hex4 = (n: number) => n.toString(16).padStart(4, '0');
const hex2 = (n: number) => n.toString(16).padStart(2, '0');

/**
 * `vfpool guest-devices DOMAIN`: asks the running QEMU over vfpool's QMP socket what is on the
 * guest's PCI bus (`query-pci`, bridges walked into) and each NIC's MAC (`qom-get` of `mac`).
 * Only devices with an id are listed (libvirt's and vfpool's own; QEMU's built-ins have none).
 */
export async function guestDevicesCommand(settings: Settings, domainArg: string): Promise<GuestDevice[]> {
  const domain = parseObjectName(domainArg, 'domain');
  const qmp = await QmpClient.connect(domainQmpSocketPath(settings.stateDir, domain), { timeoutMs: 10_000 }).catch((err: unknown) => {
    throw new HostError(`domain '${domain}': no QEMU answers on vfpool's QMP socket: ${(err as Error).message}`, { hint: 'start it through vfpool-qemu (or as a libvirt domain whose <emulator> is vfpool-qemu)' });
  });
  try {
    const pci = flattenQueryPci(await qmp.execute('query-pci'));
    const devices = pci.filter((d) => d.qdevId !== '');
    const out: GuestDevice[] = [];
    // Devices behind a root port the firmware has not numbered yet (-S, or early boot) are not
    // in query-pci: QOM still knows them and their bus.
    const listed = new Set(devices.map((d) => d.qdevId));
    const unnumbered = new Set(pci.filter((d) => d.secondaryBus === 0).map((d) => d.qdevId));
    const peripherals = (await qmp.execute('qom-list', { path: '/machine/peripheral' })) as Array<{ name: string; type: string }>;
    for (const p of peripherals) {
      if (listed.has(p.name) || !p.type.startsWith('child<')) continue;
      const bus = await qmp.execute('qom-get', { path: `/machine/peripheral/${p.name}`, property: 'parent_bus' }).catch(() => null);
      const port = typeof bus === 'string' ? bus.split('/').filter(Boolean).at(-1) ?? '' : '';
      if (!unnumbered.has(port)) continue;
      devices.push({ qdevId: p.name, bus: -1, slot: 0, function: 0, vendor: -1, device: -1, className: p.type.slice(6, -1), secondaryBus: null, behind: port } as never);
    }
    for (const d of devices) {
      let mac: string | null = null;
      try {
        const v = await qmp.execute('qom-get', { path: `/machine/peripheral/${d.qdevId}`, property: 'mac' });
        if (typeof v === 'string') mac = v;
      } catch {
        // Not a NIC: it has no `mac` property.
      }
      const behind = (d as { behind?: string }).behind;
      out.push(behind !== undefined
        ? { id: d.qdevId, address: `behind ${behind} (bus not numbered yet: the firmware has not run)`, vendor: '', device: '', class: d.className, mac }
        : { id: d.qdevId, address: `${hex2(d.bus)}:${hex2(d.slot)}.${d.function}`, vendor: hex4(d.vendor), device: hex4(d.device), class: d.className, mac });
    }
    return out;
  } finally {
    qmp.close();
  }
}

/**
 * The failover primaries of the domain's plan that QEMU does not show: QEMU creates a primary
 * only once the guest's virtio-net driver acks failover (STANDBY), so a guest that has not (no
 * OS yet, no driver) has none on its bus, which looks like a VF that never arrived. Said, so it
 * is not taken for one. A plan that cannot be read adds nothing (the devices are QEMU's answer).
 */
export function hiddenPrimaries(settings: Settings, domain: string, devices: GuestDevice[]): string[] {
  let plan;
  try {
    plan = readDomainPlan(settings.stateDir, domain);
  } catch {
    return [];
  }
  const shown = new Set(devices.map((d) => d.id));
  return (plan?.vfs ?? []).filter((v) => v.failoverStandbyMac !== null && !shown.has(v.id)).map((v) =>
    `${v.id} (mac ${v.mac ?? v.failoverStandbyMac}) is not on the bus: the failover primary of the virtio-net NIC with mac ${v.failoverStandbyMac}, which QEMU adds only once the guest's virtio-net driver acks failover (a guest with no OS or driver yet never shows it)`);
}

export function printGuestDevices(domain: string, devices: GuestDevice[], notes: string[] = []): string {
  // Ids, MACs and classes are what the QEMU process says, and a QEMU a guest broke out of says
  // anything: an escape sequence would reach root's terminal. Shown escaped, one row each.
  const rows = devices.map((dev) => {
    const d = { ...dev, id: escapeControl(dev.id), mac: dev.mac === null ? null : escapeControl(dev.mac), class: dev.class === null ? null : escapeControl(dev.class), address: escapeControl(dev.address) };
    return (d.vendor ? `${d.address}  ${d.vendor}:${d.device}  ${d.id.padEnd(22)} ${d.mac ?? ''}` : `${d.id.padEnd(22)} ${d.class ?? ''} ${d.address}  ${d.mac ?? ''}`).trimEnd();
  });
  return [`# the PCI devices QEMU shows domain '${domain}' (bus:slot.function  vendor:device  id  mac)`, ...rows, ...notes.map((n) => `# ${n}`)].join('\n') + '\n';
}
