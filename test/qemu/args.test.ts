import t from 'tap';
import { planHotplugDevices, planQemuArgs, type QemuCaps } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { planSriovNic } from '../../src/qemu/sriov-nic.js';
import { sriovNicPlans, type DomainPlanV1, type DomainPlanVf } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { libvirtArgv, libvirtQ35Argv } from '../helpers/qemu-argv.js';

const MAC = '52:54:00:aa:bb:01' as MacAddress;
const QMP = '/run/vfpool/qemu/vm1/qmp.sock';
const NEW_QEMU: QemuCaps = { qemu: '/opt/qemu-11/qemu-system-x86_64', sriovPf: true };

function vf(n: number, over: Partial<DomainPlanVf> = {}): DomainPlanVf {
  return { id: `vfpool-vf${n}`, host: `0000:3b:02.${n}` as PciAddress, emulatedModel: null, mac: null, failoverStandbyMac: null, guestAddress: null, ...over };
}
function plan(vfs: DomainPlanVf[], over: Partial<DomainPlanV1> = {}): DomainPlanV1 {
  return { version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', vfs, sriovNics: [], ...over };
}
const run = (p: DomainPlanV1, argv: string[], caps?: QemuCaps) => planQemuArgs(p, parseQemuArgv(argv), { qmpSocketPath: QMP, caps });
const devicesOf = (args: string[]) => args.flatMap((a, i) => (args[i - 1] === '-device' ? [a.startsWith('{') ? (JSON.parse(a) as Record<string, unknown>) : a] : []));

t.test('q35 under libvirt: each VF on its own hotpluggable root port above libvirt\'s, JSON like libvirt, plus the QMP socket', async (t) => {
  const r = run(plan([vf(0), vf(1)]), libvirtQ35Argv());
  t.same(r.added, [
    '-device', '{"driver":"pcie-root-port","id":"vfpool-rp0","bus":"pcie.0","addr":"0x1e","chassis":128,"slot":0}',
    '-device', '{"driver":"pcie-root-port","id":"vfpool-rp1","bus":"pcie.0","addr":"0x1d","chassis":129,"slot":0}',
    '-device', '{"driver":"vfio-pci","id":"vfpool-vf0","bus":"vfpool-rp0","addr":"0x0","host":"0000:3b:02.0"}',
    '-device', '{"driver":"vfio-pci","id":"vfpool-vf1","bus":"vfpool-rp1","addr":"0x0","host":"0000:3b:02.1"}',
    '-qmp', `unix:${QMP},server=on,wait=off`,
  ]);
  t.same(r.argv, [...libvirtQ35Argv(), ...r.added], 'libvirt\'s arguments untouched, vfpool\'s appended');
  t.same(r.edits, []);
  t.same(r.hotplug, []);
  t.same(r.placements.map((p) => [p.id, p.slot, p.rootPort, p.delivered]), [['vfpool-vf0', 0x1e, 'vfpool-rp0', 'cmdline'], ['vfpool-vf1', 0x1d, 'vfpool-rp1', 'cmdline']]);
  t.same(run(plan([vf(0), vf(1)]), libvirtQ35Argv()), r, 'deterministic: same plan and argv, same guest addresses');
});

t.test('a person\'s kv command line gets kv devices; chassis numbers taken by ports are skipped; commas in the socket path escaped', async (t) => {
  const argv = ['-name', 'vm1', '-machine', 'q35', '-nodefaults', '-device', 'pcie-root-port,id=p,chassis=128,bus=pcie.0,addr=0x1e'];
  const r = planQemuArgs(plan([vf(0)]), parseQemuArgv(argv), { qmpSocketPath: '/tmp/a,b/qmp.sock' });
  t.same(r.added, [
    '-device', 'pcie-root-port,id=vfpool-rp0,bus=pcie.0,addr=0x1d,chassis=129,slot=0',
    '-device', 'vfio-pci,id=vfpool-vf0,bus=vfpool-rp0,addr=0x0,host=0000:3b:02.0',
    '-qmp', 'unix:/tmp/a,,b/qmp.sock,server=on,wait=off',
  ]);
});

t.test('i440fx (libvirt 11.3\'s real argv): the VF at a free slot of pci.0; no hotplug where acpi=off', async (t) => {
  const r = run(plan([vf(0)]), libvirtArgv());
  t.same(devicesOf(r.added), [{ driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'pci.0', addr: '0x1f', host: '0000:3b:02.0' }]);
  t.throws(() => run(plan([vf(0)], { delivery: 'hotplug' }), libvirtArgv()), {
    name: 'BadInputError',
    message: "domain 'vm1': vfpool-vf0: hotplug delivery needs a hot-pluggable pci.0, and this i440fx machine has acpi=off",
  });
  const withAcpi = libvirtArgv().map((a) => a.replace('acpi=off', 'acpi=on'));
  const h = run(plan([vf(0)], { delivery: 'hotplug' }), withAcpi);
  t.same(h.hotplug, [{ driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'pci.0', addr: '0x1f', host: '0000:3b:02.0' }]);
  t.notOk(h.added.some((a) => a.includes('vfio-pci')), 'hotplug: not on the command line');
});

t.test('failover: failover=on on libvirt\'s virtio-net found by MAC (any id), failover_pair_id on the primary', async (t) => {
  for (const netId of ['net0', 'ua-hybrid0']) {
    const r = run(plan([vf(0, { mac: MAC, failoverStandbyMac: MAC })]), libvirtQ35Argv('vm1', MAC, netId));
    t.same(r.edits, [{ device: netId, argIndex: 24, set: { failover: true } }], netId);
    t.same(JSON.parse(r.argv[24]!), { driver: 'virtio-net-pci', netdev: 'hostnet0', id: netId, mac: MAC, bus: 'pci.1', addr: '0x0', failover: true });
    t.same(devicesOf(r.added)[1], { driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', host: '0000:3b:02.0', failover_pair_id: netId });
  }
  const kv = ['-machine', 'q35', '-nodefaults', '-netdev', 'user,id=n0', '-device', `virtio-net-pci,netdev=n0,mac=${MAC}`];
  const r = run(plan([vf(0, { mac: MAC, failoverStandbyMac: MAC, emulatedModel: 'e1000e' })]), kv);
  t.equal(r.argv[6], `virtio-net-pci,netdev=n0,mac=${MAC},failover=on,id=vfpool-vf0-standby`, 'a kv standby without id gets one');
  t.same(devicesOf(r.added)[1], `e1000e,id=vfpool-vf0,bus=vfpool-rp0,addr=0x0,mac=${MAC},romfile=,failover_pair_id=vfpool-vf0-standby`, 'an emulated primary carries the MAC, without option ROM');
});

t.test('simulated host: the NIC model with the VF\'s MAC where vfio-pci would go (same root port, same id)', async (t) => {
  const r = run(plan([vf(0, { emulatedModel: 'e1000e', mac: MAC })]), libvirtQ35Argv());
  t.same(devicesOf(r.added)[1], { driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', mac: MAC, romfile: '' });
});

t.test('romfile= (no option ROM RAM block, or a migration destination refuses the stream) on an emulated stand-in only', async (t) => {
  const rows: Array<[string, Parameters<typeof vf>[1], string[], string | undefined]> = [
    ['emulated e1000e, JSON command line', { emulatedModel: 'e1000e', mac: MAC }, libvirtQ35Argv(), ''],
    ['emulated e1000e, kv command line', { emulatedModel: 'e1000e', mac: MAC }, ['-machine', 'q35'], ''],
    ['emulated failover primary', { emulatedModel: 'e1000e', mac: MAC, failoverStandbyMac: MAC }, libvirtQ35Argv('vm1', MAC, 'net0'), ''],
    ['emulated, hotplug delivery', { emulatedModel: 'igb', mac: MAC }, libvirtQ35Argv(), ''],
    ['vfio-pci VF', { mac: MAC }, libvirtQ35Argv(), undefined],
    ['vfio-pci failover primary', { mac: MAC, failoverStandbyMac: MAC }, libvirtQ35Argv('vm1', MAC, 'net0'), undefined],
  ];
  for (const [name, over, argv, want] of rows) {
    const r = run(plan([vf(0, over)], name.includes('hotplug') ? { delivery: 'hotplug' } : {}), argv);
    const dev = name.includes('hotplug') ? r.hotplug[0] : devicesOf(r.added).find((d) => (typeof d === 'string' ? d.includes('id=vfpool-vf0') : (d as { id: string }).id === 'vfpool-vf0'));
    t.ok(dev, `${name}: device generated`);
    const romfile = typeof dev === 'string' ? (/(^|,)romfile=([^,]*)/.exec(dev)?.[2]) : (dev as { romfile?: string }).romfile;
    t.equal(romfile, want, name);
  }
});

t.test('hotplug delivery: only the empty root ports and the QMP socket; the devices for device_add', async (t) => {
  const r = run(plan([vf(0, { mac: MAC, failoverStandbyMac: MAC }), vf(1)], { delivery: 'hotplug' }), libvirtQ35Argv());
  t.same(devicesOf(r.added).map((d) => (d as { driver: string }).driver), ['pcie-root-port', 'pcie-root-port']);
  t.same(r.hotplug, [
    { driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', host: '0000:3b:02.0', failover_pair_id: 'net0' },
    { driver: 'vfio-pci', id: 'vfpool-vf1', bus: 'vfpool-rp1', addr: '0x0', host: '0000:3b:02.1' },
  ]);
  t.equal(r.edits.length, 1, 'the standby still gets failover=on on the command line');
});

t.test('-incoming: plain VFs are left off (plugged after migration), root ports and failover primaries stay', async (t) => {
  const r = run(plan([vf(0, { mac: MAC, failoverStandbyMac: MAC }), vf(1)]), [...libvirtQ35Argv(), '-incoming', 'defer']);
  t.same(devicesOf(r.added).map((d) => (d as { id: string }).id), ['vfpool-rp0', 'vfpool-rp1', 'vfpool-vf0']);
  t.same(r.placements.map((p) => p.delivered), ['cmdline', 'left-off-incoming']);
});

t.test('a guest slot pinned by the metadata wins; generated slots go around it', async (t) => {
  const r = run(plan([vf(0), vf(1, { guestAddress: { slot: 0x1e } })]), libvirtQ35Argv());
  t.same(r.placements.map((p) => [p.id, p.slot]), [['vfpool-vf0', 0x1d], ['vfpool-vf1', 0x1e]]);
});

t.test('slots QEMU fills itself are replayed: defaults without -nodefaults, address-less devices, kv before JSON', async (t) => {
  const argv = ['-machine', 'q35', '-device', 'e1000e', '-device', '{"driver":"virtio-rng-pci"}', '-device', 'virtio-rng-pci,addr=0x4', '-device', 'usb-tablet'];
  // VGA 1, NIC 2, e1000e 3, kv rng at 4; then the JSON rng goes to 5. usb-tablet is no PCI device.
  t.throws(() => run(plan([vf(0, { guestAddress: { slot: 5 } })]), argv), {
    name: 'ConflictError',
    message: "guest slot 0x5 for vfpool-vf0 (guest-slot in the metadata of domain 'vm1') is taken on pcie.0 by a device without id (virtio-rng-pci), placed by QEMU at the lowest free slot",
  });
  t.equal(run(plan([vf(0, { guestAddress: { slot: 6 } })]), argv).placements[0]!.slot, 6);
  t.throws(() => run(plan([vf(0, { guestAddress: { slot: 2 } })]), argv), /taken on pcie.0 by QEMU's default NIC \(no -nodefaults\)/);
});

t.test('refusals, one line each', async (t) => {
  const q35 = libvirtQ35Argv();
  const cases: Array<[string, () => unknown, string, RegExp | string]> = [
    ['pinned slot of the chipset', () => run(plan([vf(0, { guestAddress: { slot: 0x1f } })]), q35), 'BadInputError',
      "guest slot 0x1f for vfpool-vf0 (guest-slot in the metadata of domain 'vm1') belongs to the q35 chipset's ICH9 LPC/SATA/SMBus functions on pcie.0: pick another guest-slot"],
    ['pinned slot of a libvirt device, named', () => run(plan([vf(0, { guestAddress: { slot: 2 } })]), q35), 'ConflictError',
      "guest slot 0x2 for vfpool-vf0 (guest-slot in the metadata of domain 'vm1') is taken on pcie.0 by device 'pci.1' (pcie-root-port at 0x2.0): pick another guest-slot, or move that device"],
    ['standby not found', () => run(plan([vf(0, { mac: '52:54:00:00:00:09' as MacAddress, failoverStandbyMac: '52:54:00:00:00:09' as MacAddress })]), q35), 'BadInputError',
      "domain 'vm1': vfpool-vf0: no virtio-net device with mac=52:54:00:00:00:09 on QEMU's command line to pair with: the failover standby is the domain's <interface> with that MAC and <model type='virtio'/>"],
    ['standby MAC on a non-virtio NIC', () => run(plan([vf(0, { failoverStandbyMac: MAC })]), ['-machine', 'q35', '-device', `e1000e,id=e0,mac=${MAC}`]), 'BadInputError',
      /no virtio-net device with mac=52:54:00:aa:bb:01 .*; e0 \(e1000e\) has that MAC but is not virtio-net/],
    ['VF MAC differs from the standby\'s', () => run(plan([vf(0, { mac: '52:54:00:00:00:02' as MacAddress, failoverStandbyMac: MAC })]), q35), 'BadInputError',
      "domain 'vm1': vfpool-vf0: VF MAC 52:54:00:00:00:02 differs from its standby's MAC 52:54:00:aa:bb:01: the guest's net_failover pairs the two NICs by MAC: give both the same"],
    ['two primaries for one standby', () => run(plan([vf(0, { failoverStandbyMac: MAC }), vf(1, { failoverStandbyMac: MAC })]), q35), 'BadInputError',
      "domain 'vm1': vfpool-vf1: its standby net0 already pairs with vfpool-vf0: QEMU allows one primary per standby"],
    // libvirt's own failover (<teaming>): its hostdev primary names the standby already. QEMU
    // 10.0: "Cannot attach more than one primary device to 'ua-net0': 'hostdev0' and 'vfpool-vf0'".
    ['libvirt\'s own primary for the standby', () => run(plan([vf(0, { failoverStandbyMac: MAC })]), ['-machine', 'q35', '-device', `{"driver":"virtio-net-pci","id":"ua-net0","mac":"${MAC}","failover":true}`,
      '-device', '{"driver":"vfio-pci","host":"0000:3c:02.1","id":"hostdev0","failover_pair_id":"ua-net0"}']), 'BadInputError',
      "domain 'vm1': vfpool-vf0: its standby ua-net0 already has a failover primary on QEMU's command line, hostdev0 (vfio-pci), and QEMU allows one primary per standby: drop libvirt's <teaming> from the domain's interfaces: the pci-passthrough-hybrid pool gives the interface its VF partner"],
    ['two virtio-nets with the standby MAC', () => run(plan([vf(0, { failoverStandbyMac: MAC })]), ['-machine', 'q35', '-device', `virtio-net-pci,id=a,mac=${MAC}`, '-device', `virtio-net-pci,id=b,mac=${MAC}`]), 'BadInputError',
      "domain 'vm1': vfpool-vf0: 2 virtio-net devices have mac=52:54:00:aa:bb:01 (a, b): give each NIC its own MAC"],
    ['failover on i440fx without ACPI', () => run(plan([vf(0, { failoverStandbyMac: MAC })]), [...libvirtArgv(), '-device', `virtio-net-pci,id=n,mac=${MAC}`]), 'BadInputError',
      "domain 'vm1': vfpool-vf0: a failover primary must be hot-pluggable, and pci.0 of this i440fx machine has no hotplug (acpi=off): enable ACPI (<features><acpi/>) or use a q35 machine"],
    ['vfpool\'s id already on the command line', () => run(plan([vf(0)]), [...q35, '-device', 'e1000e,id=vfpool-vf0']), 'ConflictError',
      "domain 'vm1': QEMU's command line already has the id 'vfpool-vf0': vfpool names its own devices vfpool-*: remove them from the command line (the wrapper adds them)"],
    ['vfpool\'s QMP monitor twice', () => run(plan([]), [...q35, '-chardev', 'socket,id=vfpool-qmp,path=/x']), 'ConflictError', /already has the id 'vfpool-qmp'/],
    ['vfpool\'s QMP socket already there (two wrappers)', () => run(plan([]), [...q35, '-qmp', `unix:${QMP},server=on,wait=off`]), 'ConflictError',
      "domain 'vm1': QEMU's command line already has vfpool's QMP socket /run/vfpool/qemu/vm1/qmp.sock: vfpool-qemu adds it: remove it from the command line, or start QEMU through one vfpool-qemu, not two"],
    ['emulated NIC without a MAC', () => run(plan([vf(0, { emulatedModel: 'e1000e' })]), q35), 'BadInputError',
      "domain 'vm1': vfpool-vf0: the emulated e1000e stands in for a VF but has no MAC: the plan must carry the VF's MAC"],
    ['SR-IOV NIC on i440fx', () => run(plan([], { sriovNics: sriovNicPlans('vm1', null, [{ vfs: 2, backend: 'user', backendOptions: null }]) }), libvirtArgv(), NEW_QEMU), 'BadInputError',
      "domain 'vm1': <vfpool:sriov-nic> vfpool-sriov0: an emulated SR-IOV NIC needs PCI Express, and this is an i440fx machine: use a q35 machine (<type machine='q35'> in the domain's <os>, -machine q35)"],
    ['SR-IOV NIC on QEMU 10.0', () => run(plan([], { sriovNics: sriovNicPlans('vm1', null, [{ vfs: 2, backend: 'user', backendOptions: null }]) }), q35, { qemu: '/usr/bin/qemu-system-x86_64', sriovPf: false }), 'BadInputError',
      "domain 'vm1': <vfpool:sriov-nic> vfpool-sriov0: the QEMU in use (/usr/bin/qemu-system-x86_64) has no virtio-net 'sriov-pf' property: emulated SR-IOV needs QEMU >= 10.1: install QEMU 10.1 or later and point VFPOOL_QEMU at it"],
    ['SR-IOV NIC with QEMU never asked', () => run(plan([], { sriovNics: sriovNicPlans('vm1', null, [{ vfs: 2, backend: 'user', backendOptions: null }]) }), q35), 'BadInputError', /the QEMU in use has no virtio-net 'sriov-pf' property/],
    ['no free slot left', () => run(plan(Array.from({ length: 30 }, (_, i) => vf(i))), q35), 'ConflictError', /^no free slot left on pcie.0 for vfpool-vf29 of domain 'vm1': every slot of the guest's root bus is taken/],
  ];
  for (const [name, fn, cls, message] of cases) {
    let caught: unknown;
    try {
      fn();
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof Error, `${name}: refused`);
    const e = caught as Error & { toLine(): string };
    t.equal(e.name, cls, `${name}: ${cls}`);
    if (typeof message === 'string') t.equal(e.toLine(), message, name);
    else t.match(e.toLine(), message, name);
    t.notOk(e.toLine().includes('\n'), `${name}: one line`);
  }
});

t.test('emulated SR-IOV NIC: every VF before its PF, stride 1 above function 0, ARI past 7, own netdev and MAC each', async (t) => {
  for (const n of [3, 9, 255]) {
    const nics = sriovNicPlans('vm1', null, [{ vfs: n, backend: 'user', backendOptions: null }]);
    const r = run(plan([], { sriovNics: nics }), ['-machine', 'q35', '-nodefaults'], NEW_QEMU);
    const devs = devicesOf(r.added) as string[];
    const props = devs.map((d) => Object.fromEntries(d.split(',').slice(1).map((kv) => kv.split('=') as [string, string])));
    const pfAt = devs.findIndex((d) => d.includes('id=vfpool-sriov0-pf,'));
    const vfs = props.filter((p) => p['sriov-pf'] !== undefined);
    t.equal(vfs.length, n, `${n} VFs`);
    t.ok(vfs.every((p) => p['sriov-pf'] === 'vfpool-sriov0-pf'), 'each VF names the PF, which exists');
    t.ok(devs.every((d, i) => !d.includes('sriov-pf=') || i < pfAt), 'every VF before its PF');
    t.same(vfs.map((p) => { const [s, f] = p.addr!.split('.').map((x) => parseInt(x, 16)); return s! * 8 + f!; }), Array.from({ length: n }, (_, m) => m + 1), 'functions 1..N: offset 1, stride 1');
    t.equal(props[pfAt]!.addr, '0x0.0x0');
    t.ok([...vfs, props[pfAt]!].every((p) => p.bus === 'vfpool-sriov0-rp'), 'all on their own root port');
    const macs = new Set([...vfs, props[pfAt]!].map((p) => p.mac));
    t.equal(macs.size, n + 1, 'a MAC per function');
    const netdevs = r.added.filter((a, i) => r.added[i - 1] === '-netdev');
    t.equal(new Set(netdevs).size, n + 1, 'a netdev per function');
    if (n === 9) t.equal(vfs[7]!.addr, '0x1.0x0', 'function 8 written as the next slot (ARI)');
  }
  const json = run(plan([], { sriovNics: sriovNicPlans('vm1', null, [{ vfs: 1, backend: 'socket', backendOptions: 'mcast=230.0.0.1:1234' }]) }), libvirtQ35Argv(), NEW_QEMU);
  t.ok(json.added.includes('socket,id=vfpool-sriov0-net0,mcast=230.0.0.1:1234') && json.added.includes('socket,id=vfpool-sriov0-net1,mcast=230.0.0.1:1234'), 'backend options on every netdev');
  t.ok(json.added.some((a) => a.startsWith('{"driver":"virtio-net-pci","id":"vfpool-sriov0-vf0"')), 'JSON on libvirt\'s command line');
});

t.test('SR-IOV NIC refusals: VF counts outside what ARI allows, a bad backend', async (t) => {
  const at = { rootBus: 'pcie.0', slot: 0x1e, chassis: 128, claimId: () => undefined, json: false };
  const nic = (vfs: number, backend = 'user') => ({ id: 'vfpool-sriov0', vfs, backend, backendOptions: null, macs: Array.from({ length: Math.max(vfs + 1, 0) }, () => MAC) });
  t.throws(() => planSriovNic(nic(256), at), { message: "<vfpool:sriov-nic> vfpool-sriov0: vfs='256' is not 1..255" });
  t.throws(() => planSriovNic(nic(0), at), /vfs='0' is not 1..255/);
  t.throws(() => planSriovNic(nic(2, 'slirp'), at), { name: 'BadInputError', message: /backend='slirp' is not a QEMU netdev type vfpool knows/ });
  t.throws(() => planSriovNic({ ...nic(2), macs: [MAC] }, at), /1 MACs for a PF and 2 VFs/);
  t.throws(() => planSriovNic({ ...nic(8, 'socket'), backendOptions: 'listen=:1234' }, at), { name: 'BadInputError', message: /backend-options='listen=:1234': listen= binds a host port/ }, 'a plan written before the parser refused it: the wrapper refuses it too');
});

t.test('started hook: the device_adds for the running QEMU equal what the wrapper planned; no reserved port, a sentence', async (t) => {
  const hot = plan([vf(0, { mac: MAC, failoverStandbyMac: MAC }), vf(1, { guestAddress: { slot: 0x10 } })], { delivery: 'hotplug' });
  for (const argv of [libvirtQ35Argv(), libvirtArgv().map((a) => a.replace('acpi=off', 'acpi=on')).concat('-device', `virtio-net-pci,id=net0,mac=${MAC}`)]) {
    const wrapped = run(hot, argv);
    t.same(planHotplugDevices(hot, parseQemuArgv(wrapped.argv)), wrapped.hotplug, parseQemuArgv(argv).machine.kind);
  }
  t.throws(() => planHotplugDevices(hot, parseQemuArgv(libvirtQ35Argv())), {
    name: 'BadInputError',
    message: "domain 'vm1': vfpool-vf0: the running QEMU has no root port vfpool-rp0 on its command line",
  });
});
