import t from 'tap';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, type SimEnv } from '../helpers/env.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

/**
 * Pools as an administrator combines them: two pools on one PF, a managed pool of listed VFs, a
 * pool of VF netdevs whose VFs go to guests (and lose their netdev on vfio-pci). Through the CLI,
 * in-process, on the simulated host (its VFs get netdevs `ethNvI` from their host driver).
 */
const pool = (name: string, forward: string) => `<network><name>${name}</name>${forward}</network>`;
const domain = (name: string, pool: string, mac: string) =>
  `<domain type='kvm'><name>${name}</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>` +
  `<vfpool:hostdev pool='${pool}' mac='${mac}'/></vfpool:domain></metadata></domain>`;

async function vfs(w: SimEnv, pf: string): Promise<string[]> {
  return (await w.sim.listVfs(pf as NetdevName)).map((v) => `${v.address} ${v.driver ?? '-'} ${v.netdev ?? '-'}`);
}

t.test('two active pools on one PF: neither changes the count under the other, nor removes its VFs', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  w.definePool('a', pool('a', `<forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward>`));
  w.definePool('b', pool('b', `<forward mode='passthrough'><pf dev='eth1'><vf num='3'/></pf></forward>`));
  w.definePool('twin', pool('twin', `<forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward>`));
  t.equal((await cli('net-start', 'a')).exitCode, 0);
  const before = await vfs(w, 'eth1');

  for (const argv of [['net-start', '--dry-run', 'b'], ['net-start', 'b']]) {
    t.same(await cli(...argv), {
      exitCode: 3,
      stdout: '',
      stderr: "vfpool: pool 'b': cannot change eth1 from 2 to 3 VFs: active pool 'a' draws from it: stop pool 'a' first, or give both pools the same <vf num>\n",
    }, argv.join(' '));
  }
  t.same(await vfs(w, 'eth1'), before, "a's VFs and their vfio-pci binding are untouched");
  t.notOk(w.ctx.store.read().pools.b, 'b is not recorded as active');

  // The same count: starting it changes nothing, and stopping it leaves the VFs to 'a'.
  t.equal((await cli('net-start', 'twin')).exitCode, 0);
  t.same(await cli('net-destroy', 'twin'), { exitCode: 0, stdout: 'Pool twin destroyed\n', stderr: '' });
  t.same(await vfs(w, 'eth1'), before, "stopping 'twin' left eth1's VFs to 'a'");
  t.ok(w.ctx.store.read().pools.a, "'a' is still active");
  t.equal((await cli('net-destroy', 'a')).exitCode, 0);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'the last pool to stop removes them');
});

t.test('a managed pool without <vf num> binds its members to vfio-pci, listed VFs alone, and its stop gives them their driver back', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }, { name: 'eth3', totalVfs: 8, numVfs: 2 }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  w.definePool('m', pool('m', `<forward mode='hostdev' managed='yes'><pf dev='eth3'/><interface dev='eth1v1'/>` +
    `<address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></forward>`));
  const eth1 = (await w.sim.listVfs('eth1' as NetdevName)).map((v) => v.address);
  t.equal(eth1[3], '0000:3b:02.3', 'the <address> names eth1\'s VF 3');
  const eth3 = (await w.sim.listVfs('eth3' as NetdevName)).map((v) => v.address);
  const [before1, before3] = [await vfs(w, 'eth1'), await vfs(w, 'eth3')];

  const dry = await cli('net-start', '--dry-run', 'm');
  t.match(dry.stdout, /bind VFs 0000:3b:02\.1, 0000:3b:02\.3 to vfio-pci/, 'the dry run names the listed VFs');
  t.equal((await cli('net-start', 'm')).exitCode, 0);
  const drivers = async (pf: string) => (await w.sim.listVfs(pf as NetdevName)).map((v) => v.driver);
  t.same(await drivers('eth3'), ['vfio-pci', 'vfio-pci'], 'every VF of the <pf>');
  t.same(await drivers('eth1'), ['iavf', 'vfio-pci', 'iavf', 'vfio-pci'], 'only the listed VFs of eth1');

  // Its members are still its members on vfio-pci, where eth1v1 has no netdev.
  const list = JSON.parse((await cli('net-list', '--json')).stdout) as Array<{ name: string; vfs: number }>;
  t.equal(list.find((p) => p.name === 'm')?.vfs, 4);

  const dryStop = await cli('net-destroy', '--dry-run', 'm');
  t.same(dryStop.stdout.split('\n').slice(1, -1).map((l) => l.trim()), [
    `1. eth3: bind VFs ${eth3.join(', ')} to iavf`,
    '2. eth1: bind VFs 0000:3b:02.1, 0000:3b:02.3 to iavf',
  ], 'the stop plan: the VFs the start bound, back to the driver each had');
  t.equal((await cli('net-destroy', 'm')).exitCode, 0);
  t.same([await vfs(w, 'eth1'), await vfs(w, 'eth3')], [before1, before3], 'each VF back on its driver, with its netdev');
  t.equal((await w.sim.getPf('eth3' as NetdevName)).numVfs, 2, 'no count was changed');
});

