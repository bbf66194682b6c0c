import { BadInputError } from '../errors.js';
import { quoteInput } from '../util/quote.js';
import { optBool, optInt, parsePciAddr, parseQemuOpts, type OptValue, type QemuOpts } from './qemu-opts.js';

/**
 * What vfpool needs to know of a QEMU command line (libvirt's, or a person's) before adding
 * devices to it: the guest's name, the machine type, whether it is a migration target, and
 * every device with its id, bus and address, so nothing vfpool adds collides with them.
 */
export interface QemuDevice {
  /** Index in argv of the option's VALUE (the JSON or kv text), for editing it in place. */
  argIndex: number;
  opts: QemuOpts;
  driver: string;
  id: string | null;
  bus: string | null;
  addr: { slot: number; fn: number } | null;
  /** pcie-root-port / ioh3420 / xio3130-downstream: the (chassis, slot) pair QEMU keeps unique. */
  chassis: number | null;
  portSlot: number | null;
  mac: string | null;
  netdev: string | null;
}

export type MachineKind = 'q35' | 'i440fx';

export interface ParsedCmdline {
  argv: string[];
  /** `-name guest=NAME,…` (or `-name NAME`); null without -name. */
  name: string | null;
  machine: { type: string; kind: MachineKind; acpi: boolean | null };
  /** `-incoming …`: a migration target, whose VFs come later (DESIGN.md, migration). */
  incoming: boolean;
  nodefaults: boolean;
  devices: QemuDevice[];
  /** Every id on the command line (devices, netdevs, chardevs, objects, …): a new id must be none of them. */
  ids: Set<string>;
  netdevIds: Set<string>;
  /** The root PCI bus's name: `pcie.0` on q35, `pci.0` on i440fx. */
  rootBus: string;
}

// Options that always take a value. Anything else takes one only when the next element does
// not start with '-' (QEMU's flags: -S, -nodefaults, -no-user-config, -snapshot…).
const WITH_VALUE = new Set([
  'accel', 'add-fd', 'append', 'audiodev', 'bios', 'blockdev', 'boot', 'cdrom', 'chardev', 'compat', 'cpu', 'd', 'D', 'device',
  'display', 'drive', 'dtb', 'fda', 'fdb', 'fsdev', 'fw_cfg', 'g', 'global', 'hda', 'hdb', 'hdc', 'hdd', 'icount', 'incoming',
  'initrd', 'k', 'kernel', 'L', 'loadvm', 'm', 'M', 'machine', 'mem-path', 'mon', 'monitor', 'msg', 'name', 'net', 'netdev',
  'nic', 'numa', 'object', 'option-rom', 'overcommit', 'parallel', 'pidfile', 'plugin', 'qmp', 'qmp-pretty', 'readconfig',
  'rtc', 'run-with', 'runas', 'sandbox', 'serial', 'set', 'smbios', 'smp', 'spice', 'tpmdev', 'trace', 'uuid', 'vga', 'virtfs',
  'vnc', 'action', 'semihosting-config', 'iscsi', 'mtdblock', 'sd', 'pflash', 'usbdevice', 'watchdog-action', 'chroot', 'xen-domid',
]);

const ROOT_PORT_DRIVERS = new Set(['pcie-root-port', 'ioh3420', 'xio3130-downstream']);

function str(v: OptValue | undefined): string | null {
  return v === undefined ? null : String(v);
}

/** q35 or i440fx from a machine type name (`q35`, `pc-q35-10.0`, `pc`, `pc-i440fx-10.0`, `pc-1.0`). */
export function machineKind(type: string): MachineKind | null {
  if (/^(pc-)?q35(-|$)/.test(type)) return 'q35';
  if (/^pc(-i440fx(-.*)?|-[0-9].*)?$/.test(type)) return 'i440fx';
  return null;
}

/**
 * Walks argv once. Understands `-device driver,k=v` and `-device {JSON}`, `--opt` as `-opt`,
 * `-name guest=NAME,…`, `-machine`/`-M` (kv or JSON; a later type wins, as in QEMU),
 * `-incoming`, `-netdev`, and ids of `-chardev`, `-object`, `-blockdev`, `-mon`, `-fsdev`.
 * Refuses (exit 2, one line) what it cannot read: a machine that is neither q35 nor i440fx
 * (vfpool would not know where PCI devices go), a malformed JSON option.
 */
