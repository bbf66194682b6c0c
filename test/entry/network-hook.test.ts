import t from 'tap';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetdevName } from '../../src/types.js';
import { HostError } from '../../src/errors.js';
import { makeSimEnv } from '../helpers/env.js';
import { spawnSleeper } from '../helpers/processes.js';
import { REPO, spawnEntry } from '../helpers/spawn.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool } from '../../src/pool/pools.js';
import { poolXml } from '../pool/activation-suite.js';
import { domainXml, portHookData } from '../helpers/libvirt-domains.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { hookStatus, META, networkHookInProcess, qemuHookInProcess, setupHookWorld } from '../helpers/hook-world.js';

const sample = (name: string) => readFileSync(join(REPO, 'test/libvirt/samples', name), 'utf8');
const SEQNET_START = sample('stdin-network-seqnet-start-begin.xml'); // libvirt 11.3, a plain bridge network
/** hooks/network as libvirt runs it (the shim, then the Node bundle): where the shim's decision is part of the test. */
const hook = (w: { env: Record<string, string> }, args: string[], stdin: string) => spawnEntry('hooks/network', args, { env: w.env, stdin });
/** The Node half in-process, for calls the shim hands to Node anyway (a pool's name, vfpool's XML, a VF plug). */
const node = (w: { env: Record<string, string> }, args: string[], stdin: string) => networkHookInProcess(w.env, args, stdin);

t.test('a network that is not a vfpool pool costs nothing: exit 0, no state', async (t) => {
  const w = makeSimEnv(t);
  for (const op of [['start', 'begin'], ['started', 'begin'], ['stopped', 'end'], ['updated', 'begin']]) {
    const r = await hook(w, ['seqnet', op[0]!, op[1]!, '-'], SEQNET_START);
    t.same([r.exitCode, r.stdout, r.stderr], [0, '', ''], `seqnet ${op.join(' ')}`);
  }
  t.notOk(existsSync(w.settings.stateDir), 'state dir never created');
});

t.test('libvirt network carrying a pool in metadata: start creates VFs, stopped removes them', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const start = await hook(w, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml'));
  t.same([start.exitCode, start.stdout, start.stderr], [0, '', ''], 'start begin');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4);
  t.ok(existsSync(join(w.settings.stateDir, 'index/pool.vfp-net')), 'the shim\'s marker exists');
  // net-dumpxml shows the network libvirt runs, not the hook's <hookData> around it.
  const dump = await runCliInProcess(['net-dumpxml', 'vfp-net'], w.env);
  t.match(dump.stdout, /^<network[\s>][\s\S]*<\/network>\n$/);
  t.notMatch(dump.stdout, /hookData/);
  t.same(parsePoolXml(dump.stdout, 'dumped').pfs, [{ dev: 'eth1', numVfs: 4 }], 'what it prints defines the same pool');
  const started = await hook(w, ['vfp-net', 'started', 'begin', '-'], sample('stdin-network-vfp-net-started-begin.xml'));
  t.equal(started.exitCode, 0, 'started begin: nothing to do');
  const stopped = await hook(w, ['vfp-net', 'stopped', 'end', '-'], sample('stdin-network-vfp-net-stopped-end.xml'));
  t.same([stopped.exitCode, stopped.stderr], [0, ''], 'stopped end');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  t.same(readdirSync(join(w.settings.stateDir, 'index')), [], 'marker gone');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /Step 1: eth1: write 4 to sriov_numvfs/);
});

