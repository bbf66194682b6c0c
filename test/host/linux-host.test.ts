import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LinuxHost } from '../../src/host/linux-host.js';
import type { NetdevName } from '../../src/types.js';
import { fakeVfioHolder, makeFixtureKernel } from '../helpers/fixture-kernel.js';
import { execa } from 'execa';
import { hostSuite, IGB_FACTS } from './host-suite.js';

function fixtureHost(dir: string, seed = { pfs: [{ name: 'eth0', totalVfs: 7, vfDriver: 'igbvf', address: '0000:01:00.0', offset: 128, stride: 2 }] }) {
  const fx = makeFixtureKernel(dir, seed);
  const host = new LinuxHost({ sysfsRoot: fx.sysfs, procRoot: fx.proc, devRoot: fx.dev, ipPath: fx.ipPath, writeSysfs: fx.writeSysfs });
  return { fx, host };
}

t.test('LinuxHost on a fixture sysfs tree', async (t) => {
  hostSuite(t, async (t) => {
    const { fx, host } = fixtureHost(t.testdir({}));
    let nextPid = 4000;
    return {
      host,
      pf: 'eth0' as NetdevName,
      totalVfs: 7,
      facts: IGB_FACTS,
      // Through the fake `ip`, the command the lab runs on the real PF.
      setPfUp: async (up) => {
        await execa(fx.ipPath, ['link', 'set', 'dev', 'eth0', up ? 'up' : 'down']);
      },
      holdVfio: async (vf) => {
        const pid = nextPid++;
        const release = fakeVfioHolder(fx, pid, vf.iommuGroup!);
        return { pid, release: async () => release() };
      },
    };
  });
});

t.test('LinuxHost runs ip with argument arrays and reads iproute2 JSON', async (t) => {
  // A PF whose driver implements every VF setting (igb has no link-state, no min_tx_rate).
  const { fx, host } = fixtureHost(t.testdir({}), { pfs: [{ name: 'eth0', totalVfs: 7, driver: 'ice', vfDriver: 'iavf' } as never] });
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
});

t.test('LinuxHost turns kernel errnos into sentences that keep the code', async (t) => {
  const { host } = fixtureHost(t.testdir({}));
  await t.rejects(host.writeNumVfs('eth0' as NetdevName, 8), { code: 'ERANGE', exitCode: 1, message: /sriov_numvfs.*ERANGE.*above sriov_totalvfs/ });
  await host.writeNumVfs('eth0' as NetdevName, 2);
  await t.rejects(host.writeNumVfs('eth0' as NetdevName, 3), { code: 'EBUSY', message: /write 0 first/ });
  await t.rejects(host.getPf('eth9' as NetdevName), { code: 'ENOENT', message: /no network interface 'eth9'/ });
  await t.rejects(host.setVfLink('eth0' as NetdevName, 5 as never, { vlan: 1 }), { exitCode: 1, message: /ip link set dev eth0 vf 5 vlan 1 failed/ });
});

t.test('a netdev without SR-IOV is not a PF', async (t) => {
  const dir = t.testdir({});
  const { fx, host } = fixtureHost(dir);
  await host.writeNumVfs('eth0' as NetdevName, 1);
  const vf = (await host.listVfs('eth0' as NetdevName))[0]!;
  await t.rejects(host.getPf(vf.netdev!), { code: 'ENOTSUP', message: /not an SR-IOV physical function/ });
  t.ok(fx.root);
});

t.test('sriov_drivers_autoprobe=0: VFs come up without a driver or netdev', async (t) => {
  const { host } = fixtureHost(t.testdir({}), { pfs: [{ name: 'eth0', totalVfs: 4, autoprobe: false } as never] });
  t.equal((await host.getPf('eth0' as NetdevName)).autoprobe, false);
  await host.writeNumVfs('eth0' as NetdevName, 2);
  const vfs = await host.listVfs('eth0' as NetdevName);
  t.same(vfs.map((v) => [v.driver, v.netdev]), [[null, null], [null, null]]);
  const links = await host.getVfLinks('eth0' as NetdevName);
  t.equal(links.get(0)!.mac, '00:00:00:00:00:00', 'a VF no driver touched shows the zero MAC');
  await host.bindDriver(vfs[0]!.address, 'vfio-pci');
  t.equal((await host.listVfs('eth0' as NetdevName))[0]!.driver, 'vfio-pci', 'goes straight to vfio-pci');
});
