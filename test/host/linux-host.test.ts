import t from 'tap';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { LinuxHost } from '../../src/host/linux-host.js';
import type { SimSeed } from '../../src/host/sim-kernel.js';
import type { NetdevName } from '../../src/types.js';
import { fakeStackedDevice, fakeVfioHolder, fixtureLinuxHost, makeFixtureKernel } from '../helpers/fixture-kernel.js';
import { scratchDir } from '../helpers/scratch.js';
import { hostSuite, IGB_FACTS } from './host-suite.js';

const IGB_SEED: SimSeed = { pfs: [{ name: 'eth0', totalVfs: 7, vfDriver: 'igbvf', address: '0000:01:00.0', offset: 128, stride: 2 }] };

/** A fixture kernel and LinuxHost over it (`spawnIp`: see fixtureLinuxHost). */
function fixtureHost(dir: string, seed: SimSeed = IGB_SEED, opts: { spawnIp?: boolean } = {}) {
  const fx = makeFixtureKernel(dir, seed);
  const host = fixtureLinuxHost(fx, opts);
  return { fx, host };
}

t.test('LinuxHost on a fixture sysfs tree', async (t) => {
  hostSuite(t, async (t) => {
    const { fx, host } = fixtureHost(scratchDir(t));
    let nextPid = 4000;
    return {
      host,
      pf: 'eth0' as NetdevName,
      totalVfs: 7,
      facts: IGB_FACTS,
      // Through the fake `ip`, the command the lab runs on the real PF.
      setPfUp: async (up) => {
        const r = await fx.runIp(fx.ipPath, ['link', 'set', 'dev', 'eth0', up ? 'up' : 'down']);
        if (r.exitCode !== 0) throw new Error(`fake ip link set eth0 ${up ? 'up' : 'down'}: ${r.stderr}`);
      },
      holdVfio: async (vf) => {
        const pid = nextPid++;
        const release = fakeVfioHolder(fx, pid, vf.iommuGroup!);
        return { pid, release: async () => release() };
      },
      stackOnNetdev: async (netdev) => {
        const release = fakeStackedDevice(fx, netdev, 'macvtap0');
        return { upper: 'macvtap0', release: async () => release() };
      },
    };
  });
});