t.test('vfpool net-destroy of a pool a libvirt network runs is refused, naming virsh net-destroy', async (t) => {
  // Reproduced: `vfpool net-destroy vfp-net` of the pool `virsh net-start vfp-net` started
  // removed its VFs while libvirt kept the network active: guests on it were refused ("start the
  // libvirt network that carries it") and `virsh net-start` answered that it is active already.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const runDir = join(w.dir, 'libvirt', 'qemu');
  const env = { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: runDir };
  t.equal((await networkHookInProcess(env, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml'))).exitCode, 0);
  mkdirSync(join(w.dir, 'libvirt', 'network'), { recursive: true });
  writeFileSync(join(w.dir, 'libvirt', 'network', 'vfp-net.xml'), '<networkstatus/>'); // libvirt's, while the network runs
  const refused = "vfpool: pool 'vfp-net' is run by libvirt network 'vfp-net', which vfpool net-destroy would leave active without its VFs: stop it with `virsh net-destroy vfp-net`\n";
  for (const argv of [['net-destroy', 'vfp-net'], ['net-destroy', '--dry-run', 'vfp-net']]) {
    t.same(await runCliInProcess(argv, env), { exitCode: 3, stdout: '', stderr: refused }, argv.join(' '));
  }
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4, 'its VFs are kept');
  rmSync(join(w.dir, 'libvirt', 'network', 'vfp-net.xml')); // libvirt no longer runs it (its stop was missed)
  t.same(await runCliInProcess(['net-destroy', 'vfp-net'], env), { exitCode: 0, stdout: 'Pool vfp-net destroyed\n', stderr: '' }, 'then vfpool stops it');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
});

t.test('a libvirt network whose vfpool:pool is in a mistyped namespace is refused with the fix', async (t) => {
  // Else it started as a plain network without its pool, and its guests were refused later.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const stdin = sample('stdin-network-vfp-net-start-begin.xml').replace('https://vfpool.dev/xmlns/1', 'http://vfpool.dev/xmlns/1');
  t.same(await hook(w, ['vfp-net', 'start', 'begin', '-'], stdin), {
    exitCode: 2, stdout: '',
    stderr: "vfpool: libvirt network 'vfp-net' (start begin): <metadata> holds <vfpool:pool> in namespace 'http://vfpool.dev/xmlns/1', not vfpool's https://vfpool.dev/xmlns/1, so the network would run without its pool: declare xmlns:vfpool='https://vfpool.dev/xmlns/1'\n",
  });
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'nothing changed');
});

t.test('more VFs than the PF has: exit 2, vfpool\'s sentence on stderr for virsh, nothing changed', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const r = await node(w, ['vfp-big', 'start', 'begin', '-'], sample('stdin-network-vfp-big-start-begin.xml'));
  t.equal(r.exitCode, 2);
  t.equal(r.stderr, "vfpool: pool 'vfp-big': <vf num='99'> on PF eth1 is more than its sriov_totalvfs 8: lower num to at most 8\n");
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  const after = await node(w, ['vfp-big', 'stopped', 'end', '-'], sample('stdin-network-vfp-big-stopped-end.xml'));
  t.same([after.exitCode, after.stderr], [0, ''], 'libvirt\'s stopped end after the refused start is harmless');
});

t.test('libvirt\'s refused start of a pool `vfpool net-start` runs: the stopped end libvirt follows it with leaves the pool running', async (t) => {
  // libvirt runs `stopped end` after any failed start (networkStartNetwork's cleanup); it used
  // to stop the pool the CLI had started before, removing its VFs.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('vfp-big', poolXml('eth1', 2, { name: 'vfp-big' }));
  t.equal((await runCliInProcess(['net-start', 'vfp-big'], w.env)).exitCode, 0);
  const refused = await node(w, ['vfp-big', 'start', 'begin', '-'], sample('stdin-network-vfp-big-start-begin.xml'));
  t.equal(refused.exitCode, 2, 'the network\'s own pool (99 VFs) is refused');
  const after = await node(w, ['vfp-big', 'stopped', 'end', '-'], sample('stdin-network-vfp-big-stopped-end.xml'));
  t.same([after.exitCode, after.stderr], [0, '']);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'its 2 VFs are still there');
  t.same(Object.keys(w.ctx.store.read().pools), ['vfp-big'], 'and it is still active');
  t.equal(w.ctx.store.read().pools['vfp-big']!.libvirtStartRefused, null, 'the mark is used once');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /libvirt's stop after its refused start leaves the pool running/);

  // A libvirt start that succeeds makes the next stopped end a stop like any other.
  t.same((await node(w, ['vfp-big', 'start', 'begin', '-'], '<hookData><network><name>vfp-big</name><forward mode=\'hostdev\'/></network></hookData>')).exitCode, 0);
  t.same((await node(w, ['vfp-big', 'stopped', 'end', '-'], sample('stdin-network-vfp-big-stopped-end.xml'))).exitCode, 0);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'stopped: its VFs removed');
  t.same(Object.keys(w.ctx.store.read().pools), [], 'not active');
});

