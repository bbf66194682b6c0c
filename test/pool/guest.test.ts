import t from 'tap';
import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { adoptGuest, prepareGuest, releaseGuest, startGuest } from '../../src/pool/guests.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, POOLS, vfNow, type GuestWorld } from '../helpers/guest-world.js';
import { faultyHost } from '../helpers/faulty-host.js';
import { stopPool } from '../../src/pool/pools.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

const spec = (name: string, vfpool?: string, devices?: string, stage: 'prepare' | 'start' = 'prepare') =>
  parseDomainXml(domainXml(stage, { name, vfpool, devices }), `domain ${name}`);

const ALL = `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33' vlan='100' qos='3' spoofchk='off' trust='on' link-state='enable' max-tx-rate='100'/>`;

async function deadPid(): Promise<number> {
  const p = execa('true');
  const pid = p.pid!;
  await p;
  return pid;
}

/**
 * Guest behaviour on the simulated host; LinuxHost is held to the same kernel behaviour by the
 * Host suite (test/host), and runs this path end to end in test/host/linux-host-flow.test.ts.
 */
async function world(t: Parameters<typeof makeGuestWorld>[0]): Promise<GuestWorld> {
  const w = makeGuestWorld(t, 'sim');
  for (const [n, x] of Object.entries(POOLS)) await w.addPool(n, x);
  return w;
}

t.test('prepare sets MAC, VLAN and the rest through the PF and reads them back; release restores, twice', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  const vf0 = (await w.host.listVfs(w.pf))[0]!;
  const r = await prepareGuest(w.ctx, spec('vm1', ALL), w.opts);
  t.equal(r.vfs.length, 1);
  t.match(r.vfs[0], { vfAddr: vf0.address, pool: 'hd', mode: 'hostdev', mac: '52:54:00:11:22:33', vlan: 100, guestSlot: 0, alias: 'vfpool-vf0', phase: 'ready' });
  const now = await vfNow(w.host, w.pf, vf0.address);
  t.same(now.link, { mac: '52:54:00:11:22:33', vlan: 100, qos: 3, spoofchk: false, trust: true, linkState: 'enable', minTxRate: 0, maxTxRate: 100 });
  t.equal(now.driver, 'vfio-pci', 'bound to vfio-pci for a hostdev pool');
  const a = w.ctx.store.read().allocations[0]!;
  t.match(a, { owner: { domain: 'vm1', uuid: '614dee8d-7799-4751-9066-5ae47f427da5', pid: null, via: 'libvirt' }, phase: 'ready', worker: null });
  t.equal(a.saved!.driver, vf0.driver, 'the host driver before is saved');
  t.equal(a.saved!.link.mac, ((before as { vfs: Array<{ link: { mac: string } }> }).vfs[0]!.link.mac), 'the admin MAC before is saved');

  const rel = await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.same(rel.released.map((v) => v.vfAddr), [vf0.address]);
  t.same(await w.snapshot(), before, 'the VF and the state are exactly as before');
  const again = await releaseGuest(w.ctx, 'vm1', { reason: 'test again' });
  t.same(again.released, [], 'a second release is a no-op success');
  t.same(await w.snapshot(), before);
});

t.test('vfpool:hostdev on a passthrough (macvtap) pool: exit 2 naming the field, the pool and its mode, before any change', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='pt' mac='52:54:00:00:00:aa' mtu='1400'/>`), w.opts), {
    name: 'BadInputError',
    exitCode: 2,
    message: "domain 'vm1': vfpool:hostdev #1: pool 'pt' is a passthrough (macvtap) pool, whose VFs reach a guest as a host netdev, not as the PCI device vfpool:hostdev gives QEMU",
    hint: "use <interface type='network'><source network='pt'/></interface> on libvirt's passthrough network of that name, or name a hostdev or pci-passthrough-hybrid pool",
  });
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='pt' mac='52:54:00:00:00:aa'/>`), { ...w.opts, dryRun: true }), { exitCode: 2, message: /passthrough \(macvtap\) pool/ });
  t.same(await w.snapshot(), before, 'no VF allocated or touched');
  const viaLibvirt = `<interface type='network'><mac address='52:54:00:00:00:ab'/><source network='pt'/><model type='virtio'/></interface>`;
  t.same((await prepareGuest(w.ctx, spec('vm1', undefined, viaLibvirt), w.opts)).vfs, [], 'an <interface> on it is libvirt\'s (its network hands out the VF): no request, no refusal');
});

