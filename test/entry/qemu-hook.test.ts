import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { SimState } from '../../src/host/sim-kernel.js';
import { makeSimEnv, SEED_000_POOL, type SimEnv } from '../helpers/env.js';
import { domainXml, PLAIN_DOMAIN, portHookData } from '../helpers/libvirt-domains.js';
import { spawnEntry, vfpoolCli } from '../helpers/spawn.js';

/**
 * The qemu hook as libvirt runs it: hooks/qemu (the shell shim) spawned with libvirt's argv,
 * its almost empty environment and the domain XML libvirt 11.3 writes at each stage on stdin.
 */
const META = `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='100'/>`;

interface HookEnv extends SimEnv {
  hookEnv: Record<string, string>;
  runDir: string;
}

async function setup(t: Test): Promise<HookEnv> {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('sriov-pool', SEED_000_POOL);
  const r = await vfpoolCli(['net-start', 'sriov-pool'], { env: w.env });
  t.equal(r.exitCode, 0, `net-start: ${r.stderr}`);
  const runDir = join(w.dir, 'libvirt-run');
  mkdirSync(runDir, { recursive: true });
  return { ...w, runDir, hookEnv: { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: runDir } };
}

const hook = (w: HookEnv, args: string[], stdin: string) => spawnEntry('hooks/qemu', args, { env: w.hookEnv, stdin });

async function status(w: HookEnv) {
  const r = await vfpoolCli(['status', '--json'], { env: w.env });
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as { pfs: Array<{ vfs: Array<{ address: string; mac: string; vlan: number; driver: string; owner: null | { domain: string; pool: string; via: string; pid?: number | null } }> }> };
}

function simState(w: HookEnv): SimState {
  return JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
}

t.test('a guest lifecycle through the hook: prepare, start, started, stopped, release twice', async (t) => {
  const w = await setup(t);
  const macBefore = (await status(w)).pfs[0]!.vfs[0]!.mac;

  const prep = await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
  t.same([prep.exitCode, prep.stdout, prep.stderr], [0, '', ''], 'prepare: exit 0, nothing printed');
  let vf0 = (await status(w)).pfs[0]!.vfs[0]!;
  t.match(vf0, { mac: '52:54:00:11:22:33', vlan: 100, driver: 'vfio-pci', owner: { domain: 'vm1', pool: 'sriov-pool', via: 'vfpool' } });
  t.ok(existsSync(join(w.settings.stateDir, 'index/domain.vm1')), 'the shim marker for the domain exists');

  const start = await hook(w, ['vm1', 'start', 'begin', '-'], domainXml('start', { name: 'vm1', vfpool: META }));
  t.same([start.exitCode, start.stdout], [0, ''], `start: ${start.stderr}`);
  t.same(simState(w).pfs[0]!.vfs[0]!.vfioOwner, { uid: 64055, gid: 64055 }, '/dev/vfio/GROUP handed to libvirt-qemu');

  writeFileSync(join(w.runDir, 'vm1.pid'), `${process.pid}\n`);
  const started = await hook(w, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([started.exitCode, started.stdout], [0, ''], started.stderr);
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner!.pid, process.pid, 'QEMU pid recorded from libvirt\'s pid file');

  const stopped = await hook(w, ['vm1', 'stopped', 'end', '-'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.equal(stopped.exitCode, 0);
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner?.domain, 'vm1', 'stopped end changes nothing');

  for (const n of [1, 2]) {
    const rel = await hook(w, ['vm1', 'release', 'end', 'destroyed'], domainXml('release', { name: 'vm1', vfpool: META }));
    t.same([rel.exitCode, rel.stdout, rel.stderr], [0, '', ''], `release #${n}: exit 0`);
    vf0 = (await status(w)).pfs[0]!.vfs[0]!;
    t.same([vf0.owner, vf0.mac, vf0.vlan], [null, macBefore, 0], `release #${n}: VF free, original MAC and VLAN back`);
  }
  t.same(simState(w).pfs[0]!.vfs[0]!.vfioOwner, { uid: 0, gid: 0 }, '/dev/vfio/GROUP back to root');
  t.notOk(existsSync(join(w.settings.stateDir, 'index/domain.vm1')), 'the marker is gone');
});

t.test('a guest with no vfpool request: every operation exits 0 and creates no state', async (t) => {
  const w = await setup(t);
  const before = readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8');
  for (const [op, sub, extra] of [['prepare', 'begin', '-'], ['start', 'begin', '-'], ['started', 'begin', '-'], ['stopped', 'end', '-'], ['release', 'end', 'destroyed'], ['reconnect', 'begin', '-']]) {
    const r = await hook(w, ['seqtest', op!, sub!, extra!], PLAIN_DOMAIN);
    t.same([r.exitCode, r.stdout, r.stderr], [0, '', ''], `${op} ${sub}`);
  }
  // Straight into the Node entry too (the shim would not even start Node for it).
  const direct = await spawnEntry('dist/src/entry/qemu-hook.js', ['seqtest', 'prepare', 'begin', '-'], { env: w.hookEnv, stdin: PLAIN_DOMAIN });
  t.same([direct.exitCode, direct.stdout, direct.stderr], [0, '', '']);
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), before, 'state untouched');
  t.notOk(existsSync(join(w.settings.stateDir, 'index/domain.seqtest')));
});

