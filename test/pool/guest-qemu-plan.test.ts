import t from 'tap';
import { execa } from 'execa';
import { WITHOUT_TAP_LOADER } from '../helpers/spawn.js';
import { mkdirSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import type { VfpoolError } from '../../src/errors.js';
import { prepareGuest, releaseGuest, startGuest } from '../../src/pool/guests.js';
import { checkDeliveryPossible, type DeliveryHostFacts } from '../../src/pool/guest-qemu-plan.js';
import { reconcile } from '../../src/pool/reconcile.js';
import { domainPlanPath, domainQmpSocketPath, domainRunDir, readDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, POOLS, type GuestWorld, type HostKind } from '../helpers/guest-world.js';

/**
 * `prepare` writes the domain's QEMU plan (what the wrapper adds), `start` hands it to QEMU's
 * user, release and reconcile remove it; what cannot reach QEMU is refused at prepare.
 */
const spec = (name: string, vfpool?: string, devices?: string, stage: 'prepare' | 'start' = 'prepare', label?: string) =>
  parseDomainXml(domainXml(stage, { name, vfpool, devices, label }), `domain ${name}`);

const HYBRID_NIC = `<interface type='network'><mac address='52:54:00:aa:00:01'/><source network='hy'/><model type='virtio'/></interface>`;
const TWO = `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33' guest-slot='0x12'/>`;

async function world(t: Parameters<typeof makeGuestWorld>[0], kind: HostKind = 'sim', simVfDevice = ''): Promise<GuestWorld> {
  const w = makeGuestWorld(t, kind);
  w.settings.simVfDevice = simVfDevice;
  w.ctx.settings.simVfDevice = simVfDevice;
  for (const [n, x] of Object.entries(POOLS)) await w.addPool(n, x);
  return w;
}

const ROOT_ALL_CAPS = 'Name:\tnode\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n';
function facts(over: Partial<{ status: string; mounts: string; bpftool: boolean; qemuConf: string | null }> = {}): DeliveryHostFacts {
  return {
    selfStatus: () => over.status ?? ROOT_ALL_CAPS,
    mounts: () => over.mounts ?? 'proc /proc proc rw 0 0\n',
    hasBpftool: () => over.bpftool ?? true,
    qemuConf: () => over.qemuConf ?? null,
  };
}

t.test('vfpool prepare on the simulated host with VFPOOL_SIM_VF_DEVICE: an emulated e1000e per VF, cmdline, MACs, pinned slot, failover standby', async (t) => {
  const w = await world(t, 'sim', 'e1000e');
  await prepareGuest(w.ctx, spec('vm1', TWO, HYBRID_NIC), { ...w.opts, via: 'cli' });
  const plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  t.same(plan, {
    version: 1,
    domain: 'vm1',
    uuid: '614dee8d-7799-4751-9066-5ae47f427da5',
    delivery: 'cmdline',
    vfs: [
      { id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: '52:54:00:11:22:33', failoverStandbyMac: null, guestAddress: { slot: 0x12 } },
      { id: 'vfpool-vf1', host: null, emulatedModel: 'e1000e', mac: '52:54:00:aa:00:01', failoverStandbyMac: '52:54:00:aa:00:01', guestAddress: null },
    ],
    sriovNics: [],
  });
  const st = statSync(domainPlanPath(w.settings.stateDir, 'vm1'));
  t.equal(st.mode & 0o777, 0o600);
  t.equal(statSync(domainRunDir(w.settings.stateDir, 'vm1')).mode & 0o777, 0o700);
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.equal(existsSync(domainRunDir(w.settings.stateDir, 'vm1')), false, 'release removes the plan directory');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test again' });
  t.equal(existsSync(domainRunDir(w.settings.stateDir, 'vm1')), false, 'a second release is success too');
});

t.test('without VFPOOL_SIM_VF_DEVICE the VF is vfio-pci host=BDF: cmdline for vfpool prepare, hotplug under libvirt', async (t) => {
  const w = await world(t);
  const r = await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, via: 'cli' });
  let plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  t.equal(plan.delivery, 'cmdline');
  t.same(plan.vfs.map((v) => [v.host, v.emulatedModel]), [[r.vfs[0]!.vfAddr, null]]);
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  await prepareGuest(w.ctx, spec('vm2', TWO), w.opts);
  plan = readDomainPlan(w.settings.stateDir, 'vm2')!;
  t.equal(plan.delivery, 'hotplug');
});