t.test('hybrid pool (seed 002): the virtio NIC gets a vfio VF partner with its MAC; release restores it', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  const r = await prepareGuest(
    w.ctx,
    spec('vm1', undefined, `<interface type='network'><mac address='00:50:56:0f:86:3b'/><source network='hy'/><model type='virtio'/></interface>`),
    w.opts,
  );
  t.match(r.vfs, [{ mode: 'pci-passthrough-hybrid', mac: '00:50:56:0f:86:3b', pairedMac: '00:50:56:0f:86:3b', guestSlot: 0 }]);
  const now = await vfNow(w.host, w.pf, r.vfs[0]!.vfAddr);
  t.equal(now.driver, 'vfio-pci');
  t.equal(now.link.mac, '00:50:56:0f:86:3b', 'the VF carries the virtio NIC\'s MAC (the guest bonds them by MAC)');
  const rel = await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.same(rel.released.map((v) => v.vfAddr), [r.vfs[0]!.vfAddr]);
  t.same(await w.snapshot(), before, 'the VF (driver, MAC) and the state are exactly as before');
  t.same((await releaseGuest(w.ctx, 'vm1', { reason: 'again' })).released, [], 'a second release is a no-op');
});

t.test('a pool that is defined but not started hands out nothing: exit 3, before any change; a device named without pool= needs no pool', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  for (const [n, x] of Object.entries(POOLS)) w.definePool(n, x);
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm1', ALL), w.opts), {
    name: 'ConflictError',
    exitCode: 3,
    message: "domain 'vm1': vfpool:hostdev #1: pool 'hd' is not active",
    hint: 'start it with `vfpool net-start hd`',
  });
  const hybrid = `<interface type='network'><mac address='52:54:00:00:00:0b'/><source network='hy'/><model type='virtio'/></interface>`;
  await t.rejects(prepareGuest(w.ctx, spec('vm1', undefined, hybrid), w.opts), { exitCode: 3, message: "domain 'vm1': <interface> #1: pool 'hy' is not active" });
  await t.rejects(prepareGuest(w.ctx, spec('vm1', ALL), { ...w.opts, dryRun: true }), { exitCode: 3, message: /pool 'hd' is not active/ }, '--dry-run predicts it');
  t.same(await w.snapshot(), before, 'nothing changed');
  const vf1 = (await w.host.listVfs(w.pf))[1]!;
  const named = await prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev address='${vf1.address}' mac='52:54:00:00:00:0c'/>`), w.opts);
  t.equal(named.vfs[0]!.vfAddr, vf1.address, 'address= without pool=: served');
  await w.addPool('hd', POOLS.hd);
  t.equal((await prepareGuest(w.ctx, spec('vm1', ALL), w.opts)).vfs.length, 1, 'once started, the pool serves');
});

t.test('a MAC another domain holds on a VF of the same PF: exit 3 naming that domain and VF, nothing changed; on another PF it is fine', async (t) => {
  const w = makeGuestWorld(t, 'sim', { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }, { name: 'eth2', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('hd', POOLS.hd);
  await w.addPool('hd2', `<network><name>hd2</name><forward mode='hostdev'><pf dev='eth2'/></forward></network>`);
  await w.addPool('hy', POOLS.hy);
  const mac = '52:54:00:44:00:04';
  const held = await prepareGuest(w.ctx, spec('wraptest', `<vfpool:hostdev pool='hd' mac='${mac}'/>`), w.opts);
  const before = await w.snapshot();
  const vfs = await w.host.listVfs(w.pf);
  for (const ask of [`pool='hd'`, `address='${vfs[2]!.address}'`]) {
    await t.rejects(prepareGuest(w.ctx, spec('c6', `<vfpool:hostdev ${ask} mac='${mac.toUpperCase()}'/>`), w.opts), {
      name: 'ConflictError',
      exitCode: 3,
      message: `domain 'c6': vfpool:hostdev #1: mac '${mac}' is already on VF ${held.vfs[0]!.vfAddr} (eth1 VF 0) of domain 'wraptest', and PF eth1 forwards a MAC to one VF only`,
      hint: 'give this guest another MAC, or stop that domain first',
    }, ask);
  }
  const hybrid = `<interface type='network'><mac address='${mac}'/><source network='hy'/><model type='virtio'/></interface>`;
  await t.rejects(prepareGuest(w.ctx, spec('c6', undefined, hybrid), w.opts), { exitCode: 3, message: /<interface> #1: mac '52:54:00:44:00:04' is already on VF .* of domain 'wraptest'/ }, 'a hybrid partner too');
  t.same(await w.snapshot(), before, 'nothing changed');
  t.equal((await prepareGuest(w.ctx, spec('c6', `<vfpool:hostdev pool='hd2' mac='${mac}'/>`), w.opts)).vfs[0]!.pf, 'eth2', 'another PF, another switch: served');

  // A VF libvirt's hostdev network handed out with that MAC counts the same.
  await releaseGuest(w.ctx, 'wraptest', { reason: 'test' });
  await w.ctx.store.update((s) => void s.ports.push({ network: 'lv-net', portUuid: 'u1', domain: 'lvguest', domainUuid: null, vfAddr: vfs[3]!.address, netdev: null, plug: 'hostdev-pci', mac: mac as never, createdAt: new Date().toISOString(), createdMonoMs: null, pid: null }));
  await t.rejects(prepareGuest(w.ctx, spec('c7', `<vfpool:hostdev pool='hd' mac='${mac}'/>`), w.opts), {
    exitCode: 3,
    message: `domain 'c7': vfpool:hostdev #1: mac '${mac}' is already on VF ${vfs[3]!.address} (eth1) of domain 'lvguest', through libvirt network 'lv-net', and PF eth1 forwards a MAC to one VF only`,
  });

  // A MAC set on a VF outside vfpool (libvirt's own <interface type='hostdev'> of another guest,
  // a container's CNI, a person): the PF has it, so it counts the same.
  await w.ctx.store.update((s) => void (s.ports = []));
  await w.host.setVfLink(w.pf, 3 as never, { mac: mac as never });
  const outside = await w.snapshot();
  for (const ask of [`pool='hd'`, `address='${vfs[1]!.address}'`]) {
    await t.rejects(prepareGuest(w.ctx, spec('c8', `<vfpool:hostdev ${ask} mac='${mac}'/>`), w.opts), {
      exitCode: 3,
      message: `domain 'c8': vfpool:hostdev #1: mac '${mac}' is already on VF ${vfs[3]!.address} (eth1 VF 3) as its MAC, set outside vfpool, and PF eth1 forwards a MAC to one VF only`,
      hint: 'give this guest another MAC, or, if nothing uses that VF, clear its MAC (`ip link set eth1 vf 3 mac 00:00:00:00:00:00`)',
    }, ask);
  }
  t.same(await w.snapshot(), outside, 'nothing changed');
  t.equal((await prepareGuest(w.ctx, spec('c8', `<vfpool:hostdev address='${vfs[3]!.address}' mac='${mac}'/>`), w.opts)).vfs[0]!.vfAddr, vfs[3]!.address, 'the VF that has it may be given it');
});

