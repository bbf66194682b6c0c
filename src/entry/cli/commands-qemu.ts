import { DRY_RUN, JSON_OUT, parseSeconds, secondsOption, type CommandDef } from './define.js';
import { cliContext, out } from './output.js';

export const QEMU_COMMANDS: CommandDef[] = [
  {
    name: 'qemu-args',
    args: '[domain]',
    describe: 'print the QEMU arguments the wrapper adds for a domain (a prepared one, or --xml for requests that need no VF)',
    positionals: { domain: { describe: 'a domain prepared by vfpool (its plan is read from the state directory)' } },
    options: {
      xml: { type: 'string', describe: 'a domain XML whose requests need no VF (<vfpool:sriov-nic>)' },
      machine: { type: 'string', default: 'q35', describe: 'the machine type of the command line to add to' },
      ...JSON_OUT,
    },
    examples: [
      ['qemu-args vm1', 'what vfpool-qemu adds to vm1\'s command line after `vfpool prepare`'],
      ['qemu-args --xml nic.xml --json', 'the arguments of an emulated SR-IOV NIC, one argv element each'],
    ],
    async run(a: { domain?: string; xml?: string; machine: string; json: boolean }) {
      const ctx = cliContext('qemu-args');
      // Loaded when the command runs: every other `vfpool` call starts without evaluating it.
      const { printQemuArgs, qemuArgsCommand } = await import('../qemu-args-command.js');
      const r = await qemuArgsCommand(ctx, a);
      if (a.json) out(JSON.stringify(r));
      else printQemuArgs(r);
      return 0;
    },
  },
  {
    name: 'guest-devices',
    args: '<domain>',
    describe: "ask a running guest's QEMU (over vfpool's QMP socket) what is on its PCI bus, with each NIC's MAC",
    positionals: { domain: { describe: 'a domain whose QEMU runs through vfpool-qemu' } },
    options: { ...JSON_OUT },
    examples: [
      ['guest-devices vm1', "vm1's PCI devices as its QEMU shows them: vfpool-vf0 and its MAC among them"],
      ['guest-devices vm1 --json', '[{"id","address","vendor","device","class","mac"}]'],
    ],
    async run(a: { domain: string; json: boolean }) {
      const ctx = cliContext('guest-devices');
      const { guestDevicesCommand, hiddenPrimaries, printGuestDevices } = await import('../guest-devices-command.js');
      const devices = await guestDevicesCommand(ctx.settings, a.domain);
      out(a.json ? JSON.stringify(devices) : printGuestDevices(a.domain, devices, hiddenPrimaries(ctx.settings, a.domain, devices)).trimEnd());
      return 0;
    },
  },
  {
    name: 'plug',
    args: '<domain>',
    describe: "device_add a domain's VFs into its running QEMU over vfpool's QMP socket (a plan prepared with --delivery hotplug; what the started hook does under libvirt)",
    positionals: { domain: { describe: 'a domain prepared with `vfpool prepare --delivery hotplug`, whose QEMU runs through vfpool-qemu' } },
    options: {
      timeout: secondsOption('seconds each VF may take to show on the guest\'s PCI bus', 30),
      ...DRY_RUN,
      ...JSON_OUT,
    },
    examples: [
      ['plug vm1', "after `vfpool-qemu -name guest=vm1 …` started: vm1's VFs into the root ports the wrapper reserved"],
      ['plug --dry-run vm1', 'say which VFs are missing from the guest and would be added (QEMU is only asked, not changed)'],
    ],
    async run(a: { domain: string; timeout: string | number; json: boolean; dryRun: boolean }) {
      const timeoutSeconds = parseSeconds('timeout', a.timeout, { zeroAllowed: false });
      const ctx = cliContext('plug');
      const [{ plugPlannedVfs }, { qemuArgvBySocket }] = await Promise.all([import('../../qemu/plug.js'), import('../../migrate/devices.js')]);
      const lines: string[] = [];
      const r = await plugPlannedVfs(ctx.settings.stateDir, a.domain, { readArgv: (socket) => qemuArgvBySocket(socket, ctx.settings.procRoot), timeoutMs: timeoutSeconds * 1000, log: (l) => lines.push(l), dryRun: a.dryRun });
      if (a.json) out(JSON.stringify(a.dryRun ? { ...r, dryRun: true } : r));
      else {
        for (const l of lines) if (l.startsWith('device_add ')) out(`Domain ${r.domain}: ${l}: on the guest's PCI bus`);
        for (const l of lines) if (l.startsWith('would device_add ')) out(`Domain ${r.domain}: ${l} (--dry-run, nothing changed)`);
        for (const id of r.present) out(`Domain ${r.domain}: ${id} is on the guest's PCI bus already`);
        if (r.added.length + r.present.length === 0) out(`Domain ${r.domain} has no VF to plug`);
      }
      return 0;
    },
  },
];