t.test('a libvirt start of a running pool whose change fails half-way leaves the pool as it ran', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('p', poolXml('eth1', 2, { name: 'p' }));
  t.equal((await runCliInProcess(['net-start', 'p'], w.env)).exitCode, 0);
  const running = w.ctx.store.read().pools.p!;
  w.definePool('p', poolXml('eth1', 3, { name: 'p' }));
  // Every sriov_numvfs write fails (EIO), the first one included: the change is undone at once.
  const failing = new Proxy(w.ctx.host, {
    get(target, prop, receiver) {
      if (prop === 'writeNumVfs') return async () => { throw new HostError('injected: sriov_numvfs write failed', { code: 'EIO' }); };
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const xml3 = poolXml('eth1', 3, { name: 'p' });
  await t.rejects(startPool({ ...w.ctx, host: failing }, parsePoolXml(xml3, 't'), xml3, { allowActive: true }), /injected/);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'eth1 has the 2 VFs it had');
  t.same(w.ctx.store.read().pools.p, running, 'the pool is recorded as it ran (it was forgotten, its VFs left behind)');
});

t.test('stopped end with a VF in use: exit 0, the VFs stay, stderr says why', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  await node(w, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml'));
  const vf = (await w.sim.listVfs('eth1' as NetdevName))[0]!;
  const qemu = spawnSleeper();
  t.teardown(qemu.kill);
  await w.sim.holdVfioGroup(vf.address, qemu.pid);
  const r = await node(w, ['vfp-net', 'stopped', 'end', '-'], sample('stdin-network-vfp-net-stopped-end.xml'));
  t.equal(r.exitCode, 0);
  t.match(r.stderr, new RegExp(`^vfpool: warning: pool 'vfp-net': eth1 keeps its 4 VFs: VF 0 \\(${vf.address}\\) is in use by pid ${qemu.pid} holding /dev/vfio/`));
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4);
});

t.test('a plain libvirt network named like a vfpool definition starts that pool', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('seqnet', `<network><name>seqnet</name><forward mode='hostdev'><pf dev='eth1'><vf num='3'/></pf></forward></network>`);
  const r = await hook(w, ['seqnet', 'start', 'begin', '-'], SEQNET_START);
  t.same([r.exitCode, r.stderr], [0, '']);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 3);
});

t.test('bad hook input is exit 2 with one line, and changes nothing', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const good = sample('stdin-network-vfp-net-start-begin.xml');
  const cases: Array<[string, string[], string, RegExp]> = [
    ['argv and stdin disagree', ['other', 'start', 'begin', '-'], good.replace('vfp-net', 'other2'), /argv names network 'other' but stdin describes 'other2'/],
    ['not XML', ['vfp-net', 'start', 'begin', '-'], '<hookData><network>https://vfpool.dev/xmlns/1', /not well-formed XML/],
    ['bad vf num', ['vfp-net', 'start', 'begin', '-'], good.replace('num="4"', 'num="four"'), /vf num='four' is not a number/],
    ['unknown mode', ['vfp-net', 'start', 'begin', '-'], good.replace("mode='hostdev'", "mode='nat'"), /forward mode 'nat' is not a vfpool mode/],
    ['missing dev', ['vfp-net', 'start', 'begin', '-'], good.replace('dev="eth1"', ''), /<pf> has no dev attribute/],
  ];
  for (const [name, args, stdin, msg] of cases) {
    const r = await node(w, args, stdin);
    t.equal(r.exitCode, 2, `${name}: exit 2`);
    t.match(r.stderr, msg, name);
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
  }
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'nothing changed');
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json')), 'no state written');
});

t.test('a missing PF is exit 1 naming the pool and the PF', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const r = await node(w, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml').replace('dev="eth1"', 'dev="eth7"'));
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /^vfpool: pool 'vfp-net': PF eth7: no network interface 'eth7'/);
});