t.test('first fit by VF index, distinct VFs, exhaustion is exit 3 naming the pool and holders', async (t) => {
  const w = await world(t);
  const vfs = await w.host.listVfs(w.pf);
  const two = `<vfpool:hostdev pool='hd' mac='52:54:00:00:01:01'/><vfpool:hostdev pool='hd' mac='52:54:00:00:01:02'/>`;
  const a = await prepareGuest(w.ctx, spec('vm1', two), w.opts);
  t.same(a.vfs.map((v) => [v.vfAddr, v.guestSlot]), [[vfs[0]!.address, 0], [vfs[1]!.address, 1]]);
  const b = await prepareGuest(w.ctx, spec('vm2', two.replace(/01:0/g, '02:0')), w.opts);
  t.same(b.vfs.map((v) => v.vfAddr), [vfs[2]!.address, vfs[3]!.address]);
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm3', `<vfpool:hostdev pool='hd' mac='52:54:00:00:03:01'/>`), w.opts), {
    exitCode: 3,
    message: /domain 'vm3': pool 'hd' is exhausted, all 4 VFs are held \(VF .*: domain 'vm1'.*domain 'vm2'/,
  });
  t.same(await w.snapshot(), before, 'nothing changed');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  const c = await prepareGuest(w.ctx, spec('vm3', `<vfpool:hostdev pool='hd' mac='52:54:00:00:03:01'/>`), w.opts);
  t.equal(c.vfs[0]!.vfAddr, vfs[0]!.address, 'a freed VF is handed out again');
});

