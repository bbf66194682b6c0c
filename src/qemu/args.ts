import { BadInputError, ConflictError } from '../errors.js';
import type { DomainPlanV1, DomainPlanVf } from '../state/domain-plan.js';
import { isVirtioNet, libvirtNicDriver, type MachineKind, type ParsedCmdline, type QemuDevice } from './cmdline.js';
import { quoteInput } from '../util/quote.js';
import { formatKv, hex, optBool, type OptValue } from './qemu-opts.js';
import { hasQmpSocket, QMP_CHARDEV_ID, qmpMonitorArgs } from './qmp-monitor.js';
import { rootBusSlots, takeChassis, takeFreeSlot, takePinnedSlot, usedChassis, type SlotMap } from './pci-slots.js';
import { planSriovNic } from './sriov-nic.js';

/** A device as QMP `device_add` takes it: the same device the command line would carry. */
export interface QmpDeviceAdd {
  driver: string;
  id: string;
  bus: string;
  addr?: string;
  host?: string;
  mac?: string;
  /** '' on an emulated stand-in: no option ROM (see vfDevice). */
  romfile?: string;
  failover_pair_id?: string;
}

export interface QemuCaps {
  /** The QEMU binary asked (for messages). */
  qemu: string;
  /** virtio-net-pci has `sriov-pf` (QEMU >= 10.1): emulated SR-IOV NICs are possible. */
  sriovPf: boolean;
}

export interface PlanQemuArgsOptions {
  /** vfpool's own QMP socket (`$VFPOOL_STATE_DIR/qemu/NAME/qmp.sock`); null adds none. */
  qmpSocketPath: string | null;
  /** What the QEMU in use supports; needed only when the plan has emulated SR-IOV NICs. */
  caps?: QemuCaps;
}

/** An edit of a device already on the command line (the failover standby). */
export interface DeviceEdit {
  device: string;
  argIndex: number;
  set: Record<string, OptValue>;
}

export interface QemuArgsResult {
  /** The full edited argv. */
  argv: string[];
  /** Only what vfpool appends (`vfpool qemu-args`). */
  added: string[];
  edits: DeviceEdit[];
  /** delivery 'hotplug': the devices the `started` hook device_adds, in order. */
  hotplug: QmpDeviceAdd[];
  /** Where each VF went: its id, the bus and slot the guest sees it at, or why it was left off. */
  placements: Array<{ id: string; bus: string; slot: number; rootPort: string | null; delivered: 'cmdline' | 'hotplug' | 'left-off-incoming' }>;
}


/**
 * One `-device` value in the form the command line already uses. QEMU creates every kv
 * `-device` before every JSON one (qemu_create_cli_devices()), whatever their argv order:
 * a kv failover primary added to libvirt's JSON command line would be created before its
 * standby and not be hidden (tried on QEMU 10.0). So vfpool speaks JSON wherever libvirt does.
 */
export function deviceArg(props: Record<string, OptValue>, json: boolean): string {
  return json ? JSON.stringify(props) : formatKv(props, 'driver');
}

function vfIndex(id: string): number {
  return Number(id.slice('vfpool-vf'.length));
}

/** The VF's device: vfio-pci on a real host, the emulated NIC model on a simulated one. */
function vfDevice(vf: DomainPlanVf, where: string, bus: string, addr: string, pairId: string | null): QmpDeviceAdd {
  const d: QmpDeviceAdd = vf.emulatedModel !== null
    ? { driver: vf.emulatedModel, id: vf.id, bus, addr }
    : { driver: 'vfio-pci', id: vf.id, bus, addr, host: vf.host! };
  if (vf.emulatedModel !== null) {
    if (vf.mac === null) throw new BadInputError(`${where}: the emulated ${vf.emulatedModel} stands in for a VF but has no MAC`, 'the plan must carry the VF\'s MAC');
    d.mac = vf.mac;
    // An emulated NIC loads its option ROM into a RAM block that QEMU sends at a migration's
    // setup; a destination that left the device off (plain VF under -incoming) or keeps it
    // hidden (failover primary) has no such block and refuses the stream ('Unknown ramblock
    // "…/e1000e.rom", cannot accept migration', measured on QEMU 10.0). A VF's vfio-pci ROM
    // is no RAM block, so only the stand-in goes without one.
    d.romfile = '';
  }
  if (pairId !== null) d.failover_pair_id = pairId;
  return d;
}