t.test('vfpool.conf is how hooks learn settings under libvirt\'s empty environment', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(w.settings.configDir, 'vfpool.conf'), `# test\nVFPOOL_HOST=${w.settings.host}\nVFPOOL_STATE_DIR="${w.settings.stateDir}"\n`);
  const r = await spawnEntry('hooks/network', ['vfp-net', 'start', 'begin', '-'], {
    env: { VFPOOL_CONFIG_DIR: w.settings.configDir },
    stdin: sample('stdin-network-vfp-net-start-begin.xml'),
  });
  t.same([r.exitCode, r.stderr], [0, '']);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4);
  t.ok(existsSync(join(w.settings.stateDir, 'state.json')), 'state where the conf file said');
});

t.test('libvirt restarting a running pool plans from the definition it records', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', poolXml('eth1', 2, { managed: false }));
  const first = parsePoolXml(poolXml('eth1', 2, { managed: false }), 't');
  await startPool(w.ctx, first, poolXml('eth1', 2, { managed: false }));
  w.definePool('sriov-pool', poolXml('eth1', 3, { managed: false }));
  const r = await node(w, ['sriov-pool', 'start', 'begin', '-'], '<hookData><network><name>sriov-pool</name><forward mode=\'hostdev\'/></network></hookData>');
  t.same([r.exitCode, r.stderr], [0, '']);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 3, 'the new definition was applied');
  t.match(w.ctx.store.read().pools['sriov-pool']!.xml, /<vf num='3'\/>/, 'and is the one recorded');
});