t.test('a VF held open through /dev/vfio by someone else is not handed out', async (t) => {
  const w = await world(t);
  await w.editKernel((s) => {
    s.pfs[0]!.vfs[0]!.driver = 'vfio-pci';
    s.pfs[0]!.vfs[0]!.netdev = null;
  });
  const vf0 = (await w.host.listVfs(w.pf))[0]!;
  await w.holdVfio(vf0.address, process.pid);
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`), w.opts);
  t.not(r.vfs[0]!.vfAddr, vf0.address);
  await t.rejects(prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev address='${vf0.address}' mac='52:54:00:00:00:02'/>`), w.opts), {
    exitCode: 3,
    message: new RegExp(`VF ${vf0.address.replace(/\./g, '\\.')} is in use by pid ${process.pid} holding /dev/vfio/`),
  });
});

t.test('seed 001 step 1 and 2: by address, by netdev; both recorded, checked on later starts', async (t) => {
  const w = await world(t);
  const vfs = await w.host.listVfs(w.pf);
  const byAddr = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev address='${vfs[2]!.address}' mac='52:54:00:00:00:01'/>`), w.opts);
  t.equal(byAddr.vfs[0]!.vfAddr, vfs[2]!.address);
  const nd = vfs[1]!.netdev!;
  const byNetdev = await prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:02'/>`), w.opts);
  t.equal(byNetdev.vfs[0]!.vfAddr, vfs[1]!.address);
  const a = w.ctx.store.read().allocations.find((x) => x.owner.domain === 'vm2')!;
  t.equal(a.requestedNetdev, nd, 'the netdev asked for is recorded');
  t.equal(a.vfAddr, vfs[1]!.address, 'with the PCI address it resolved to');
  await t.rejects(prepareGuest(w.ctx, spec('vm3', `<vfpool:hostdev address='${vfs[1]!.address}' mac='52:54:00:00:00:03'/>`), w.opts), {
    exitCode: 3,
    message: /is in use by domain 'vm2'/,
  });
  await releaseGuest(w.ctx, 'vm2', { reason: 'test' });
  // The VFs are renumbered: the netdev name now belongs to another VF.
  await w.editKernel((s) => {
    const [v0, v1] = [s.pfs[0]!.vfs[0]!, s.pfs[0]!.vfs[1]!];
    [v0.netdev, v1.netdev] = [v1.netdev, v0.netdev];
  });
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:02'/>`), w.opts), {
    exitCode: 2,
    message: new RegExp(`netdev '${nd}' is now ${vfs[0]!.address.replace(/\./g, '\\.')}, but it was ${vfs[1]!.address.replace(/\./g, '\\.')} when domain 'vm2' last started`),
  });
  t.same(await w.snapshot(), before, 'refused before any change');
  await t.rejects(prepareGuest(w.ctx, spec('vm4', `<vfpool:hostdev netdev='${nd}' address='${vfs[1]!.address}' mac='52:54:00:00:00:04'/>`), w.opts), {
    exitCode: 2,
    message: /but the domain names address/,
  });
  await releaseGuest(w.ctx, 'vm2', { reason: 'test', forgetNetdevs: true });
  const again = await prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:02'/>`), w.opts);
  t.equal(again.vfs[0]!.vfAddr, vfs[0]!.address, 'after --forget-netdevs the new resolution is taken');
});