t.test('vfpool prepare --delivery overrides the default: hotplug for an emulated stand-in, cmdline for a real VF', async (t) => {
  const w = await world(t, 'sim', 'e1000e');
  await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, via: 'cli', delivery: 'hotplug' });
  t.match(readDomainPlan(w.settings.stateDir, 'vm1'), { delivery: 'hotplug', vfs: [{ id: 'vfpool-vf0', emulatedModel: 'e1000e', mac: '52:54:00:11:22:33' }] });
  const r = await world(t);
  await prepareGuest(r.ctx, spec('vm2', TWO), { ...r.opts, via: 'cli', delivery: 'hotplug' });
  t.equal(readDomainPlan(r.settings.stateDir, 'vm2')!.delivery, 'hotplug', 'a person\'s root QEMU reaches /dev/vfio itself: no started hook needed');
  await prepareGuest(r.ctx, spec('vm3', `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:44'/>`), { ...r.opts, via: 'cli', delivery: 'cmdline' });
  t.equal(readDomainPlan(r.settings.stateDir, 'vm3')!.delivery, 'cmdline');
});

t.test('what the wrapper would refuse and the domain XML already tells is refused at prepare: exit 2, nothing changed', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  const xml = (o: { vfpool?: string; devices?: string; machine?: string }) => parseDomainXml(domainXml('prepare', { name: 'vm1', ...o }), 'vm1');
  const nic = (model: string) => `<interface type='network'><mac address='52:54:00:aa:00:01'/><source network='hy'/>${model}</interface>`;
  const cases: Array<[string, ReturnType<typeof xml>, string]> = [
    ['a hybrid interface of model e1000e', xml({ devices: nic(`<model type='e1000e'/>`) }),
      "domain 'vm1': <interface> #1: a pci-passthrough-hybrid interface is its VF's failover standby, which QEMU makes only of virtio-net, and <model type='e1000e'/> is not virtio-net: give it <model type='virtio'/>"],
    ['a hybrid interface with no model', xml({ devices: nic('') }),
      "domain 'vm1': <interface> #1: a pci-passthrough-hybrid interface is its VF's failover standby, which QEMU makes only of virtio-net, and it has no <model> (libvirt's default NIC is not virtio-net): give it <model type='virtio'/>"],
    ['an emulated SR-IOV NIC on i440fx', xml({ vfpool: `<vfpool:sriov-nic vfs='2'/>`, machine: 'pc-i440fx-10.0' }),
      "domain 'vm1': vfpool:sriov-nic #1: an emulated SR-IOV NIC needs PCI Express, and this is an i440fx machine: use a q35 machine (<type machine='q35'> in the domain's <os>, -machine q35)"],
    ['a VF on a machine that is neither', xml({ vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33'/>`, machine: 'microvm' }),
      "domain 'vm1': QEMU machine type 'microvm' is neither q35 nor i440fx (pc): vfpool places PCI devices on q35 or i440fx machines only: use -machine q35 (or pc)"],
  ];
  for (const [name, s, line] of cases) {
    const err = await prepareGuest(w.ctx, s, w.opts).then(() => null, (e: VfpoolError) => e);
    t.same([err?.exitCode, err?.toLine()], [2, line], name);
  }
  t.same(await w.snapshot(), before, 'nothing changed');
  for (const model of ['virtio', 'virtio-transitional', 'virtio-non-transitional']) {
    t.equal((await prepareGuest(w.ctx, xml({ devices: nic(`<model type='${model}'/>`) }), w.opts)).vfs.length, 1, `${model}: a virtio-net standby`);
    await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  }
  t.equal((await prepareGuest(w.ctx, xml({ vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33'/>`, machine: 'pc-i440fx-10.0' }), w.opts)).vfs.length, 1, 'a VF on i440fx is fine');
});

t.test('a domain with only <vfpool:sriov-nic> gets a plan', async (t) => {
  const w = await world(t);
  await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:sriov-nic vfs='3' backend='user'/>`, machine: 'pc-q35-10.0' }), 'vm2'), w.opts);
  const plan = readDomainPlan(w.settings.stateDir, 'vm2')!;
  t.equal(plan.vfs.length, 0);
  t.match(plan.sriovNics, [{ id: 'vfpool-sriov0', vfs: 3, backend: 'user' }]);
  t.equal(plan.sriovNics[0]!.macs.length, 4);
  await releaseGuest(w.ctx, 'vm2', { reason: 'test' });
  t.equal(readDomainPlan(w.settings.stateDir, 'vm2'), null, 'release removes a plan without VFs too');
});

t.test('an emulated SR-IOV NIC\'s derived MACs avoid the domain\'s VF MACs too', async (t) => {
  const w = await world(t);
  const sriov = `<vfpool:sriov-nic vfs='3' backend='user'/>`;
  const alone = parseDomainXml(domainXml('prepare', { name: 'vm2', vfpool: sriov, machine: 'pc-q35-10.0' }), 'vm2');
  await prepareGuest(w.ctx, alone, w.opts);
  const derived = readDomainPlan(w.settings.stateDir, 'vm2')!.sriovNics[0]!.macs;
  await releaseGuest(w.ctx, 'vm2', { reason: 'test' });
  // The same domain given a VF whose pinned MAC is the one its emulated PF derives.
  const both = parseDomainXml(domainXml('prepare', { name: 'vm2', vfpool: `${sriov}<vfpool:hostdev pool='hd' mac='${derived[0]}'/>`, machine: 'pc-q35-10.0' }), 'vm2');
  await prepareGuest(w.ctx, both, w.opts);
  const plan = readDomainPlan(w.settings.stateDir, 'vm2')!;
  t.equal(plan.vfs[0]!.mac, derived[0], 'the VF has its pinned MAC');
  t.notOk(plan.sriovNics[0]!.macs.includes(derived[0]!), 'no emulated function has it too');
  t.same(plan.sriovNics[0]!.macs.slice(1), derived.slice(1), 'the other functions keep their MACs');
});

t.test('hotplug delivery is refused at prepare where it cannot work, with the fix, and nothing changes', async (t) => {
  const cases: Array<[string, DeliveryHostFacts, RegExp]> = [
    ['root without CAP_SYS_RESOURCE', facts({ status: 'Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n' }), /lacks CAP_SYS_RESOURCE \(CapEff 000001fffeffffff\).*locked-memory/],
    ['not root', facts({ status: 'Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n' }), /must run as root \(uid 1000\)/],
    ['cgroup2 without bpftool', facts({ mounts: 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n', bpftool: false }), /cgroup2.*bpftool is not installed/],
  ];
  for (const [name, f, re] of cases) {
    await t.test(name, async (t) => {
      const w = await world(t, 'fixture');
      const before = await w.snapshot();
      const err = await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, deliveryFacts: f }).then(() => null, (e: unknown) => e as Error & { exitCode: number; hint?: string });
      t.ok(err, 'refused');
      t.match(err!.message, /^domain 'vm1': /);
      t.match(err!.message, re);
      t.equal(err!.exitCode, 1);
      t.ok(err!.hint, 'with the fix');
      t.same(await w.snapshot(), before, 'no VF and no record changed');
      t.equal(readDomainPlan(w.settings.stateDir, 'vm1'), null);
    });
  }
  await t.test('cgroup2 with bpftool, all capabilities: prepared, hotplug', async (t) => {
    const w = await world(t, 'fixture');
    await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, deliveryFacts: facts({ mounts: 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n' }) });
    t.equal(readDomainPlan(w.settings.stateDir, 'vm1')!.delivery, 'hotplug');
  });
  await t.test('the same vfpool prepare (no libvirt) needs none of it', async (t) => {
    const w = await world(t, 'fixture');
    await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, via: 'cli', deliveryFacts: facts({ status: 'Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0\n' }) });
    t.equal(readDomainPlan(w.settings.stateDir, 'vm1')!.delivery, 'cmdline');
  });
});

t.test('a real VF on the command line under libvirt: refused with checkCmdlineReadiness\'s qemu.conf lines and <memtune>', async (t) => {
  const s = spec('vm1', TWO);
  const plan: DomainPlanV1 = { version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [], vfs: [{ id: 'vfpool-vf0', host: '0000:01:10.0' as never, emulatedModel: null, mac: null, failoverStandbyMac: null, guestAddress: null }] };
  t.throws(() => checkDeliveryPossible(plan, s, ['6'], 'libvirt', facts()), {
    message: /^domain 'vm1': its VFs cannot be on QEMU's command line under this libvirt: .*mount namespace/,
    hint: /namespaces = \[ \].*\/dev\/vfio\/6.*restart libvirtd.*<memtune><hard_limit unit='KiB'>1114112<\/hard_limit><\/memtune>/,
  });
  const ready = `namespaces = [ ]\ncgroup_device_acl = [ "/dev/null", "/dev/vfio/vfio", "/dev/vfio/6" ]\n`;
  const withMemtune = parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: TWO }).replace('<vcpu', "<memtune><hard_limit unit='KiB'>2000000</hard_limit></memtune>\n  <vcpu"), 'x');
  t.doesNotThrow(() => checkDeliveryPossible(plan, withMemtune, ['6'], 'libvirt', facts({ qemuConf: ready })));
  t.doesNotThrow(() => checkDeliveryPossible(plan, s, ['6'], 'cli', facts()), 'a person\'s QEMU is not libvirt\'s business');
});

t.test('a failure writing the plan undoes the prepare: the VFs are restored and free', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  mkdirSync(w.settings.stateDir, { recursive: true });
  writeFileSync(join(w.settings.stateDir, 'qemu'), 'in the way');
  const err = await prepareGuest(w.ctx, spec('vm1', TWO), { ...w.opts, via: 'cli' }).then(() => null, (e: unknown) => e as Error & { exitCode: number });
  t.match(err?.message, /^domain 'vm1': cannot write the QEMU plan of domain 'vm1' in .*: (ENOTDIR|EEXIST)/);
  t.equal(err?.exitCode, 1);
  const after = (await w.snapshot()) as { vfs: unknown; state: { allocations: unknown[] } };
  t.same(after.state.allocations, []);
  t.same(after.vfs, (before as { vfs: unknown }).vfs, 'every VF as it was');
});

t.test('start hands the plan to the DAC label\'s uid:gid (root only)', { skip: process.getuid?.() === 0 ? false : 'needs root to chown' }, async (t) => {
  const w = await world(t, 'sim', 'e1000e');
  await prepareGuest(w.ctx, spec('vm1', TWO), w.opts);
  await startGuest(w.ctx, spec('vm1', TWO, undefined, 'start', '+4242:+4343'), w.opts);
  for (const p of [domainRunDir(w.settings.stateDir, 'vm1'), domainPlanPath(w.settings.stateDir, 'vm1')]) {
    const st = statSync(p);
    t.same([st.uid, st.gid], [4242, 4343], p);
  }
});

t.test('reconcile: a vfpool-prepared domain whose QEMU died (its QMP socket refuses) is freed; one not started yet is kept; stale plans go', async (t) => {
  const w = await world(t, 'sim', 'e1000e');
  await prepareGuest(w.ctx, spec('dead', TWO), { ...w.opts, via: 'cli' });
  await prepareGuest(w.ctx, spec('notyet', `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:44'/>`), { ...w.opts, via: 'cli' });
  // A QEMU that created its socket and was killed: the socket file stays, nobody accepts.
  const sock = domainQmpSocketPath(w.settings.stateDir, 'dead');
  await execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), process.execPath, '-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`], { reject: false });
  t.ok(existsSync(sock), 'the dead QEMU left its socket');
  // A plan whose domain holds no VF any more (its state was lost).
  mkdirSync(domainRunDir(w.settings.stateDir, 'gone'), { recursive: true });
  writeFileSync(domainPlanPath(w.settings.stateDir, 'gone'), JSON.stringify({ ...readDomainPlan(w.settings.stateDir, 'dead'), domain: 'gone' }));
  const dry = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0, dryRun: true });
  t.same(dry.freed.map((e) => e.domain), ['dead']);
  t.same(dry.plansRemoved, ['gone']);
  t.ok(existsSync(domainPlanPath(w.settings.stateDir, 'gone')), 'dry run removes nothing');
  const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0 });
  t.same(r.freed.map((e) => [e.domain, e.reason]), [['dead', 'its QEMU, run through vfpool-qemu, is gone (nobody serves its QMP socket)']]);
  t.same(r.kept.map((e) => e.domain), ['notyet']);
  t.same(r.plansRemoved.sort(), ['gone']);
  t.equal(existsSync(domainRunDir(w.settings.stateDir, 'dead')), false, 'the freed domain\'s plan went with its release');
  t.equal(existsSync(domainRunDir(w.settings.stateDir, 'gone')), false);
  t.ok(readDomainPlan(w.settings.stateDir, 'notyet'), 'the domain not started yet keeps its plan');
});