t.test('port-created records libvirt\'s VF, vetoes one vfpool holds for another domain; port-deleted drops it', async (t) => {
  const w = await setupHookWorld(t);
  const net = (op: string, stdin: string) => networkHookInProcess(w.hookEnv, ['sriov-pool', op, 'begin', '-'], stdin);
  const forward = `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`;
  const plug = (fn: number) => `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x${fn}'/></plug>`;
  const port = (domain: string, fn: number, uuid: string) => portHookData({ network: 'sriov-pool', forward, portUuid: uuid, domain, mac: '52:54:00:12:34:56', plug: plug(fn) });

  const created = await net('port-created', port('lvguest', 1, '6ae23074-a30a-4c60-afde-fd10f4b211c2'));
  t.same([created.exitCode, created.stdout, created.stderr], [0, '', '']);
  t.match((await hookStatus(w)).pfs[0]!.vfs[1]!.owner, { domain: 'lvguest', via: 'libvirt', pool: 'sriov-pool' });
  t.ok(existsSync(join(w.settings.stateDir, 'index/domain.lvguest')));

  // vfpool gives VF 0 to vm1; libvirt then hands the same VF to another guest: refused.
  t.equal((await qemuHookInProcess(w.hookEnv, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  const veto = await net('port-created', port('other', 0, '11111111-2222-3333-4444-555555555555'));
  t.equal(veto.exitCode, 3);
  t.match(veto.stderr, /^vfpool: libvirt network 'sriov-pool' hands VF 0000:3b:02\.0 to domain 'other', but vfpool holds it for domain 'vm1' \(pool 'sriov-pool'\)/);

  // vfpool's first fit skips the VF libvirt handed out.
  const vm2 = await qemuHookInProcess(w.hookEnv, ['vm2', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm2', vfpool: META.replace('11:22:33', '11:22:44') }));
  t.equal(vm2.exitCode, 0, vm2.stderr);
  t.equal((await hookStatus(w)).pfs[0]!.vfs[2]!.owner?.domain, 'vm2', 'VF 1 (libvirt\'s) was skipped');

  for (const n of [1, 2]) {
    const del = await net('port-deleted', port('lvguest', 1, '6ae23074-a30a-4c60-afde-fd10f4b211c2'));
    t.same([del.exitCode, del.stderr], [0, ''], `port-deleted #${n}`);
  }
  t.equal((await hookStatus(w)).pfs[0]!.vfs[1]!.owner, null);
});

t.test('port-created vetoes the VF vfpool gave the same domain for another NIC (libvirt picks after prepare)', async (t) => {
  const w = await setupHookWorld(t);
  const forward = `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`;
  const plug = `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x0'/></plug>`;
  // vm1 asks a VF of sriov-pool from vfpool and has an <interface> on libvirt's hostdev network of
  // that name: the prepare hook runs first and vfpool gives it VF 0 ...
  t.equal((await qemuHookInProcess(w.hookEnv, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  // ... then libvirt, counting only its own connections, hands VF 0 to the interface.
  const stdin = portHookData({ network: 'sriov-pool', forward, portUuid: '22222222-3333-4444-5555-666666666666', domain: 'vm1', mac: '52:54:00:12:34:99', plug });
  const r = await networkHookInProcess(w.hookEnv, ['sriov-pool', 'port-created', 'begin', '-'], stdin);
  t.equal(r.exitCode, 3);
  t.match(r.stderr, /^vfpool: libvirt network 'sriov-pool' hands VF 0000:3b:02\.0 to domain 'vm1' for its <interface> with mac 52:54:00:12:34:99, but vfpool already gave that VF to the same domain from pool 'sriov-pool' with mac 52:54:00:11:22:33: a VF reaches a guest once: give the libvirt network and the vfpool pool different VFs/);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.same(w.ctx.store.read().ports, [], 'no port recorded');
  t.equal((await hookStatus(w)).pfs[0]!.vfs[0]!.owner?.domain, 'vm1', 'vfpool\'s allocation is untouched (libvirt\'s release frees it)');
});

t.test('a passthrough network\'s direct plug on a VF netdev is recorded by PCI address', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }] });
  await w.sim.writeNumVfs('eth1' as never, 4);
  w.definePool('mvtap-net', `<network><name>mvtap-net</name><forward mode='passthrough'><interface dev='eth1'/></forward></network>`);
  const stdin = portHookData({
    network: 'mvtap-net',
    forward: `<forward dev='eth1' mode='passthrough'><pf dev='eth1'/><interface dev='eth1v2' connections='1'/></forward>`,
    portUuid: '6ae23074-a30a-4c60-afde-fd10f4b211c2',
    domain: 'pttest',
    mac: '52:54:00:12:34:56',
    plug: `<plug type='direct' dev='eth1v2' mode='passthrough'/>`,
  });
  const r = await node(w, ['mvtap-net', 'port-created', 'begin', '-'], stdin);
  t.same([r.exitCode, r.stderr], [0, '']);
  const port = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')).ports[0];
  t.match(port, { network: 'mvtap-net', domain: 'pttest', netdev: 'eth1v2', vfAddr: '0000:3b:02.2', plug: 'direct', mac: '52:54:00:12:34:56' });
  // vfpool's own passthrough allocation now skips that VF.
  const p = await qemuHookInProcess(w.env, ['vm1', 'prepare', 'begin', '-'],
    domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev address='0000:3b:02.2' mac='52:54:00:00:00:01'/>` }),
  );
  t.equal(p.exitCode, 3);
  t.match(p.stderr, /VF 0000:3b:02\.2 \(eth1v2\) is in use by domain 'pttest' through libvirt network 'mvtap-net'/);
});

t.test('seed 004\'s <interface dev=PF> as a libvirt passthrough network is refused at start: libvirt would hand out the PF itself', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth2', totalVfs: 8, numVfs: 4 }] });
  // The README's mvtap-net: to vfpool, <interface dev='eth2'/> means eth2's VFs.
  w.definePool('mvtap-net', `<network><name>mvtap-net</name><forward mode='passthrough' dev='eth2'><interface dev='eth2'/></forward></network>`);
  const net = (forward: string) => `<hookData>\n  <network>\n    <name>mvtap-net</name>\n    <uuid>0fac4c73-294d-4905-a1ae-ecf4df11d6ed</uuid>\n    ${forward}\n  </network>\n</hookData>`;
  // What libvirt passes for that same XML: it uses a listed interface as it is (macvtap on eth2).
  // Through the shim as libvirt runs it, and the Node half in-process.
  for (const [run, forward] of [[hook, `<forward dev='eth2' mode='passthrough'>\n      <interface dev='eth2'/>\n    </forward>`], [node, `<forward dev='eth2' mode='passthrough'/>`]] as const) {
    const r = await run(w, ['mvtap-net', 'start', 'begin', '-'], net(forward));
    t.equal(r.exitCode, 2, forward);
    t.equal(
      r.stderr,
      "vfpool: pool 'mvtap-net': libvirt network 'mvtap-net' lists PF eth2 as <interface dev='eth2'/> in passthrough mode, and libvirt hands a listed interface to a guest as it is (macvtap on the PF itself, its MAC replaced by the guest's), not one of its VFs: " +
        "in the libvirt network write <forward mode='passthrough'><pf dev='eth2'/></forward> (libvirt then picks a free VF) and keep the VF count in <metadata> or the vfpool definition\n",
    );
    t.notOk(existsSync(join(w.settings.stateDir, 'state.json')) && w.ctx.store.read().pools['mvtap-net'], 'the pool is not started');
  }
  t.match(readFileSync(join(w.settings.journalDir, 'history.jsonl'), 'utf8'), /"op":"pool-refused","domain":null,"pool":"mvtap-net"/, 'the refusal is in the history');
  // The forms under which libvirt hands out VFs, or shares the PF, start as before.
  for (const forward of [
    `<forward mode='passthrough'><pf dev='eth2'/></forward>`,
    `<forward dev='eth2v1' mode='passthrough'><interface dev='eth2v1'/><interface dev='eth2v2'/></forward>`,
    `<forward dev='eth2' mode='vepa'><interface dev='eth2'/></forward>`,
  ]) {
    const r = await node(w, ['mvtap-net', 'start', 'begin', '-'], net(forward));
    t.same([r.exitCode, r.stderr], [0, ''], forward);
    t.ok(w.ctx.store.read().pools['mvtap-net'], 'started');
    t.equal((await node(w, ['mvtap-net', 'stopped', 'end', '-'], net(forward))).exitCode, 0);
  }
});

t.test('a libvirt hostdev network that is not a vfpool pool still has its VF ports recorded', async (t) => {
  const w = await setupHookWorld(t);
  const forward = `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`;
  const hostdevPlug = `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></plug>`;
  const net = (op: string, plug: string, network = 'libvirt-only') =>
    spawnEntry('hooks/network', [network, op, 'begin', '-'], {
      env: w.hookEnv,
      stdin: portHookData({ network, forward, portUuid: '0b5a2f9e-9a55-4d2b-8a47-3f0e2d1c6b7a', domain: 'lvguest', mac: '52:54:00:12:34:57', plug }),
    });
  const created = await net('port-created', hostdevPlug);
  t.same([created.exitCode, created.stderr], [0, '']);
  t.match((await hookStatus(w)).pfs[0]!.vfs[3]!.owner, { domain: 'lvguest', via: 'libvirt', pool: 'libvirt-only' }, 'in-use guard sees it');
  t.equal((await net('port-deleted', hostdevPlug)).exitCode, 0);
  t.equal((await hookStatus(w)).pfs[0]!.vfs[3]!.owner, null);
  const stateBefore = existsSync(join(w.settings.stateDir, 'state.json')) ? readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8') : '';
  const bridge = await net('port-created', `<plug type='network' bridge='virbr0'/>`, 'default');
  t.same([bridge.exitCode, bridge.stdout, bridge.stderr], [0, '', ''], 'a bridge port on a network that is not a pool costs nothing');
  const stateAfter = existsSync(join(w.settings.stateDir, 'state.json')) ? readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8') : '';
  t.equal(stateAfter, stateBefore, 'and changes no state');
});

t.test('a macvtap port on a plain NIC (no VF) is not recorded and writes no state', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const stdin = portHookData({
    network: 'bridge-mvtap',
    forward: `<forward mode='bridge'><interface dev='eth1'/></forward>`,
    portUuid: '0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e',
    domain: 'plainguest',
    mac: '52:54:00:12:34:58',
    plug: `<plug type='direct' dev='eth1' mode='bridge'/>`,
  });
  const r = await spawnEntry('hooks/network', ['bridge-mvtap', 'port-created', 'begin', '-'], { env: w.env, stdin });
  t.same([r.exitCode, r.stdout, r.stderr], [0, '', '']);
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json')), 'no state written for a port that involves no VF');
});

t.test('ports of guests and networks whose names libvirt allows and vfpool does not: only a VF port is refused', async (t) => {
  // libvirt refuses only '/' (and a newline in a domain name): 'web 1' and 'my net' are fine to
  // it. The hook sees every macvtap port on every network; one that involves no VF must pass.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }] });
  await w.sim.writeNumVfs('eth1' as never, 4);
  const port = (network: string, domain: string, plug: string) =>
    node(w, [network, 'port-created', 'begin', '-'], portHookData({ network, forward: `<forward mode='bridge'><interface dev='eth1'/></forward>`, portUuid: '0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e', domain, mac: '52:54:00:12:34:58', plug }));
  const macvtap = `<plug type='direct' dev='eth1' mode='bridge'/>`;
  for (const [network, domain] of [['bridge-mvtap', 'web 1'], ['my net', 'plainguest'], ['my net', "o'brien &amp; co"]] as const) {
    t.same(await port(network, domain, macvtap), { exitCode: 0, stdout: '', stderr: '' }, `${network} / ${domain}`);
  }
  t.same(await node(w, ['my net', 'port-deleted', 'begin', '-'], portHookData({ network: 'my net', forward: '', portUuid: '0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e', domain: 'web 1', mac: '52:54:00:12:34:58', plug: macvtap })), { exitCode: 0, stdout: '', stderr: '' });
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json')), 'no state written');
  // A VF must be recorded for the in-use guard, under names vfpool can keep: one clear line.
  const vf = `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></plug>`;
  t.same(await port('lv-hostdev', 'web 1', vf), {
    exitCode: 2,
    stdout: '',
    stderr: "vfpool: libvirt network 'lv-hostdev' hands VF 0000:3b:02.3 to a domain whose name 'web 1' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters\n",
  });
  t.same(await port('my net', 'vm1', vf), {
    exitCode: 2,
    stdout: '',
    stderr: "vfpool: libvirt network handing out VF 0000:3b:02.3: its name 'my net' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters\n",
  });
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json')), 'nothing recorded');
  t.equal((await node(w, ['../x', 'port-created', 'begin', '-'], portHookData({ network: 'x', forward: '', portUuid: '0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e', domain: 'vm1', mac: '52:54:00:12:34:58', plug: macvtap }))).exitCode, 2, 'argv and stdin must still name the same network');
});

t.test('the Node half on its own: usage, operations it ignores, a network that is not a pool', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  t.same(await node(w, ['vfp-net'], ''), { exitCode: 2, stdout: '', stderr: 'vfpool: usage: network NAME OP SUBOP EXTRA (as libvirt calls it), with <hookData> on stdin\n' });
  t.same(await node(w, ['vfp-net', 'updated', 'begin', '-'], 'not even XML'), { exitCode: 0, stdout: '', stderr: '' }, 'an operation vfpool has nothing to do with: stdin never read');
  t.same(await node(w, ['seqnet', 'start', 'begin', '-'], SEQNET_START), { exitCode: 0, stdout: '', stderr: '' }, 'called directly for a plain network');
  t.notOk(existsSync(w.settings.stateDir), 'no state');
  t.equal((await node(w, ['../x', 'start', 'begin', '-'], SEQNET_START)).exitCode, 2, 'a name that could leave a directory');
});

t.test('port-created of an <interface> hotplugged on a hybrid pool is refused; at start and at a daemon restart it passes', async (t) => {
  const w = await setupHookWorld(t);
  const HY = `<network><name>hy</name><forward mode='pci-passthrough-hybrid' managed='yes'><pf dev='eth1'/></forward></network>`;
  w.definePool('hy', HY);
  await startPool(w.ctx, parsePoolXml(HY, 'hy'), HY);
  const nic = (mac: string) => `<interface type='network'><mac address='${mac}'/><source network='hy'/><model type='virtio'/></interface>`;
  // As libvirt 11.3 runs it for a bridge network named after the pool: the virtio-net NIC's port.
  const port = (mac: string, uuid: string, domain = 'hyvm') => portHookData({ network: 'hy', forward: `<forward mode='bridge'/>\n    <bridge name='vfpbr0'/>`, portUuid: uuid, domain, mac, plug: `<plug type='network' bridge='vfpbr0'/>` });
  const created = (mac: string, uuid: string) => hook({ env: w.hookEnv }, ['hy', 'port-created', 'begin', '-'], port(mac, uuid));
  // The shim hands a pool's ports to Node (the start above shows it); the verdicts, in-process.
  const judged = (mac: string, uuid: string, domain?: string) => networkHookInProcess(w.hookEnv, ['hy', 'port-created', 'begin', '-'], port(mac, uuid, domain));

  // The start: prepare paired a VF with the NIC's MAC, then libvirt creates the port.
  const prep = await qemuHookInProcess(w.hookEnv, ['hyvm', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'hyvm', devices: nic('52:54:00:00:00:41') }));
  t.equal(prep.exitCode, 0, prep.stderr);
  const atStart = await created('52:54:00:00:00:41', '438fc692-f5b0-4e71-aaf3-33806ef1e7ae');
  t.same([atStart.exitCode, atStart.stdout, atStart.stderr], [0, '', ''], 'the port of an interface prepare paired a VF with');

  // `virsh attach-device hyvm nic.xml --live`: no qemu hook, only this port-created.
  const stateBefore = readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8');
  const hot = await judged('52:54:00:00:00:42', '2bf61b32-10d7-4a2e-9439-327c5fc733a1');
  t.same([hot.exitCode, hot.stdout], [3, '']);
  t.equal(hot.stderr,
    "vfpool: domain 'hyvm': <interface> 52:54:00:00:00:42 on pci-passthrough-hybrid pool 'hy' would get no VF: vfpool pairs one when the domain starts, and libvirt runs no qemu hook for an interface attached to a running domain: attach it with --config only and restart the domain\n");
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), stateBefore, 'nothing recorded');
  // A guest named as libvirt allows and vfpool does not ('web 1') never had a VF paired: refused the same way.
  const oddName = await judged('52:54:00:00:00:44', '5c0e2f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6', 'web 1');
  t.same([oddName.exitCode, oddName.stderr.startsWith("vfpool: domain 'web 1': <interface> 52:54:00:00:00:44 on pci-passthrough-hybrid pool 'hy' would get no VF")], [3, true], oddName.stderr);

  // What cannot be judged is let through (a daemon restart must never cost a guest its NIC), and said in the log.
  mkdirSync(join(w.runDir, 'hyvm.xml'));
  const unsure = await judged('52:54:00:00:00:42', '2bf61b32-10d7-4a2e-9439-327c5fc733a1');
  t.same([unsure.exitCode, unsure.stderr], [0, ''], 'a status XML that cannot be read');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /warn network-hook hy port-created begin: libvirt network 'hy': port 2bf61b32-10d7-4a2e-9439-327c5fc733a1 of domain 'hyvm' let through unchecked: cannot read libvirt's status XML .*hyvm\.xml: EISDIR/);
  rmSync(join(w.runDir, 'hyvm.xml'), { recursive: true });

  // A daemon restart: libvirt runs port-created again for each port of a running guest, which
  // its status XML lists already; refusing would cost the guest its NIC.
  writeFileSync(join(w.runDir, 'hyvm.xml'), `<domstatus state='running'>\n  <domain type='qemu' id='9'>\n    <devices>\n      <interface type='network'>\n        <mac address='52:54:00:00:00:42'/>\n        <source network='hy' portid='2bf61b32-10d7-4a2e-9439-327c5fc733a1'/>\n      </interface>\n    </devices>\n  </domain>\n</domstatus>\n`);
  const reclaim = await judged('52:54:00:00:00:42', '2bf61b32-10d7-4a2e-9439-327c5fc733a1');
  t.same([reclaim.exitCode, reclaim.stderr], [0, ''], 'a port libvirt reclaims at a daemon restart');

  // A bridge port on a hostdev pool's network, or on a network that is no pool: not vfpool's business here.
  const onHostdevPool = await networkHookInProcess(w.hookEnv, ['sriov-pool', 'port-created', 'begin', '-'],
    portHookData({ network: 'sriov-pool', forward: `<forward mode='bridge'/>`, portUuid: '0b5a2f9e-9a55-4d2b-8a47-3f0e2d1c6b7a', domain: 'hyvm', mac: '52:54:00:00:00:43', plug: `<plug type='network' bridge='vfpbr0'/>` }));
  t.same([onHostdevPool.exitCode, onHostdevPool.stderr], [0, '']);
});