export function parseQemuArgv(argv: string[]): ParsedCmdline {
  let name: string | null = null;
  let machineType: string | null = null;
  let acpi: boolean | null = null;
  let incoming = false;
  let nodefaults = false;
  const devices: QemuDevice[] = [];
  const ids = new Set<string>();
  const netdevIds = new Set<string>();

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-')) continue; // a disk image given bare
    const opt = arg.replace(/^--?/, '');
    const next = argv[i + 1];
    const takesValue = WITH_VALUE.has(opt) || (next !== undefined && !next.startsWith('-'));
    if (opt === 'nodefaults') nodefaults = true;
    if (!takesValue || next === undefined) continue;
    i++;
    const what = `QEMU argument ${i + 1} (-${opt} ${next})`;
    switch (opt) {
      case 'name': {
        const o = parseQemuOpts(next, 'guest', what);
        name = str(o.props.guest);
        break;
      }
      case 'machine':
      case 'M': {
        const o = parseQemuOpts(next, 'type', what);
        if (o.props.type !== undefined) machineType = String(o.props.type);
        const a = optBool(o.props.acpi);
        if (a !== undefined) acpi = a;
        break;
      }
      case 'incoming':
        incoming = true;
        break;
      case 'device': {
        const o = parseQemuOpts(next, 'driver', what);
        const driver = str(o.props.driver);
        if (driver === null) throw new BadInputError(`${what}: names no driver`);
        const id = str(o.props.id);
        if (id !== null) ids.add(id);
        const rootPort = ROOT_PORT_DRIVERS.has(driver);
        devices.push({
          argIndex: i,
          opts: o,
          driver,
          id,
          bus: str(o.props.bus),
          addr: parsePciAddr(o.props.addr),
          chassis: rootPort ? optInt(o.props.chassis) ?? 0 : null,
          portSlot: rootPort ? optInt(o.props.slot) ?? 0 : null,
          mac: str(o.props.mac)?.toLowerCase() ?? null,
          netdev: str(o.props.netdev),
        });
        break;
      }
      case 'netdev':
      case 'chardev':
      case 'object':
      case 'blockdev':
      case 'fsdev':
      case 'audiodev':
      case 'mon': {
        const implied = opt === 'netdev' || opt === 'chardev' || opt === 'audiodev' ? 'type' : opt === 'object' ? 'qom-type' : opt === 'mon' ? 'chardev' : 'driver';
        const o = parseQemuOpts(next, implied, what);
        const id = str(o.props.id ?? (opt === 'blockdev' ? o.props['node-name'] : undefined));
        if (id !== null) {
          ids.add(id);
          if (opt === 'netdev') netdevIds.add(id);
        }
        break;
      }
    }
  }

  // QEMU's x86_64 default machine is `pc` (i440fx).
  const type = machineType ?? 'pc';
  const kind = requireMachineKind(type);
  return { argv, name, machine: { type, kind, acpi }, incoming, nodefaults, devices, ids, netdevIds, rootBus: kind === 'q35' ? 'pcie.0' : 'pci.0' };
}

/**
 * q35 or i440fx, or the refusal: the wrapper's, for -machine, and prepare's, for the domain
 * XML's <os><type machine>, which libvirt hands to QEMU as it is.
 */
export function requireMachineKind(type: string): MachineKind {
  const kind = machineKind(type);
  if (kind === null) {
    throw new BadInputError(`QEMU machine type ${quoteInput(type)} is neither q35 nor i440fx (pc)`, 'vfpool places PCI devices on q35 or i440fx machines only: use -machine q35 (or pc)');
  }
  return kind;
}

/** virtio-net NIC drivers that can be a failover standby. */
export function isVirtioNet(driver: string): boolean {
  return /^virtio-net-pci(-transitional|-non-transitional)?$/.test(driver);
}

const LIBVIRT_VIRTIO_MODELS = new Map([['virtio', 'virtio-net-pci'], ['virtio-transitional', 'virtio-net-pci-transitional'], ['virtio-non-transitional', 'virtio-net-pci-non-transitional']]);

/** The QEMU device libvirt makes of an <interface>'s <model type>: virtio's by its PCI name, the others (e1000e, rtl8139…) by their own. */
export function libvirtNicDriver(model: string): string {
  return LIBVIRT_VIRTIO_MODELS.get(model) ?? model;
}