/** The standby virtio-net of a hybrid VF, found by MAC (its id is libvirt's: net0, ua-*, …). */
function findStandby(cmd: ParsedCmdline, vf: DomainPlanVf, where: string): QemuDevice {
  const mac = vf.failoverStandbyMac!;
  if (vf.mac !== null && vf.mac !== mac) {
    throw new BadInputError(`${where}: VF MAC ${vf.mac} differs from its standby's MAC ${mac}`, "the guest's net_failover pairs the two NICs by MAC: give both the same");
  }
  const nics = cmd.devices.filter((d) => isVirtioNet(d.driver) && d.mac === mac);
  if (nics.length === 0) {
    const others = cmd.devices.filter((d) => d.mac === mac).map((d) => `${d.id ?? 'a device'} (${d.driver})`);
    throw new BadInputError(
      `${where}: no virtio-net device with mac=${mac} on QEMU's command line to pair with${others.length ? `; ${others.join(', ')} has that MAC but is not virtio-net` : ''}`,
      "the failover standby is the domain's <interface> with that MAC and <model type='virtio'/>",
    );
  }
  if (nics.length > 1) throw new BadInputError(`${where}: ${nics.length} virtio-net devices have mac=${mac} (${nics.map((d) => d.id ?? '?').join(', ')})`, 'give each NIC its own MAC');
  return nics[0]!;
}

/** An emulated SR-IOV NIC is PCI Express (VFs beside their PF on a root port): the wrapper's check, and prepare's on the domain XML. */
export function checkSriovNicMachine(kind: MachineKind, where: string): void {
  if (kind !== 'q35') throw new BadInputError(`${where}: an emulated SR-IOV NIC needs PCI Express, and this is an i440fx machine`, "use a q35 machine (<type machine='q35'> in the domain's <os>, -machine q35)");
}

/**
 * What the wrapper asks of a failover standby, asked of libvirt's <interface> at prepare: the
 * device libvirt makes of its <model> must be virtio-net (findStandby pairs only with one).
 */
export function checkStandbyModel(model: string | null, where: string): void {
  if (model !== null && isVirtioNet(libvirtNicDriver(model))) return;
  throw new BadInputError(
    `${where}: a pci-passthrough-hybrid interface is its VF's failover standby, which QEMU makes only of virtio-net, and ${model === null ? 'it has no <model> (libvirt\'s default NIC is not virtio-net)' : `<model type=${quoteInput(model)}/> is not virtio-net`}`,
    "give it <model type='virtio'/>",
  );
}

/**
 * Turns a domain's plan and the QEMU command line it is about to run with into the edited
 * command line. Pure: same plan + same argv → same argv out, so a VF lands on the same guest
 * slot on every boot. Every refusal is one line (exit 2 bad input, 3 conflict):
 * a pinned slot the chipset or a device holds, a failover standby missing or claimed twice,
 * failover where hotplug is impossible, ids already on the command line, an emulated SR-IOV
 * NIC on i440fx or an older QEMU.
 */