t.test('seed 001 step 2: netdev= names a VF that a managed pool\'s start bound to vfio-pci (no netdev now)', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  const vfs = await w.host.listVfs(w.pf);
  const nd = vfs[2]!.netdev!;
  // Seed 000's managed pool binds every VF of eth1 to vfio-pci when it starts: the netdevs go.
  await w.addPool('managed', `<network><name>managed</name><forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward></network>`);
  t.equal((await w.host.listVfs(w.pf))[2]!.netdev, null, 'the VF has no netdev on vfio-pci');
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:01'/>`), w.opts);
  t.equal(r.vfs[0]!.vfAddr, vfs[2]!.address, 'the VF vfpool bound under that name');
  t.equal((await vfNow(w.host, w.pf, vfs[2]!.address)).link.mac, '52:54:00:00:00:01');
  // Held now: another domain naming it is told who holds it, not that the name does not exist.
  await t.rejects(prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:02'/>`), w.opts), {
    exitCode: 3,
    message: /is in use by domain 'vm1'/,
  });
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.equal((await vfNow(w.host, w.pf, vfs[2]!.address)).driver, 'vfio-pci', 'released back to the pool\'s vfio-pci');
  const again = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev netdev='${nd}' mac='52:54:00:00:00:01'/>`), w.opts);
  t.equal(again.vfs[0]!.vfAddr, vfs[2]!.address, 'the same VF at the next start');
  // A name vfpool never saw is still refused with the hint.
  await t.rejects(prepareGuest(w.ctx, spec('vm3', `<vfpool:hostdev netdev='nosuch0' mac='52:54:00:00:00:03'/>`), w.opts), {
    exitCode: 1,
    message: /netdev 'nosuch0' does not exist on this host/,
  });
});

t.test('a VF the domain\'s own <hostdev> or <interface type=\'hostdev\'> assigns is not handed to it again', async (t) => {
  const w = await world(t);
  const vfs = await w.host.listVfs(w.pf);
  const pci = (a: string) => {
    const [d, b, sf] = a.split(':');
    const [sl, fn] = sf!.split('.');
    return `domain='0x${d}' bus='0x${b}' slot='0x${sl}' function='0x${fn}'`;
  };
  // Seed 001 step 1 as libvirt has it: the VF hand-assigned, and one through an <interface type='hostdev'>.
  const devices = `<hostdev mode='subsystem' type='pci' managed='yes'><source><address ${pci(vfs[0]!.address)}/></source></hostdev>
    <interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:0a'/><source><address type='pci' ${pci(vfs[1]!.address)}/></source></interface>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>`;
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`, devices), w.opts);
  t.equal(r.vfs[0]!.vfAddr, vfs[2]!.address, 'first fit skips the two VFs libvirt assigns to this domain');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  const before = await w.snapshot();
  for (const [vf, what] of [[vfs[0]!, '<hostdev> #1'], [vfs[1]!, '<interface> #1']] as const) {
    await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev address='${vf.address}' mac='52:54:00:00:00:01'/>`, devices), w.opts), {
      exitCode: 2,
      message: `domain 'vm1': vfpool:hostdev #1: VF ${vf.address} is also ${what} of domain 'vm1', which libvirt assigns itself: a VF reaches a guest once`,
    });
  }
  t.same(await w.snapshot(), before, 'refused before any change');
  // Only VFs of this domain's XML are skipped: another domain gets VF 0 (libvirt's vfio holder guards it once QEMU runs).
  t.equal((await prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:02'/>`), w.opts)).vfs[0]!.vfAddr, vfs[0]!.address);
});