t.test('no state directory at all: a plain guest does not create one', async (t) => {
  const w = makeSimEnv(t);
  const env = { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: join(w.dir, 'x') };
  const r = await spawnEntry('dist/src/entry/qemu-hook.js', ['seqtest', 'prepare', 'begin', '-'], { env, stdin: PLAIN_DOMAIN });
  t.same([r.exitCode, r.stderr], [0, '']);
  t.notOk(existsSync(w.settings.stateDir), 'no state directory, no lock');
});

t.test('prepare failure: exit 1, one line naming domain, pool, VF and cause; nothing changed; release failed is fine', async (t) => {
  const w = await setup(t);
  const s = simState(w);
  s.pfs[0]!.up = false;
  writeFileSync(w.hostFile, JSON.stringify(s));
  const before = await status(w);
  const r = await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
  t.equal(r.exitCode, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^vfpool: domain 'vm1', pool 'sriov-pool', VF 0000:3b:02\.0 \(eth1 VF 0\): PF eth1 is down.*: bring it up first: ip link set eth1 up\n$/);
  t.same(await status(w), before, 'VFs and pool unchanged');
  const rel = await hook(w, ['vm1', 'release', 'end', 'failed'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.same([rel.exitCode, rel.stderr], [0, ''], 'release end failed: nothing to do');
});

t.test('bad input is exit 2 naming the domain and field; an exhausted pool is exit 3', async (t) => {
  const w = await setup(t);
  const bad = await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='sriov-pool' mac='01:00:5e:00:00:01'/>` }));
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /^vfpool: domain 'vm1': vfpool:hostdev #1: mac '01:00:5e:00:00:01' is a multicast MAC/);
  const four = [1, 2, 3, 4].map((i) => `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:0${i}'/>`).join('');
  t.equal((await hook(w, ['big', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'big', vfpool: four }))).exitCode, 0);
  const ex = await hook(w, ['vm2', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm2', vfpool: META }));
  t.equal(ex.exitCode, 3);
  t.match(ex.stderr, /^vfpool: domain 'vm2': pool 'sriov-pool' is exhausted, all 4 VFs are held \(VF 0000:3b:02\.0: domain 'big'/);
});

t.test('reconnect keeps the VFs and learns the pid; it never fails; migrate and restore print nothing', async (t) => {
  const w = await setup(t);
  t.equal((await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  writeFileSync(join(w.runDir, 'vm1.pid'), `${process.pid}\n`);
  const rc = await hook(w, ['vm1', 'reconnect', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([rc.exitCode, rc.stdout, rc.stderr], [0, '', '']);
  t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: process.pid });
  const broken = await hook(w, ['vm1', 'reconnect', 'begin', '-'], '<domain><name>vm1</name>');
  t.equal(broken.exitCode, 0, 'a reconnect that cannot parse its input still exits 0 (else libvirt kills the guest)');
  const attach = await hook(w, ['vm1', 'attach', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.equal(attach.exitCode, 0);
  for (const op of ['migrate', 'restore']) {
    const r = await hook(w, ['vm1', op, 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
    t.same([r.exitCode, r.stdout], [0, ''], `${op} begin: exit 0, empty stdout (XML unchanged)`);
  }
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner?.domain, 'vm1', 'still held');
});

t.test('started/reconnect/attach check the argv domain against stdin too, and still exit 0 when they differ', async (t) => {
  const w = await setup(t);
  t.equal((await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  writeFileSync(join(w.runDir, 'vm1.pid'), `${process.pid}\n`);
  writeFileSync(join(w.runDir, 'vm2.pid'), `${process.pid}\n`);
  for (const op of ['started', 'reconnect', 'attach']) {
    const r = await hook(w, ['vm2', op, 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
    t.same([r.exitCode, r.stdout], [0, ''], `${op}: exit 0, empty stdout`);
    const log = readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8');
    t.match(log, new RegExp(`qemu-hook vm2 ${op} begin.*${op}: domain 'vm2' \\(${op} begin\\): argv names domain 'vm2' but stdin describes 'vm1' \\(ignored`), `${op}: the mismatch is logged`);
    t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: null }, `${op}: vm1's record is left alone`);
  }
  const ok = await hook(w, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([ok.exitCode, ok.stdout, ok.stderr], [0, '', '']);
  t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: process.pid }, 'the matching call records the pid');
});

t.test('network hook: port-created records libvirt\'s VF, vetoes one vfpool holds for another domain; port-deleted drops it', async (t) => {
  const w = await setup(t);
  const net = (op: string, stdin: string) => spawnEntry('hooks/network', ['sriov-pool', op, 'begin', '-'], { env: w.hookEnv, stdin });
  const forward = `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`;
  const plug = (fn: number) => `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x${fn}'/></plug>`;
  const port = (domain: string, fn: number, uuid: string) => portHookData({ network: 'sriov-pool', forward, portUuid: uuid, domain, mac: '52:54:00:12:34:56', plug: plug(fn) });

  const created = await net('port-created', port('lvguest', 1, '6ae23074-a30a-4c60-afde-fd10f4b211c2'));
  t.same([created.exitCode, created.stdout, created.stderr], [0, '', '']);
  t.match((await status(w)).pfs[0]!.vfs[1]!.owner, { domain: 'lvguest', via: 'libvirt', pool: 'sriov-pool' });
  t.ok(existsSync(join(w.settings.stateDir, 'index/domain.lvguest')));

  // vfpool gives VF 0 to vm1; libvirt then hands the same VF to another guest: refused.
  t.equal((await hook(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  const veto = await net('port-created', port('other', 0, '11111111-2222-3333-4444-555555555555'));
  t.equal(veto.exitCode, 3);
  t.match(veto.stderr, /^vfpool: libvirt network 'sriov-pool' hands VF 0000:3b:02\.0 to domain 'other', but vfpool holds it for domain 'vm1' \(pool 'sriov-pool'\)/);

  // vfpool's first fit skips the VF libvirt handed out.
  const vm2 = await hook(w, ['vm2', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm2', vfpool: META.replace('11:22:33', '11:22:44') }));
  t.equal(vm2.exitCode, 0, vm2.stderr);
  t.equal((await status(w)).pfs[0]!.vfs[2]!.owner?.domain, 'vm2', 'VF 1 (libvirt\'s) was skipped');

  for (const n of [1, 2]) {
    const del = await net('port-deleted', port('lvguest', 1, '6ae23074-a30a-4c60-afde-fd10f4b211c2'));
    t.same([del.exitCode, del.stderr], [0, ''], `port-deleted #${n}`);
  }
  t.equal((await status(w)).pfs[0]!.vfs[1]!.owner, null);
});

t.test('network hook: a passthrough network\'s direct plug on a VF netdev is recorded by PCI address', async (t) => {
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
  const r = await spawnEntry('hooks/network', ['mvtap-net', 'port-created', 'begin', '-'], { env: w.env, stdin });
  t.same([r.exitCode, r.stderr], [0, '']);
  const port = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')).ports[0];
  t.match(port, { network: 'mvtap-net', domain: 'pttest', netdev: 'eth1v2', vfAddr: '0000:3b:02.2', plug: 'direct', mac: '52:54:00:12:34:56' });
  // vfpool's own passthrough allocation now skips that VF.
  const p = await spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], {
    env: w.env,
    stdin: domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev address='0000:3b:02.2' mac='52:54:00:00:00:01'/>` }),
  });
  t.equal(p.exitCode, 3);
  t.match(p.stderr, /VF 0000:3b:02\.2 \(eth1v2\) is in use by domain 'pttest' through libvirt network 'mvtap-net'/);
});

t.test('network hook: a libvirt hostdev network that is not a vfpool pool still has its VF ports recorded', async (t) => {
  const w = await setup(t);
  const forward = `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`;
  const hostdevPlug = `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></plug>`;
  const net = (op: string, plug: string, network = 'libvirt-only') =>
    spawnEntry('hooks/network', [network, op, 'begin', '-'], {
      env: w.hookEnv,
      stdin: portHookData({ network, forward, portUuid: '0b5a2f9e-9a55-4d2b-8a47-3f0e2d1c6b7a', domain: 'lvguest', mac: '52:54:00:12:34:57', plug }),
    });
  const created = await net('port-created', hostdevPlug);
  t.same([created.exitCode, created.stderr], [0, '']);
  t.match((await status(w)).pfs[0]!.vfs[3]!.owner, { domain: 'lvguest', via: 'libvirt', pool: 'libvirt-only' }, 'in-use guard sees it');
  t.equal((await net('port-deleted', hostdevPlug)).exitCode, 0);
  t.equal((await status(w)).pfs[0]!.vfs[3]!.owner, null);
  const stateBefore = existsSync(join(w.settings.stateDir, 'state.json')) ? readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8') : '';
  const bridge = await net('port-created', `<plug type='network' bridge='virbr0'/>`, 'default');
  t.same([bridge.exitCode, bridge.stdout, bridge.stderr], [0, '', ''], 'a bridge port on a network that is not a pool costs nothing');
  const stateAfter = existsSync(join(w.settings.stateDir, 'state.json')) ? readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8') : '';
  t.equal(stateAfter, stateBefore, 'and changes no state');
});

t.test('network hook: a macvtap port on a plain NIC (no VF) is not recorded and writes no state', async (t) => {
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