export function planQemuArgs(plan: DomainPlanV1, cmd: ParsedCmdline, opts: PlanQemuArgsOptions): QemuArgsResult {
  const dom = `domain '${plan.domain}'`;
  const q35 = cmd.machine.kind === 'q35';
  const json = cmd.devices.some((d) => d.opts.form === 'json');
  const ids = new Set(cmd.ids);
  const claimId = (id: string) => {
    if (ids.has(id)) throw new ConflictError(`${dom}: QEMU's command line already has the id '${id}'`, 'vfpool names its own devices vfpool-*: remove them from the command line (the wrapper adds them)');
    ids.add(id);
  };
  const slots: SlotMap = rootBusSlots(cmd);
  const chassis = usedChassis(cmd);
  const added: string[] = [];
  const devices: QmpDeviceAdd[] = [];
  const hotplug: QmpDeviceAdd[] = [];
  const edits: DeviceEdit[] = [];
  const placements: QemuArgsResult['placements'] = [];
  const standbyOf = new Map<string, string>();

  // Step 1: pinned slots first, so a generated slot never takes one a later VF pinned.
  const slotOf = new Map<string, number>();
  for (const vf of plan.vfs) {
    if (vf.guestAddress !== null) slotOf.set(vf.id, takePinnedSlot(slots, cmd, vf.guestAddress.slot, `${vf.id} (guest-slot in the metadata of ${dom})`));
  }

  for (const vf of [...plan.vfs].sort((a, b) => vfIndex(a.id) - vfIndex(b.id))) {
    const where = `${dom}: ${vf.id}`;
    const slot = slotOf.get(vf.id) ?? takeFreeSlot(slots, cmd, `${vf.id} of ${dom}`);
    claimId(vf.id);

    // Step 2: the failover pair. QEMU hides the primary only if its standby exists when the
    // primary is created, so vfpool's devices go after libvirt's.
    let pairId: string | null = null;
    if (vf.failoverStandbyMac !== null) {
      const standby = findStandby(cmd, vf, where);
      const key = String(standby.argIndex);
      if (standbyOf.has(key)) throw new BadInputError(`${where}: its standby ${standby.id ?? `mac=${vf.failoverStandbyMac}`} already pairs with ${standbyOf.get(key)}`, 'QEMU allows one primary per standby');
      // libvirt's own failover (<teaming type='transient' persistent='ua-net0'/> on an
      // <interface type='hostdev'>) puts a primary for the same standby on the command line;
      // QEMU would refuse the second ("Cannot attach more than one primary device").
      const other = standby.id === null ? undefined : cmd.devices.find((d) => d.opts.props.failover_pair_id === standby.id);
      if (other) {
        throw new BadInputError(
          `${where}: its standby ${standby.id} already has a failover primary on QEMU's command line, ${other.id ?? 'a device'} (${other.driver}), and QEMU allows one primary per standby`,
          "drop libvirt's <teaming> from the domain's interfaces: the pci-passthrough-hybrid pool gives the interface its VF partner",
        );
      }
      standbyOf.set(key, vf.id);
      if (!q35 && cmd.machine.acpi === false) {
        throw new BadInputError(`${where}: a failover primary must be hot-pluggable, and pci.0 of this i440fx machine has no hotplug (acpi=off)`, 'enable ACPI (<features><acpi/>) or use a q35 machine');
      }
      const set: Record<string, OptValue> = {};
      if (optBool(standby.opts.props.failover) !== true) set.failover = standby.opts.form === 'json' ? true : 'on';
      pairId = standby.id;
      if (pairId === null) {
        pairId = `${vf.id}-standby`;
        claimId(pairId);
        set.id = pairId;
      }
      if (Object.keys(set).length) edits.push({ device: standby.id ?? pairId, argIndex: standby.argIndex, set });
    }

    // Step 3: its own hotpluggable root port on q35 (failover needs one; so does hotplug
    // delivery), or the slot itself on i440fx's pci.0.
    let bus = cmd.rootBus;
    let addr = hex(slot);
    let rootPort: string | null = null;
    if (q35) {
      rootPort = `vfpool-rp${vfIndex(vf.id)}`;
      claimId(rootPort);
      added.push('-device', deviceArg({ driver: 'pcie-root-port', id: rootPort, bus: cmd.rootBus, addr: hex(slot), chassis: takeChassis(chassis), slot: 0 }, json));
      bus = rootPort;
      addr = '0x0';
    } else if (plan.delivery === 'hotplug' && cmd.machine.acpi === false) {
      throw new BadInputError(`${where}: hotplug delivery needs a hot-pluggable pci.0, and this i440fx machine has acpi=off`, 'enable ACPI or use a q35 machine');
    }

    const device = vfDevice(vf, where, bus, addr, pairId);
    // A migration target gets a plain VF only after the migration (DESIGN.md, migration); a
    // failover primary stays: QEMU keeps it hidden until the guest acks the standby again.
    if (cmd.incoming && pairId === null) {
      placements.push({ id: vf.id, bus, slot, rootPort, delivered: 'left-off-incoming' });
      continue;
    }
    if (plan.delivery === 'hotplug') hotplug.push(device);
    else devices.push(device);
    placements.push({ id: vf.id, bus, slot, rootPort, delivered: plan.delivery });
  }
  for (const d of devices) added.push('-device', deviceArg({ ...d }, json));

  // Step 4: emulated SR-IOV NICs, always on the command line (nothing to hand over).
  plan.sriovNics.forEach((nic) => {
    const where = `${dom}: <vfpool:sriov-nic> ${nic.id}`;
    checkSriovNicMachine(cmd.machine.kind, where);
    if (!opts.caps?.sriovPf) {
      throw new BadInputError(
        `${where}: the QEMU in use${opts.caps ? ` (${opts.caps.qemu})` : ''} has no virtio-net 'sriov-pf' property: emulated SR-IOV needs QEMU >= 10.1`,
        'install QEMU 10.1 or later and point VFPOOL_QEMU at it',
      );
    }
    added.push(...planSriovNic(nic, { rootBus: cmd.rootBus, slot: takeFreeSlot(slots, cmd, `${nic.id} of ${dom}`), chassis: takeChassis(chassis), claimId, json }));
  });

  // Step 5: vfpool's own QMP monitor, for hotplug at `started` and unplug before migration.
  if (opts.qmpSocketPath !== null) {
    claimId(QMP_CHARDEV_ID);
    if (hasQmpSocket(cmd.argv, opts.qmpSocketPath)) {
      throw new ConflictError(`${dom}: QEMU's command line already has vfpool's QMP socket ${opts.qmpSocketPath}`, 'vfpool-qemu adds it: remove it from the command line, or start QEMU through one vfpool-qemu, not two');
    }
    added.push(...qmpMonitorArgs(opts.qmpSocketPath));
  }

  const argv = [...cmd.argv];
  for (const e of edits) {
    const d = cmd.devices.find((x) => x.argIndex === e.argIndex)!;
    const props = { ...d.opts.props, ...e.set };
    argv[e.argIndex] = d.opts.form === 'json' ? JSON.stringify(props) : formatKv(props, 'driver');
  }
  argv.push(...added);
  return { argv, added, edits, hotplug, placements };
}

