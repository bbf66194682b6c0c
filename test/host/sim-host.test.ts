import t from 'tap';
import { scratchDir } from '../helpers/scratch.js';
import { join } from 'node:path';
import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { SimHost } from '../../src/host/sim-host.js';
import type { NetdevName } from '../../src/types.js';
import type { VfInfo } from '../../src/host/host.js';
import { hostSuite, IGB_FACTS, type HostFactory, type PfDriverFacts } from './host-suite.js';
import { spawnSleeper } from '../helpers/processes.js';

function simUnderTest(t: Parameters<HostFactory>[0], pf: Record<string, unknown>, facts: PfDriverFacts) {
  const file = join(scratchDir(t), 'host.json');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 7, ...pf }] }));
  const host = new SimHost(file);
  return {
    host,
    pf: 'eth1' as NetdevName,
    totalVfs: 7,
    facts,
    setPfUp: (up: boolean) => host.setLinkUp('eth1' as NetdevName, up),
    holdVfio: async (vf: VfInfo) => {
      const s = spawnSleeper();
      await host.holdVfioGroup(vf.address, s.pid);
      return { pid: s.pid, release: s.kill };
    },
    stackOnNetdev: async (netdev: NetdevName) => {
      await host.stackOnNetdev(netdev, 'macvtap0');
      return { upper: 'macvtap0', release: () => host.unstackFromNetdev(netdev, 'macvtap0') };
    },
  };
}

// The same PF the lab has: an igb with igbvf VFs at offset 128, stride 2.
t.test('simulated host', async (t) => {
  hostSuite(t, async (t) => simUnderTest(t, { driver: 'igb', vfDriver: 'igbvf', offset: 128, stride: 2 }, IGB_FACTS));
});

// Any other driver pair is modelled as implementing every VF setting (not a lab fact: the
// lab has only igb). Running the suite on it keeps the suite's other branches honest.
t.test('simulated host, a driver pair other than igb/igbvf', async (t) => {
  hostSuite(t, async (t) =>
    simUnderTest(t, { driver: 'ice', vfDriver: 'iavf' }, {
      linkStateError: null,
      minTxRateError: null,
      rateLinkMbps: null,
      vfMacNeedsPfUp: false,
      newMacPerProbe: false,
      vfMtuAbovePf: false,
    }),
  );
});

t.test('simulated host specifics', async (t) => {
  const dir = scratchDir(t);
  const file = join(dir, 'host.json');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 7, address: '0000:01:00.0', offset: 128, stride: 2 }] }));
  const host = new SimHost(file);
  await host.writeNumVfs('eth1' as NetdevName, 3);
  t.same((await host.listVfs('eth1' as NetdevName)).map((v) => v.address), ['0000:01:10.0', '0000:01:10.2', '0000:01:10.4'],
    'VF addresses at the PF\'s offset and stride, as igb shows them (01:10.0, 01:10.2, …)');
  const missing = new SimHost(join(dir, 'nope.json'));
  await t.rejects(missing.listPfs(), { exitCode: 2, message: /does not exist/ });
  writeFileSync(join(dir, 'bad.json'), '{"pfs":[{"name":"eth1"}]}');
  await t.rejects(new SimHost(join(dir, 'bad.json')).listPfs(), { exitCode: 2, message: /totalVfs/ });
  // Not JSON (a half-edited file): its own advice, not the state file's "run vfpool reconcile".
  writeFileSync(join(dir, 'broken.json'), '{"pfs":[');
  const broken = await new SimHost(join(dir, 'broken.json')).listPfs().then(() => null, (e: Error & { exitCode: number; hint?: string }) => e);
  t.equal(broken?.exitCode, 2);
  t.match(broken?.message, /broken\.json is not valid JSON: /);
  t.equal(broken?.hint, 'fix it, or write the simulated host afresh, e.g. {"pfs":[{"name":"eth1","totalVfs":16}]} (its VFs start from 0)');
});

