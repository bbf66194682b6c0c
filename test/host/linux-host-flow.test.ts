import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { prepareGuest, releaseGuest, startGuest } from '../../src/pool/guests.js';
import { startPool, stopPool } from '../../src/pool/pools.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, vfNow } from '../helpers/guest-world.js';
import { poolXml } from '../pool/activation-suite.js';

/**
 * The one end-to-end path on LinuxHost: a pool started, a guest prepared, started and released,
 * the pool stopped, over the fixture sysfs with the fake `ip` spawned as a process for every
 * call (LinuxHost's own execa runner). Pool and guest behaviour is tested on the simulated host;
 * this shows the same operations work through sysfs files and iproute2's command line.
 */
t.test('pool start -> guest prepare/start/release -> pool stop on LinuxHost, ip as a process', async (t) => {
  const w = makeGuestWorld(t, 'fixture', { pfs: [{ name: 'eth1', totalVfs: 8 }] }, { spawnIp: true });
  const xml = poolXml('eth1', 4, { managed: false, name: 'e2e' });
  w.definePool('e2e', xml);
  const empty = await w.snapshot();

  const started = await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
  t.equal(started.applied, true);
  const vfs = await w.host.listVfs(w.pf);
  t.equal(vfs.length, 4, 'four VFs through sriov_numvfs');
  t.ok(vfs.every((v) => v.driver === 'iavf' && v.netdev), 'on their host driver, with netdevs (unmanaged pool)');
  const pooled = await w.snapshot();

  const vfpool = `<vfpool:hostdev pool='e2e' mac='52:54:00:e2:e0:01' vlan='42' trust='on'/>`;
  const prepared = await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool }), 'vm1'), w.opts);
  const addr = prepared.vfs[0]!.vfAddr;
  t.equal(addr, vfs[0]!.address, 'first fit');
  const now = await vfNow(w.host, w.pf, addr);
  t.match(now, { driver: 'vfio-pci', netdev: null, link: { mac: '52:54:00:e2:e0:01', vlan: 42, trust: true } });

  const handed = await startGuest(w.ctx, parseDomainXml(domainXml('start', { name: 'vm1', vfpool }), 'vm1'), w.opts);
  t.same(handed.handedOver, [{ vfAddr: addr, group: now.iommuGroup, uid: 64055, gid: 64055 }]);
  t.same(await w.host.getVfioGroupOwner(now.iommuGroup!), { uid: 64055, gid: 64055 }, '/dev/vfio/GROUP chowned to the DAC label');

  const released = await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  t.same(released.released.map((v) => v.vfAddr), [addr]);
  t.same(await w.snapshot(), pooled, 'every VF and the state as before the guest');
  t.same(await w.host.getVfioGroupOwner(now.iommuGroup!), { uid: 0, gid: 0 }, 'the group node back to root');

  const stopped = await stopPool(w.ctx, 'e2e', { refuse: true });
  t.same([stopped.applied, stopped.kept], [true, []]);
  t.same(await w.snapshot(), empty, 'no VFs left, no pool recorded');

  // Every `ip` call went through a process that recorded its argv: the settings, then their undo.
  const calls = readFileSync(join(w.dir, 'fx/ip-calls.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
  const sets = calls.filter((c) => c[1] === 'set').map((c) => c.join(' '));
  t.equal(sets.length, 6, sets.join('; '));
  t.match(sets, [
    /^link set dev eth1 vf 0 mac 52:54:00:e2:e0:01$/,
    /^link set dev eth1 vf 0 vlan 42 qos 0$/,
    /^link set dev eth1 vf 0 trust on$/,
    /^link set dev eth1 vf 0 mac (?!52:54:00:e2:e0:01)[0-9a-f:]{17}$/,
    /^link set dev eth1 vf 0 vlan 0 qos 0$/,
    /^link set dev eth1 vf 0 trust off$/,
  ], 'each setting, then its undo');
});