t.test('a pool\'s network-level <vlan> is its VFs\' VLAN unless the request names one (seed 002: the <network> element)', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('tagged', `<network><name>tagged</name><vlan><tag id='42'/></vlan><forward mode='pci-passthrough-hybrid'><pf dev='eth1'/></forward></network>`);
  const nic = (mac: string, vlan = '') => `<interface type='network'><mac address='${mac}'/><source network='tagged'/>${vlan}<model type='virtio'/></interface>`;
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='tagged' mac='52:54:00:00:00:01'/><vfpool:hostdev pool='tagged' mac='52:54:00:00:00:02' vlan='5'/>`,
    `${nic('52:54:00:00:00:03')}${nic('52:54:00:00:00:04', `<vlan><tag id='6'/></vlan>`)}`), w.opts);
  t.same(r.vfs.map((v) => [v.mac, v.vlan]), [['52:54:00:00:00:01', 42], ['52:54:00:00:00:02', 5], ['52:54:00:00:00:03', 42], ['52:54:00:00:00:04', 6]]);
  for (const v of r.vfs) t.equal((await vfNow(w.host, w.pf, v.vfAddr)).link.vlan, v.vlan, `${v.mac}: VLAN ${v.vlan} set through the PF`);
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  for (const v of r.vfs) t.equal((await vfNow(w.host, w.pf, v.vfAddr)).link.vlan, 0, `${v.mac}: restored`);
  // A pool started by an older vfpool, which accepted a portgroup <vlan> and a trunk it never
  // applied: the XML it runs with stays usable (that <vlan> is no VLAN, as then) and stoppable.
  await w.ctx.store.update((st) => {
    st.pools['tagged']!.xml = `<network><name>tagged</name><vlan trunk='yes'><tag id='42'/><tag id='43'/></vlan><portgroup name='eng'><vlan><tag id='7'/></vlan></portgroup><forward mode='pci-passthrough-hybrid'><pf dev='eth1'/></forward></network>`;
  });
  const old = await prepareGuest(w.ctx, spec('vm2', `<vfpool:hostdev pool='tagged' mac='52:54:00:00:00:05'/>`), w.opts);
  t.equal(old.vfs[0]!.vlan, null, 'the recorded pool\'s unreadable <vlan> gives no VLAN');
  await releaseGuest(w.ctx, 'vm2', { reason: 'test' });
  t.equal((await stopPool(w.ctx, 'tagged', { refuse: true })).wasActive, true, 'and the pool stops');
});

t.test('a VF whose netdev the domain\'s own <interface type=\'direct\'> puts macvtap on keeps its host driver', async (t) => {
  const w = await world(t);
  const vfs = await w.host.listVfs(w.pf);
  // libvirt makes macvtap on eth1v0 for this guest: binding VF 0 to vfio-pci would remove that netdev.
  const devices = `<interface type='direct'><mac address='52:54:00:00:00:0a'/><source dev='${vfs[0]!.netdev}' mode='passthrough'/><model type='virtio'/></interface>
    <interface type='direct'><mac address='52:54:00:00:00:0b'/><source dev='nosuch0' mode='vepa'/></interface>`;
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`, devices), w.opts);
  t.equal(r.vfs[0]!.vfAddr, vfs[1]!.address, 'first fit skips it');
  t.equal((await vfNow(w.host, w.pf, vfs[0]!.address)).driver, vfs[0]!.driver, 'and leaves it on its host driver');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev netdev='${vfs[0]!.netdev}' mac='52:54:00:00:00:01'/>`, devices), w.opts), {
    exitCode: 2,
    message: `domain 'vm1': vfpool:hostdev #1: VF ${vfs[0]!.address} is also <interface> #1 of domain 'vm1', which libvirt assigns itself: a VF reaches a guest once`,
  });
});

t.test('refusals before any change: PF down, not a network VF, unknown netdev', async (t) => {
  const w = await world(t);
  const pfAddr = (await w.host.getPf(w.pf)).address;
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev address='${pfAddr}' mac='52:54:00:00:00:01'/>`), w.opts), {
    exitCode: 1,
    message: /is not a VF of a network PF/,
  });
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev netdev='nosuch0' mac='52:54:00:00:00:01'/>`), w.opts), {
    exitCode: 1,
    message: /netdev 'nosuch0' does not exist/,
  });
  t.same(await w.snapshot(), before);
  await w.editKernel((s) => {
    s.pfs[0]!.up = false;
  });
  const down = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`), w.opts), {
    exitCode: 1,
    message: /domain 'vm1', pool 'hd', VF .*: PF eth1 is down/,
  });
  t.same(await w.snapshot(), down, 'nothing changed, nothing recorded');
});

t.test('start hands /dev/vfio/GROUP to the DAC label\'s user; release gives it back', async (t) => {
  const w = await world(t);
  const r = await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`), w.opts);
  const group = (await vfNow(w.host, w.pf, r.vfs[0]!.vfAddr)).iommuGroup!;
  const ownerBefore = await w.host.getVfioGroupOwner(group);
  const s = await startGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`, undefined, 'start'), w.opts);
  t.same(s.handedOver, [{ vfAddr: r.vfs[0]!.vfAddr, group, uid: 64055, gid: 64055 }]);
  t.same(await w.host.getVfioGroupOwner(group), { uid: 64055, gid: 64055 });
  t.same(w.ctx.store.read().allocations[0]!.vfioOwner, { saved: ownerBefore, granted: { uid: 64055, gid: 64055 } });
  const again = await startGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`, undefined, 'start'), w.opts);
  t.same(again.handedOver, [], 'idempotent');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  // The VF went back to its host driver: its group node is gone with vfio-pci, as the kernel's is.
  t.equal(await w.host.getVfioGroupOwner(group), null, 'the group node left with vfio-pci');
});

