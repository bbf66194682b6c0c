import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { planQemuArgs, type QmpDeviceAdd } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { errnoOf } from '../../src/errors.js';
import { domainQmpSocketPath, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress } from '../../src/types.js';
import { libvirtQ35Argv } from '../helpers/qemu-argv.js';
import { REPO, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';

/**
 * Needs QEMU 10 (qemu-system-x86 from bookworm-backports; scripts/install-lab-packages.sh).
 * A real QEMU is started through the wrapper (-S, no disk, -display none, TCG, q35) with a
 * generated plan and read back over vfpool's own QMP socket. An emulated e1000e stands in for
 * the VF (VFPOOL_SIM_VF_DEVICE's path): QEMU treats it as a failover primary like a vfio-pci.
 * Without QEMU the test is skipped, except under CI=true, where that is a failure.
 */
const QEMU = process.env.VFPOOL_TEST_QEMU ?? '/usr/bin/qemu-system-x86_64';
const SHIM = join(REPO, 'qemu-args/vfpool-qemu');
const MAC = '52:54:00:aa:bb:01' as MacAddress;
const MAC2 = '52:54:00:aa:bb:02' as MacAddress;

if (!existsSync(QEMU)) {
  if (process.env.CI === 'true') t.fail(`QEMU ${QEMU} is missing: install qemu-system-x86 (scripts/install-lab-packages.sh)`);
  else t.plan(0, `needs QEMU at ${QEMU} (qemu-system-x86 10 from bookworm-backports)`);
} else {
  /** libvirt's q35 command line without its monitor fd (there is no libvirt here). */
  const baseArgv = (name: string) => {
    const a = libvirtQ35Argv(name, MAC);
    const i = a.indexOf('-chardev');
    a.splice(i, 4);
    return a;
  };

  async function launch(t: Tap, plan: DomainPlanV1): Promise<{ qemu: ChildProcess; qmp: QmpClient; argv: string[]; state: string; exited: Promise<number | null> }> {
    // A short state dir: the QMP socket path must fit in sun_path (108 bytes).
    const state = mkdtempSync('/tmp/vfpool-rq-');
    const etc = join(state, 'etc');
    mkdirSync(etc);
    t.teardown(() => rmSync(state, { recursive: true, force: true }));
    await writeDomainPlan(state, plan, { uid: process.getuid!(), gid: process.getgid!() });
    const argv = baseArgv(plan.domain);
    const [envBin, ...unset] = WITHOUT_TAP_LOADER;
    const qemu = spawn(envBin, [...unset, SHIM, ...argv], { env: { PATH: '/usr/bin:/bin', VFPOOL_STATE_DIR: state, VFPOOL_QEMU: QEMU, VFPOOL_CONFIG_DIR: etc }, stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => qemu.on('exit', (code) => resolve(code)));
    t.teardown(() => void qemu.kill('SIGKILL'));
    const sock = domainQmpSocketPath(state, plan.domain);
    const deadline = Date.now() + 20_000;
    while (!existsSync(sock)) {
      if (Date.now() > deadline || qemu.exitCode !== null) throw new Error(`QEMU did not create ${sock} (exit ${qemu.exitCode})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // QEMU binds the socket file before it listens on it: a connect in between is refused
    // (seen under load). Until it accepts, within the same deadline.
    let qmp: QmpClient;
    for (;;) {
      try {
        qmp = await QmpClient.connect(sock);
        break;
      } catch (err) {
        if (errnoOf(err) !== 'ECONNREFUSED' || Date.now() > deadline || qemu.exitCode !== null) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    t.teardown(() => qmp.close());
    return { qemu, qmp, argv, state, exited };
  }
  type Tap = { teardown: (fn: () => void) => void };
  type PciDev = { qdev_id: string; slot: number; bus: number; id: { vendor: number; device: number } };
  const pciDevices = async (qmp: QmpClient) => {
    const buses = await qmp.execute<Array<{ bus: number; devices: Array<PciDev & { pci_bridge?: { devices?: PciDev[] } }> }>>('query-pci');
    return buses.flatMap((b) => b.devices.flatMap((d) => [d, ...(d.pci_bridge?.devices ?? [])]));
  };
  const peripherals = async (qmp: QmpClient) => (await qmp.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' })).map((p) => p.name).sort();
  const qomGet = (qmp: QmpClient, dev: string, property: string) => qmp.execute('qom-get', { path: `/machine/peripheral/${dev}`, property });

  t.test('QEMU 10 through the wrapper: root ports where planned, failover on the standby, the primary hidden', async (t) => {
    const plan: DomainPlanV1 = {
      version: 1, domain: 'rq1', uuid: null, delivery: 'cmdline', sriovNics: [],
      vfs: [
        { id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC, failoverStandbyMac: MAC, guestAddress: null },
        { id: 'vfpool-vf1', host: null, emulatedModel: 'e1000e', mac: MAC2, failoverStandbyMac: null, guestAddress: { slot: 0x10 } },
      ],
    };
    const { qemu, qmp, argv, exited } = await launch(t, plan);
    t.equal(readlinkSync(`/proc/${qemu.pid}/exe`), realpathSync(QEMU), 'the pid libvirt would hold is QEMU itself (exec)');
    const expected = planQemuArgs(plan, parseQemuArgv(argv), { qmpSocketPath: '' }).placements;
    const pci = await pciDevices(qmp);
    for (const p of expected) {
      const rp = pci.find((d) => d.qdev_id === p.rootPort);
      t.equal(rp?.slot, p.slot, `${p.rootPort} at slot ${p.slot} of pcie.0, as planned`);
      t.equal(rp?.bus, 0);
    }
    t.equal(await qomGet(qmp, 'vfpool-rp0', 'chassis'), 128, 'chassis clear of libvirt\'s 1..3');
    const periph = await peripherals(qmp);
    t.ok(periph.includes('net0') && periph.includes('vfpool-vf1'), 'the standby and the plain VF exist');
    t.notOk(periph.includes('vfpool-vf0'), 'the failover primary is hidden until the guest acks STANDBY');
    t.equal(await qomGet(qmp, 'net0', 'failover'), true, 'failover=on on libvirt\'s virtio-net');
    t.equal(await qomGet(qmp, 'vfpool-vf1', 'mac'), MAC2, 'the emulated VF carries the VF\'s MAC');
    await t.rejects(qmp.execute('device_add', { driver: 'e1000e', id: 'x' }), { name: 'QmpCommandError', errorClass: 'GenericError', message: "QMP device_add failed: GenericError: Bus 'pcie.0' does not support hotplugging" }, 'QEMU\'s error class reaches the caller (and why VFs get root ports)');
    const shutdown = qmp.events.waitFor('SHUTDOWN', (d) => d.reason === 'host-qmp-quit', { timeoutMs: 10_000 });
    await qmp.execute('quit');
    t.match((await shutdown.promise).data, { guest: false, reason: 'host-qmp-quit' }, 'an event waited for from before the command');
    t.equal(await exited, 0, 'QEMU\'s exit status is the wrapper\'s');
    await t.rejects(qmp.execute('query-status'), { name: 'QmpClosedError' }, 'QEMU gone: a clear error');
  });

  t.test('a 128-character domain name: QEMU binds vfpool\'s socket (through the short link) and answers on it', async (t) => {
    const name = `rq-${'x'.repeat(125)}`;
    const plan: DomainPlanV1 = {
      version: 1, domain: name, uuid: null, delivery: 'cmdline', sriovNics: [],
      vfs: [{ id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC2, failoverStandbyMac: null, guestAddress: null }],
    };
    const { qmp, state } = await launch(t, plan);
    t.ok(existsSync(join(state, 'qemu', name, 'qmp.sock')), 'the socket is in the domain\'s own directory');
    t.ok((await peripherals(qmp)).includes('vfpool-vf0'), 'the guest has its VF');
  });

  t.test('hotplug delivery: empty root ports at start, the VF device_added into its port and seen on the guest\'s PCI bus', async (t) => {
    const plan: DomainPlanV1 = {
      version: 1, domain: 'rq2', uuid: null, delivery: 'hotplug', sriovNics: [],
      vfs: [{ id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC2, failoverStandbyMac: null, guestAddress: null }],
    };
    const { qmp, argv } = await launch(t, plan);
    t.notOk((await peripherals(qmp)).includes('vfpool-vf0'), 'not on the command line');
    const [dev] = planQemuArgs(plan, parseQemuArgv(argv), { qmpSocketPath: '' }).hotplug as [QmpDeviceAdd];
    await qmp.execute('cont');
    await qmp.execute('device_add', { ...dev });
    t.ok((await peripherals(qmp)).includes('vfpool-vf0'), 'device_add into the reserved root port');
    // The firmware numbers the root port's bus once the guest runs; then query-pci shows the NIC behind it.
    let found: PciDev | undefined;
    for (let i = 0; i < 100 && !found; i++) {
      found = (await pciDevices(qmp)).find((d) => d.qdev_id === 'vfpool-vf0');
      if (!found) await new Promise((r) => setTimeout(r, 200));
    }
    t.match(found, { id: { vendor: 0x8086, device: 0x10d3 } }, 'the e1000e (8086:10d3) on the guest\'s PCI bus');
    t.equal(await qomGet(qmp, 'vfpool-vf0', 'mac'), MAC2);
  });
}
