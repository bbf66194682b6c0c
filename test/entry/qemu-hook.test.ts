import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SimState } from '../../src/host/sim-kernel.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml, PLAIN_DOMAIN } from '../helpers/libvirt-domains.js';
import { hookStatus as status, META, qemuHook as hook, qemuHookInProcess, setupHookWorld as setup, type HookEnv } from '../helpers/hook-world.js';
import { spawnSleeper } from '../helpers/processes.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

/** The Node half in-process, for calls the shim hands to Node anyway (a domain with vfpool metadata or a marker). */
const node = (w: HookEnv, args: string[], stdin: string) => qemuHookInProcess(w.hookEnv, args, stdin);

/**
 * The qemu hook as libvirt runs it: hooks/qemu (the shell shim) spawned with libvirt's argv,
 * its almost empty environment and the domain XML libvirt 11.3 writes at each stage on stdin.
 */
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

  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1');
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
  // Straight into the Node half too (the shim would not even start Node for it); in-process:
  // the fuzz suite runs this entry point as a process.
  const direct = await qemuHookInProcess(w.hookEnv, ['seqtest', 'prepare', 'begin', '-'], PLAIN_DOMAIN);
  t.same([direct.exitCode, direct.stdout, direct.stderr], [0, '', '']);
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), before, 'state untouched');
  t.notOk(existsSync(join(w.settings.stateDir, 'index/domain.seqtest')));
});

t.test('no state directory at all: a plain guest does not create one', async (t) => {
  const w = makeSimEnv(t);
  const env = { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: join(w.dir, 'x') };
  const r = await qemuHookInProcess(env, ['seqtest', 'prepare', 'begin', '-'], PLAIN_DOMAIN);
  t.same([r.exitCode, r.stderr], [0, '']);
  t.notOk(existsSync(w.settings.stateDir), 'no state directory, no lock');
});