t.test('started/reconnect record QEMU\'s pid from libvirt\'s pid file; a stale run is released at the next prepare', async (t) => {
  const w = await world(t);
  const xml = `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' vlan='5'/>`;
  const before = await w.snapshot();
  await prepareGuest(w.ctx, spec('vm1', xml), w.opts);
  const firstSaved = w.ctx.store.read().allocations[0]!.saved;
  const none = await adoptGuest(w.ctx, spec('vm1', xml), w.opts, 'started');
  t.equal(none.pid, null, 'no pid file: nothing recorded, no failure');
  fakeLibvirtQemu({ libvirtRunDir: w.opts.libvirtRunDir, procRoot: w.settings.procRoot }, 'vm1');
  const r = await adoptGuest(w.ctx, spec('vm1', xml), w.opts, 'reconnect');
  t.same(r, { domain: 'vm1', vfs: 1, pid: process.pid });
  t.equal(w.ctx.store.read().allocations[0]!.owner.pid, process.pid);
  t.equal(w.ctx.store.read().allocations[0]!.owner.pidStart, Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19]), 'with its start time');
  await t.rejects(prepareGuest(w.ctx, spec('vm1', xml), w.opts), { exitCode: 3, message: /still runs/ });
  // The pid is another process's now (the QEMU that had it is gone, the pid reused): not "still runs".
  await w.ctx.store.update((s) => {
    s.allocations[0]!.owner.pidStart! -= 1;
  });
  const reused = await prepareGuest(w.ctx, spec('vm1', xml), w.opts);
  t.equal(reused.releasedStale.length, 1, 'a reused pid: the stale run is released');
  // QEMU died without a release (libvirtd killed, say): the next start cleans up first.
  const dead = await deadPid();
  await w.ctx.store.update((s) => {
    s.allocations[0]!.owner.pid = dead;
  });
  const again = await prepareGuest(w.ctx, spec('vm1', xml), w.opts);
  t.equal(again.releasedStale.length, 1);
  t.equal(w.ctx.store.read().allocations.length, 1);
  t.same(w.ctx.store.read().allocations[0]!.saved, firstSaved, 'the stale VF was restored before it was saved again');
  await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.same(await w.snapshot(), before);
});

t.test('a domain that asks for nothing creates no state', async (t) => {
  const w = await world(t);
  const r = await prepareGuest(w.ctx, spec('plain', undefined, `<interface type='network'><mac address='52:54:00:00:00:01'/><source network='hd'/></interface>`), w.opts);
  t.same(r.vfs, []);
  t.same(w.ctx.store.read().allocations, []);
  t.same(await releaseGuest(w.ctx, 'plain', { reason: 'test' }), { domain: 'plain', released: [], vanished: [] });
});

t.test('IOMMU group shared with a device on a host driver is refused', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  await w.editKernel((s) => {
    s.pfs[0]!.vfs[1]!.iommuGroup = s.pfs[0]!.vfs[0]!.iommuGroup;
  });
  const before = await w.snapshot();
  await t.rejects(prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`), w.opts), {
    exitCode: 3, // a conflict with the other device's user, not a failure of the machine
    message: /IOMMU group \d+ also holds 0000:3b:02\.1 \(driver iavf\), bound to a host driver/,
  });
  t.same(await w.snapshot(), before);
});

t.test('a VF that vanished is released without a restore', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>`), w.opts);
  await w.editKernel((s) => {
    s.pfs[0]!.vfs = [];
    s.pfs[0]!.numVfs = 0;
  });
  const r = await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.equal(r.vanished.length, 1);
  t.same(w.ctx.store.read().allocations, []);
});