t.test('a pool of VF netdevs keeps its members while guests hold them on vfio-pci', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  w.definePool('il', pool('il', `<forward mode='hostdev'><interface dev='eth1v0'/><interface dev='eth1v1'/></forward>`));
  t.equal((await cli('net-start', 'il')).exitCode, 0);
  const counts = async () => (JSON.parse((await cli('net-list', '--json')).stdout) as Array<{ vfs: number; inUse: number }>)[0];
  for (const [vm, mac] of [['vmA', '52:54:00:00:00:0a'], ['vmB', '52:54:00:00:00:0b']] as const) {
    t.equal((await runCliInProcess(['prepare', '--xml=-'], w.env, domain(vm, 'il', mac))).exitCode, 0, `${vm} gets a VF`);
  }
  t.match(await counts(), { vfs: 2, inUse: 2 }, 'both VFs are still members, and both in use');
  const third = await runCliInProcess(['prepare', '--xml=-'], w.env, domain('vmC', 'il', '52:54:00:00:00:0c'));
  t.equal(third.exitCode, 3);
  t.match(third.stderr, /^vfpool: domain 'vmC': pool 'il' is exhausted, all 2 VFs are held \(VF 0000:3b:02\.0: domain 'vmA'; VF 0000:3b:02\.1: domain 'vmB'\)/);
  t.equal((await cli('release', 'vmA')).exitCode, 0);
  t.match(await counts(), { vfs: 2, inUse: 1 });
  t.equal((await runCliInProcess(['prepare', '--xml=-'], w.env, domain('vmC', 'il', '52:54:00:00:00:0c'))).exitCode, 0, 'the VF vmA gave back is handed out again');
});

t.test('a member that names nothing on this host is said at start, and the rest of the pool works', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  w.definePool('typo', pool('typo', `<forward mode='hostdev'><interface dev='eth1v0'/><interface dev='eht1v1'/>` +
    `<address type='pci' domain='0x0000' bus='0x77' slot='0x00' function='0x0'/></forward>`));
  const warned = [
    "vfpool: warning: pool 'typo': <interface dev='eht1v1'> is no netdev on this host (nor a VF vfpool knows by that name): the pool has no VF from it",
    "vfpool: warning: pool 'typo': <address> 0000:77:00.0 is not a VF of an SR-IOV PF on this host: the pool has no VF from it",
  ];
  const dry = await runCliInProcess(['net-start', '--dry-run', 'typo'], w.env);
  t.same([dry.exitCode, dry.stderr.split('\n').slice(0, -1)], [0, warned], 'the dry run says it too');
  t.same(await runCliInProcess(['net-start', 'typo'], w.env), { exitCode: 0, stdout: 'Pool typo started\n', stderr: warned.map((l) => `${l}\n`).join('') });
  const list = JSON.parse((await runCliInProcess(['net-list', '--json'], w.env)).stdout) as Array<{ name: string; vfs: number }>;
  t.equal(list[0]!.vfs, 1, 'eth1v0 is its one VF');
});