/**
 * For the `started` hook of a hotplug delivery: the `device_add` objects for a QEMU that runs
 * with the command line the wrapper produced (read from /proc/PID/cmdline). They are the ones
 * `planQemuArgs(...).hotplug` gave the wrapper: on q35 each VF goes into the root port the
 * wrapper reserved (`vfpool-rpN`, refused if missing: QEMU was not started through the
 * wrapper); on i440fx the slot choice is replayed (the wrapper added no device there).
 */
export function planHotplugDevices(plan: DomainPlanV1, running: ParsedCmdline): QmpDeviceAdd[] {
  if (running.machine.kind !== 'q35') return planQemuArgs({ ...plan, delivery: 'hotplug', sriovNics: [] }, running, { qmpSocketPath: null }).hotplug;
  return plan.vfs.map((vf) => {
    const where = `domain '${plan.domain}': ${vf.id}`;
    const rootPort = `vfpool-rp${vfIndex(vf.id)}`;
    if (!running.devices.some((d) => d.id === rootPort && d.driver === 'pcie-root-port')) {
      throw new BadInputError(`${where}: the running QEMU has no root port ${rootPort} on its command line`, "start the domain through vfpool-qemu (its <emulator>), which reserves the port");
    }
    const pairId = vf.failoverStandbyMac === null ? null : findStandby(running, vf, where).id ?? `${vf.id}-standby`;
    return vfDevice(vf, where, rootPort, '0x0', pairId);
  });
}
