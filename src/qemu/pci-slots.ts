import { BadInputError, ConflictError } from '../errors.js';
import type { ParsedCmdline, QemuDevice } from './cmdline.js';
import { hex } from './qemu-opts.js';

/**
 * The slots of the root PCI bus (pcie.0 on q35, pci.0 on i440fx) as QEMU will fill them from
 * the command line, so a device vfpool adds with an explicit `addr` collides with nothing.
 *
 * QEMU creates the kv `-device`s in argv order, then the JSON ones in argv order: one with
 * `addr` takes that slot, one without takes the lowest slot whose function 0 is free at that
 * moment. vfpool's devices come last, so it replays that order and picks from the top of the bus downwards:
 * libvirt and people fill it from the bottom, and a guest's address then does not move when
 * a device is added below it.
 */
export interface SlotMap {
  owner: Map<number, string>;
  reserved: Map<number, string>;
}

// Devices that never sit on a PCI bus (ISA, USB, SCSI, virtio-serial ports, …).
const NOT_PCI = /^(isa-|usb-|scsi-|ide-|hda-|virtserialport$|virtconsole$|pc-dimm$|nvdimm$|pvpanic$|tpm-tis$|sga$|vmcoreinfo$|floppy$|i8042$|kvmclock$|vhost-user-fs-device$|virtio-.*-device$)/;

function describe(d: QemuDevice): string {
  return `${d.id !== null ? `device '${d.id}'` : 'a device without id'} (${d.driver}${d.addr ? ` at ${hex(d.addr.slot)}.${d.addr.fn}` : ''})`;
}

function onRootBus(d: QemuDevice, cmd: ParsedCmdline): boolean {
  if (d.bus !== null) return d.bus === cmd.rootBus;
  return !NOT_PCI.test(d.driver);
}

export function rootBusSlots(cmd: ParsedCmdline): SlotMap {
  const reserved = new Map<number, string>([[0, 'the host bridge']]);
  if (cmd.machine.kind === 'q35') reserved.set(0x1f, "the q35 chipset's ICH9 LPC/SATA/SMBus functions");
  else reserved.set(0x01, "the i440fx chipset's PIIX3 ISA/IDE/USB/ACPI functions");
  const owner = new Map<number, string>(reserved);
  const autoPlace = (who: string) => {
    for (let s = 1; s < 32; s++) {
      if (!owner.has(s)) {
        owner.set(s, who);
        return;
      }
    }
  };
  // Without -nodefaults QEMU adds a VGA card and a NIC of its own before any -device.
  if (!cmd.nodefaults) {
    autoPlace("QEMU's default VGA card (no -nodefaults)");
    autoPlace("QEMU's default NIC (no -nodefaults)");
  }
  const creationOrder = [...cmd.devices.filter((d) => d.opts.form === 'kv'), ...cmd.devices.filter((d) => d.opts.form === 'json')];
  for (const d of creationOrder) {
    if (!onRootBus(d, cmd)) continue;
    if (d.addr !== null) {
      if (!owner.has(d.addr.slot) || reserved.has(d.addr.slot)) owner.set(d.addr.slot, describe(d));
    } else autoPlace(`${describe(d)}, placed by QEMU at the lowest free slot`);
  }
  return { owner, reserved };
}

/** The highest free slot (q35 stops below the chipset's 0x1f), taken in `slots`. */
export function takeFreeSlot(slots: SlotMap, cmd: ParsedCmdline, forWhat: string): number {
  for (let s = 31; s >= 1; s--) {
    if (!slots.owner.has(s)) {
      slots.owner.set(s, forWhat);
      return s;
    }
  }
  throw new ConflictError(`no free slot left on ${cmd.rootBus} for ${forWhat}`, "every slot of the guest's root bus is taken: remove devices, or ask for fewer VFs");
}

/** A slot pinned by the metadata: refused if the chipset or a device on the command line has it. */
export function takePinnedSlot(slots: SlotMap, cmd: ParsedCmdline, slot: number, forWhat: string): number {
  const reserved = slots.reserved.get(slot);
  if (reserved !== undefined) {
    throw new BadInputError(`guest slot ${hex(slot)} for ${forWhat} belongs to ${reserved} on ${cmd.rootBus}`, 'pick another guest-slot');
  }
  const owner = slots.owner.get(slot);
  if (owner !== undefined) {
    throw new ConflictError(`guest slot ${hex(slot)} for ${forWhat} is taken on ${cmd.rootBus} by ${owner}`, 'pick another guest-slot, or move that device');
  }
  slots.owner.set(slot, forWhat);
  return slot;
}

/**
 * A chassis number no port on the command line uses. QEMU refuses two hotplug ports with the
 * same (chassis, slot) pair; libvirt numbers its ports' chassis from 1 up, so vfpool counts
 * from 0x80 up, keeping the same number on every boot of an unchanged command line.
 */
export function takeChassis(used: Set<number>): number {
  for (let c = 0x80; c < 0x100; c++) {
    if (!used.has(c)) {
      used.add(c);
      return c;
    }
  }
  for (let c = 1; c < 0x80; c++) {
    if (!used.has(c)) {
      used.add(c);
      return c;
    }
  }
  throw new ConflictError('every chassis number 1-255 is used by a PCIe port on the command line', 'remove some pcie-root-ports');
}

export function usedChassis(cmd: ParsedCmdline): Set<number> {
  const used = new Set<number>();
  for (const d of cmd.devices) {
    if (d.chassis !== null) used.add(d.chassis);
    const nr = d.opts.props.chassis_nr;
    if (nr !== undefined && /^[0-9]+$/.test(String(nr))) used.add(Number(nr));
  }
  return used;
}