t.test('LinuxHost runs ip as a process with argument arrays and reads iproute2 JSON', async (t) => {
  // The one path through the real runner (execa): every other fixture test answers in-process.
  // A PF whose driver implements every VF setting (igb has no link-state, no min_tx_rate).
  const { fx, host } = fixtureHost(scratchDir(t), { pfs: [{ name: 'eth0', totalVfs: 7, driver: 'ice', vfDriver: 'iavf' } as never] }, { spawnIp: true });
  await host.writeNumVfs('eth0' as NetdevName, 2);
  await host.setVfLink('eth0' as NetdevName, 1 as never, { mac: '52:54:00:aa:bb:cc' as never, vlan: 100, qos: 2, spoofchk: false, trust: true, linkState: 'enable', maxTxRate: 100 });
  await host.getVfLinks('eth0' as NetdevName);
  const calls = readFileSync(fx.ipLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.same(calls, [
    ['link', 'set', 'dev', 'eth0', 'vf', '1', 'mac', '52:54:00:aa:bb:cc', 'vlan', '100', 'qos', '2', 'spoofchk', 'off', 'trust', 'on', 'state', 'enable', 'max_tx_rate', '100'],
    ['-j', '-d', 'link', 'show', 'dev', 'eth0'],
  ]);
  const vf1 = (await host.getVfLinks('eth0' as NetdevName)).get(1)!;
  t.same(vf1, { mac: '52:54:00:aa:bb:cc', vlan: 100, qos: 2, spoofchk: false, trust: true, linkState: 'enable', minTxRate: 0, maxTxRate: 100 });
  // A refusal: iproute2's exit code and stderr line become the errno and the message.
  await t.rejects(host.setVfLink('eth0' as NetdevName, 1 as never, { vlan: 4096 }), {
    code: 'EINVAL',
    exitCode: 1,
    message: `${fx.ipPath} link set dev eth0 vf 1 vlan 4096 failed (exit 255): Error: argument "4096" is wrong: Invalid "vlan" value`,
  });
  await t.rejects(host.getVfLinks('eth9' as NetdevName), { code: 'ENODEV', message: /link show dev eth9 failed \(exit 1\): Device "eth9" does not exist\./ });
});

t.test('LinuxHost turns kernel errnos into sentences that keep the code', async (t) => {
  const { host } = fixtureHost(scratchDir(t));
  await t.rejects(host.writeNumVfs('eth0' as NetdevName, 8), { code: 'ERANGE', exitCode: 1, message: /sriov_numvfs.*ERANGE.*above sriov_totalvfs/ });
  await host.writeNumVfs('eth0' as NetdevName, 2);
  await t.rejects(host.writeNumVfs('eth0' as NetdevName, 3), { code: 'EBUSY', message: /write 0 first/ });
  await t.rejects(host.getPf('eth9' as NetdevName), { code: 'ENOENT', message: /no network interface 'eth9'/ });
  await t.rejects(host.setVfLink('eth0' as NetdevName, 5 as never, { vlan: 1 }), { exitCode: 1, message: /ip link set dev eth0 vf 5 vlan 1 failed/ });
});

t.test('a netdev without SR-IOV is not a PF', async (t) => {
  const { fx, host } = fixtureHost(scratchDir(t));
  await host.writeNumVfs('eth0' as NetdevName, 1);
  const vf = (await host.listVfs('eth0' as NetdevName))[0]!;
  t.equal(await host.netdevDevice(vf.netdev!), vf.address, 'the VF netdev exists, with its device');
  t.equal(await host.physfnOf(vf.address), 'eth0');
  await t.rejects(host.getPf(vf.netdev!), { code: 'ENOTSUP', message: new RegExp(`^${vf.netdev} is not an SR-IOV physical function \\(no ${fx.sysfs}/class/net/${vf.netdev}/device/sriov_totalvfs\\)$`) });
});

t.test('sriov_drivers_autoprobe=0: VFs come up without a driver or netdev', async (t) => {
  const { host } = fixtureHost(scratchDir(t), { pfs: [{ name: 'eth0', totalVfs: 4, autoprobe: false } as never] });
  t.equal((await host.getPf('eth0' as NetdevName)).autoprobe, false);
  await host.writeNumVfs('eth0' as NetdevName, 2);
  const vfs = await host.listVfs('eth0' as NetdevName);
  t.same(vfs.map((v) => [v.driver, v.netdev]), [[null, null], [null, null]]);
  const links = await host.getVfLinks('eth0' as NetdevName);
  t.equal(links.get(0)!.mac, '00:00:00:00:00:00', 'a VF no driver touched shows the zero MAC');
  await host.bindDriver(vfs[0]!.address, 'vfio-pci');
  t.equal((await host.listVfs('eth0' as NetdevName))[0]!.driver, 'vfio-pci', 'goes straight to vfio-pci');
});

t.test('LinuxHost.iommuGroupDevices lists the group\'s devices with their drivers', async (t) => {
  const root = t.testdir({ sys: { kernel: { iommu_groups: { '7': { devices: {} } } }, bus: { pci: { drivers: { iavf: {}, 'vfio-pci': {} }, devices: { '0000:3b:02.0': {}, '0000:3b:02.1': {} } } } } });
  const sys = join(root, 'sys');
  for (const a of ['0000:3b:02.0', '0000:3b:02.1']) symlinkSync(join(sys, 'bus/pci/devices', a), join(sys, 'kernel/iommu_groups/7/devices', a));
  symlinkSync(join(sys, 'bus/pci/drivers/vfio-pci'), join(sys, 'bus/pci/devices/0000:3b:02.0/driver'));
  mkdirSync(join(root, 'proc'));
  const host = new LinuxHost({ sysfsRoot: sys, procRoot: join(root, 'proc'), devRoot: join(root, 'dev'), ipPath: '/bin/false' });
  t.same(await host.iommuGroupDevices('7'), [
    { address: '0000:3b:02.0', driver: 'vfio-pci' },
    { address: '0000:3b:02.1', driver: null },
  ]);
  t.same(await host.iommuGroupDevices('8'), [], 'no such group: no devices');
});