t.test('a <pf> without <vf num>, or an <interface> naming a PF, that has no VFs is said at start, with the fix', async (t) => {
  // Reproduced: the README's own examples (direct-network's <pf dev='eth2'/> and mvtap-net's
  // <interface dev='eth2'/>, neither with <vf num>) on a PF with no VFs started silently ("Pool
  // direct-network started"), and the first sign was a guest refused later; libvirt refuses
  // such a network at its start ("No usable Vf's present").
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }, { name: 'eth2', totalVfs: 8 }, { name: 'eth3', totalVfs: 4 }] });
  w.definePool('direct-network', pool('direct-network', `<forward mode='pci-passthrough-hybrid'><pf dev='eth1'/><pf dev='eth2'/></forward>`));
  w.definePool('mvtap-net', pool('mvtap-net', `<forward mode='passthrough'><interface dev='eth3'/><interface dev='eth1v0'/></forward>`));
  const fix = (dev: string, n: number) => `(N at most ${n}) and start the pool again, or create them: echo N > /sys/class/net/${dev}/device/sriov_numvfs\n`;
  const warned = "vfpool: warning: pool 'direct-network': <pf dev='eth2'> is a PF with no VFs, and vfpool creates VFs only for a <pf> with <vf num>: " +
    `the pool has no VF from it; give it <vf num='N'/> ${fix('eth2', 8)}`;
  const dry = await runCliInProcess(['net-start', '--dry-run', 'direct-network'], w.env);
  t.same([dry.exitCode, dry.stderr], [0, warned], 'the dry run says it too');
  t.same(await runCliInProcess(['net-start', 'direct-network'], w.env), { exitCode: 0, stdout: 'Pool direct-network started\n', stderr: warned });
  t.equal((await w.sim.getPf('eth2' as NetdevName)).numVfs, 0, 'its count is not changed');
  t.same(await runCliInProcess(['net-start', 'mvtap-net'], w.env), {
    exitCode: 0,
    stdout: 'Pool mvtap-net started\n',
    stderr: "vfpool: warning: pool 'mvtap-net': <interface dev='eth3'> is a PF with no VFs, and vfpool creates VFs only for a <pf> with <vf num>: " +
      `the pool has no VF from it; write <pf dev='eth3'><vf num='N'/></pf> in its place ${fix('eth3', 4)}`,
  }, 'an <interface> naming a PF (all its VFs) is said too, a VF netdev is not');
  t.equal((await runCliInProcess(['net-destroy', 'direct-network'], w.env)).exitCode, 0);
  await w.sim.writeNumVfs('eth2' as NetdevName, 2);
  t.same(await runCliInProcess(['net-start', 'direct-network'], w.env), { exitCode: 0, stdout: 'Pool direct-network started\n', stderr: '' }, 'silent once eth2 has VFs');
});

t.test('a managed pool\'s stop gives its VFs their driver back while a pool that needs host drivers shares the PF', async (t) => {
  // Reproduced: a passthrough pool (macvtap needs each VF's host netdev) and a managed hostdev
  // pool on one PF; the managed pool's stop left every VF on vfio-pci because another pool drew
  // from the PF, so the passthrough pool's VFs had no netdev until someone rebound them by hand.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  w.definePool('mvtap', pool('mvtap', `<forward mode='passthrough'><pf dev='eth1'/></forward>`));
  w.definePool('m', pool('m', `<forward mode='hostdev' managed='yes'><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></forward>`));
  w.definePool('m2', pool('m2', `<forward mode='hostdev' managed='yes'><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></forward>`));
  const before = await vfs(w, 'eth1');
  t.equal((await cli('net-start', 'mvtap')).exitCode, 0);
  t.equal((await cli('net-start', 'm')).exitCode, 0);
  t.match((await vfs(w, 'eth1'))[1], /^0000:3b:02\.1 vfio-pci -$/, "m's VF on vfio-pci");
  t.equal((await cli('net-destroy', 'm')).exitCode, 0);
  t.same(await vfs(w, 'eth1'), before, "m's stop gave its VF its driver and netdev back");

  // Another managed pool that binds the same VF keeps it on vfio-pci.
  t.equal((await cli('net-start', 'm')).exitCode, 0);
  t.equal((await cli('net-start', 'm2')).exitCode, 0);
  t.equal((await cli('net-destroy', 'm')).exitCode, 0);
  t.match((await vfs(w, 'eth1'))[1], /^0000:3b:02\.1 vfio-pci -$/, 'still m2\'s, on vfio-pci');
  t.equal((await cli('net-destroy', 'm2')).exitCode, 0);
});