t.test('prepare failure: exit 1, one line naming domain, pool, VF and cause; nothing changed; release failed is fine', async (t) => {
  const w = await setup(t);
  const s = simState(w);
  s.pfs[0]!.up = false;
  writeFileSync(w.hostFile, JSON.stringify(s));
  const before = await status(w);
  const r = await node(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
  t.equal(r.exitCode, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^vfpool: domain 'vm1', pool 'sriov-pool', VF 0000:3b:02\.0 \(eth1 VF 0\): PF eth1 is down.*: bring it up first: ip link set eth1 up\n$/);
  t.same(await status(w), before, 'VFs and pool unchanged');
  const rel = await node(w, ['vm1', 'release', 'end', 'failed'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.same([rel.exitCode, rel.stderr], [0, ''], 'release end failed: nothing to do');
});

t.test('bad input is exit 2 naming the domain and field; an exhausted pool is exit 3', async (t) => {
  const w = await setup(t);
  const bad = await node(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='sriov-pool' mac='01:00:5e:00:00:01'/>` }));
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /^vfpool: domain 'vm1': vfpool:hostdev #1: mac '01:00:5e:00:00:01' is a multicast MAC/);
  const four = [1, 2, 3, 4].map((i) => `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:0${i}'/>`).join('');
  t.equal((await node(w, ['big', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'big', vfpool: four }))).exitCode, 0);
  const ex = await node(w, ['vm2', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm2', vfpool: META }));
  t.equal(ex.exitCode, 3);
  t.match(ex.stderr, /^vfpool: domain 'vm2': pool 'sriov-pool' is exhausted, all 4 VFs are held \(VF 0000:3b:02\.0: domain 'big'/);
});

t.test('a guest on a pool that is defined but not started: exit 3 with the fix, nothing changed (libvirt: "network is not active")', async (t) => {
  const w = await setup(t);
  w.definePool('hy2', `<network><name>hy2</name><forward mode='pci-passthrough-hybrid'><interface dev='eth1'/></forward></network>`);
  const before = readFileSync(w.hostFile, 'utf8') + readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8');
  const nic = `<interface type='network'><mac address='52:54:00:00:00:21'/><source network='hy2'/><model type='virtio'/></interface>`;
  const r = await hook(w, ['in1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'in1', devices: nic }));
  t.same([r.exitCode, r.stdout, r.stderr], [3, '', "vfpool: domain 'in1': <interface> #1: pool 'hy2' is not active: start it with `vfpool net-start hy2`\n"]);
  t.equal(readFileSync(w.hostFile, 'utf8') + readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), before, 'no VF touched, nothing recorded');
});

t.test('reconnect keeps the VFs and learns the pid; it never fails; migrate and restore print nothing', async (t) => {
  const w = await setup(t);
  t.equal((await node(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1');
  const rc = await node(w, ['vm1', 'reconnect', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([rc.exitCode, rc.stdout, rc.stderr], [0, '', '']);
  t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: process.pid });
  const broken = await node(w, ['vm1', 'reconnect', 'begin', '-'], '<domain><name>vm1</name>');
  t.equal(broken.exitCode, 0, 'a reconnect that cannot parse its input still exits 0 (else libvirt kills the guest)');
  const attach = await node(w, ['vm1', 'attach', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.equal(attach.exitCode, 0);
  for (const op of ['migrate', 'restore']) {
    const r = await node(w, ['vm1', op, 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
    t.same([r.exitCode, r.stdout], [0, ''], `${op} begin: exit 0, empty stdout (XML unchanged)`);
  }
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner?.domain, 'vm1', 'still held');
});

t.test('started/reconnect/attach check the argv domain against stdin too, and still exit 0 when they differ', async (t) => {
  const w = await setup(t);
  t.equal((await node(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1');
  const vm2 = spawnSleeper(); // a pid is one domain's QEMU
  t.teardown(vm2.kill);
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm2', vm2.pid);
  for (const op of ['started', 'reconnect', 'attach']) {
    const r = await node(w, ['vm2', op, 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
    t.same([r.exitCode, r.stdout], [0, ''], `${op}: exit 0, empty stdout`);
    const log = readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8');
    t.match(log, new RegExp(`qemu-hook vm2 ${op} begin.*${op}: domain 'vm2' \\(${op} begin\\): argv names domain 'vm2' but stdin describes 'vm1' \\(ignored`), `${op}: the mismatch is logged`);
    t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: null }, `${op}: vm1's record is left alone`);
  }
  const ok = await node(w, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([ok.exitCode, ok.stdout, ok.stderr], [0, '', '']);
  t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: process.pid }, 'the matching call records the pid');
});

t.test('started with a hotplug plan and no QEMU serving vfpool\'s QMP socket: exit 1, one line (libvirt then stops the guest and calls release)', async (t) => {
  const w = await setup(t);
  delete w.hookEnv.VFPOOL_SIM_VF_DEVICE;
  t.equal((await node(w, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }))).exitCode, 0);
  const plan = JSON.parse(readFileSync(join(w.settings.stateDir, 'qemu/vm1/plan.json'), 'utf8')) as { delivery: string; vfs: Array<{ host: string | null }> };
  t.equal(plan.delivery, 'hotplug');
  t.ok(plan.vfs[0]!.host, 'vfio-pci host=BDF, as on a real host');
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1');
  // A reconnect (libvirtd restarted) tries to plug what QEMU lacks, and never fails.
  const rc = await node(w, ['vm1', 'reconnect', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([rc.exitCode, rc.stdout, rc.stderr], [0, '', ''], 'reconnect: exit 0');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /warn qemu-hook vm1 reconnect begin: reconnect: domain 'vm1': its VFs could not be hotplugged .*\(ignored: failing here would make libvirt kill the guest; run `vfpool plug vm1`\)/);
  const r = await node(w, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /^vfpool: domain 'vm1': its VFs could not be hotplugged at 'started': [^\n]+\n$/);
  t.equal(r.stdout, '');
  const rel = await node(w, ['vm1', 'release', 'end', '-'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.equal(rel.exitCode, 0);
  t.equal(existsSync(join(w.settings.stateDir, 'qemu/vm1')), false, 'release removed the plan');
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner, null, 'and freed the VF');
});