t.test('concurrent writers to one sim file see one machine', async (t) => {
  const file = join(scratchDir(t), 'host.json');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 64 }] }));
  const host = new SimHost(file);
  await host.writeNumVfs('eth1' as NetdevName, 16);
  const macs = Array.from({ length: 16 }, (_, i) => `52:54:00:00:00:${i.toString(16).padStart(2, '0')}`);
  await Promise.all(macs.map((mac, i) => new SimHost(file).setVfLink('eth1' as NetdevName, i as never, { mac: mac as never })));
  const links = await host.getVfLinks('eth1' as NetdevName);
  t.same([...links.values()].map((l) => l.mac), macs, 'no update lost');
});

t.test('a seed is filled in once: what one reader sees, the next sees too', async (t) => {
  const file = join(scratchDir(t), 'host.json');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 4, numVfs: 2 }] }));
  const first = [...(await new SimHost(file).getVfLinks('eth1' as NetdevName)).values()].map((l) => l.mac);
  const second = [...(await new SimHost(file).getVfLinks('eth1' as NetdevName)).values()].map((l) => l.mac);
  t.equal(first.length, 2);
  t.same(second, first, 'the random MACs the VF driver picked at fill-in are kept');
  t.match(JSON.parse(readFileSync(file, 'utf8')), { version: 1 }, 'the filled-in state was written back');
});

t.test('queries answer from the last version read, and never from a version the file no longer is', async (t) => {
  const file = join(scratchDir(t), 'host.json');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 8 }] }));
  const eth1 = 'eth1' as NetdevName;
  const mine = new SimHost(file);
  const other = new SimHost(file); // another process: its own memory of the file
  await mine.writeNumVfs(eth1, 2);
  t.equal((await mine.getPf(eth1)).numVfs, 2, 'its own write');
  await other.setLinkUp(eth1, false);
  t.equal((await mine.getPf(eth1)).up, false, "another writer's change (a rename over the file) is seen");

  // An edit in place (same inode, same size), as a test or a person makes, long after the
  // version was read: the mtime tells it apart.
  const past = new Date(Date.now() - 60_000);
  utimesSync(file, past, past);
  t.equal(await mine.getMtu(eth1), 1500, 'read (and kept: its mtime is old)');
  writeFileSync(file, readFileSync(file, 'utf8').replace(/"mtu": ?1500/, (m) => m.replace('1500', '1600')));
  t.equal(await mine.getMtu(eth1), 1600, 'an edit in place of the same size is seen');

  // A refused change leaves what queries see as the file has it.
  await t.rejects(mine.writeNumVfs(eth1, 3), { code: 'EBUSY' });
  t.equal((await mine.getPf(eth1)).numVfs, 2);
  t.equal((await new SimHost(file).listVfs(eth1)).length, 2);
});

t.test('settle gate: a write of sriov_numvfs returns only once the gate file exists; the VFs are there meanwhile', async (t) => {
  const dir = scratchDir(t);
  const file = join(dir, 'host.json');
  const gate = join(dir, 'vfs-probed');
  writeFileSync(file, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 8, settleUntilFile: gate }] }));
  const eth1 = 'eth1' as NetdevName;
  const host = new SimHost(file);
  let returned = false;
  const write = host.writeNumVfs(eth1, 3).then(() => (returned = true));
  // Another process sees the VFs while the writer is still held (the kernel probes them
  // before the write returns); the writer stays held as long as the gate is closed.
  const other = new SimHost(file);
  while ((await other.getPf(eth1)).numVfs !== 3) await new Promise((r) => setTimeout(r, 10));
  t.equal((await other.listVfs(eth1)).length, 3, 'the VFs exist while the write is held');
  t.notOk(returned, 'the write has not returned: the gate is closed');
  writeFileSync(gate, '');
  await write;
  t.ok(returned, 'the write returns once the gate file exists');
  await host.writeNumVfs(eth1, 0);
  t.equal((await host.getPf(eth1)).numVfs, 0, 'a write of 0 is not held');
});