t.test('a VF whose PF was renamed since the prepare is restored through the new name, not dropped as gone', async (t) => {
  for (const kind of ['sim', 'fixture'] as const) {
    const w = makeGuestWorld(t, kind);
    await w.addPool('hd', POOLS.hd);
    const renamed = (s: { pfs: Array<{ name: string }> }, to: string) => void (s.pfs[0]!.name = to);
    // The VF's netdev is named after the PF by whoever probes it: not what is compared.
    const vf0 = async (pf: string) => ({ ...(await vfNow(w.host, pf as never, '0000:3b:02.0')), netdev: null });
    const before = await vf0('eth1');
    await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' vlan='9'/>`), w.opts);
    // `ip link set eth1 name lan0` while the guest runs: the VFs stay, with the guest's settings.
    await w.editKernel((s) => renamed(s, 'lan0'));
    const r = await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
    t.same([r.released.map((v) => v.vfAddr), r.vanished], [['0000:3b:02.0'], []], `${kind}: released, not taken for gone`);
    t.same(await vf0('lan0'), before, `${kind}: MAC, VLAN and driver back as they were`);
    t.same(w.ctx.store.read().allocations, []);
  }
});

t.test('a VF a managed pool\'s start bound to vfio-pci gets its driver back at its guest\'s release when the pool stopped under the guest', async (t) => {
  for (const refuse of [false, true]) { // libvirt's stopped end; vfpool net-destroy (a <pf> without <vf num> is not emptied)
    const w = makeGuestWorld(t, 'sim', { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 3 }] });
    const before = await w.host.listVfs(w.pf);
    await w.addPool('mg', `<network><name>mg</name><forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward></network>`);
    t.same((await w.host.listVfs(w.pf)).map((v) => v.driver), ['vfio-pci', 'vfio-pci', 'vfio-pci'], 'the start bound every VF');
    await prepareGuest(w.ctx, spec('vm1', `<vfpool:hostdev pool='mg' mac='52:54:00:00:00:01'/>`), w.opts);
    await stopPool(w.ctx, 'mg', { refuse });
    t.same((await w.host.listVfs(w.pf)).map((v) => v.driver), ['vfio-pci', 'iavf', 'iavf'], `refuse ${refuse}: the free VFs got their driver back, the guest's not yet`);
    await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
    t.same((await w.host.listVfs(w.pf)).map((v) => [v.driver, v.netdev]), before.map((v) => [v.driver, v.netdev]), `refuse ${refuse}: after the release, every VF has its driver and netdev from before the start`);
  }
});

t.test('a failure whose undo fails too: exit 1 naming both; the record stays for release or reconcile', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  const before = await w.snapshot();
  const xml = spec('vm1', `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' trust='on'/>`);
  const counting = faultyHost(w.host, 0);
  await prepareGuest({ ...w.ctx, host: counting.host }, xml, w.opts);
  await releaseGuest(w.ctx, 'vm1', { reason: 'reset' });
  t.same(await w.snapshot(), before);
  const bind = counting.calls.indexOf('bindDriver') + 1;
  // Fail at the vfio bind, then at the first undo call (putting trust back).
  const f = faultyHost(w.host, [bind, bind + 1]);
  await t.rejects(prepareGuest({ ...w.ctx, host: f.host }, xml, w.opts), {
    exitCode: 1,
    message: /^domain 'vm1', pool 'hd', VF 0000:3b:02\.0 \(eth1 VF 0\): injected failure in bindDriver.*; rollback also failed: .*set trust off: injected failure/,
  });
  const kept = w.ctx.store.read().allocations;
  t.match(kept, [{ owner: { domain: 'vm1' }, phase: 'releasing', worker: null, lastError: /rollback also failed/ }], 'the VF stays recorded, not handed out again');
  await releaseGuest(w.ctx, 'vm1', { reason: 'finish' });
  t.same(await w.snapshot(), before, 'a release finishes the undo');
});
