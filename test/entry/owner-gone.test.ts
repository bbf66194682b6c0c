import t from 'tap';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, type SimEnv } from '../helpers/env.js';
import { domainXml, portHookData } from '../helpers/libvirt-domains.js';
import { spawnSleeper } from '../helpers/processes.js';
import { processStartTicks } from '../../src/util/process.js';
import { REPO, spawnEntry, type Spawned } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';
import { networkHookInProcess, qemuHookInProcess } from '../helpers/hook-world.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

/**
 * Records whose owner is gone must not pin VFs, judged where "in use" is decided (a pool's
 * start and stop, the allocator, the port veto), not only in `vfpool reconcile`: libvirt skips
 * hook calls. On the simulated host, with a fake libvirt pid directory (VFPOOL_LIBVIRT_RUN_DIR)
 * standing for libvirt's /run/libvirt/qemu. The lab's scenario after `virsh destroy` runs the
 * hooks as libvirt does, through the shims (whose markers decide that Node runs for a call
 * without vfpool XML); the other cases run the hooks' and the CLI's mains in-process (the same
 * main, env, stdin and exit codes, without a Node start per call).
 */
const sample = (name: string) => readFileSync(join(REPO, 'test/libvirt/samples', name), 'utf8');
const NET_START = sample('stdin-network-vfp-net-start-begin.xml'); // pool vfp-net: 4 VFs on eth1, hostdev
const NET_STOPPED = sample('stdin-network-vfp-net-stopped-end.xml');
const PORT_UUID = '6ae23074-a30a-4c60-afde-fd10f4b211c2';

interface World extends SimEnv {
  hookEnv: Record<string, string>;
  runDir: string;
  procRoot: string;
}

function world(t: Test): World {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const runDir = join(w.dir, 'libvirt-run');
  mkdirSync(runDir, { recursive: true });
  // Where fakeLibvirtQemu writes the command line of a process the test makes a guest's QEMU.
  const procRoot = join(w.dir, 'proc');
  return { ...w, env: { ...w.env, VFPOOL_PROC: procRoot }, runDir, procRoot, hookEnv: { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: runDir, VFPOOL_PROC: procRoot, VFPOOL_SIM_VF_DEVICE: 'e1000e' } };
}

type Run = (env: Record<string, string>, args: string[], stdin: string) => Promise<Spawned>;
interface Hooks {
  network: Run;
  qemu: Run;
}
const SHIMS: Hooks = {
  network: (env, args, stdin) => spawnEntry('hooks/network', args, { env, stdin }),
  qemu: (env, args, stdin) => spawnEntry('hooks/qemu', args, { env, stdin }),
};
const IN_PROCESS: Hooks = { network: networkHookInProcess, qemu: qemuHookInProcess };
const net = (w: World, op: string, stdin: string, hooks: Hooks) => hooks.network(w.hookEnv, ['vfp-net', ...op.split(' '), '-'], stdin);
const qemu = (w: World, domain: string, op: string, stdin: string, hooks: Hooks) => hooks.qemu(w.hookEnv, [domain, ...op.split(' '), '-'], stdin);
const simMacs = (w: World) => (JSON.parse(readFileSync(w.hostFile, 'utf8')) as { pfs: Array<{ vfs: Array<{ mac: string }> }> }).pfs[0]!.vfs.map((v) => v.mac);
const numVfs = async (w: World) => (await w.sim.getPf('eth1' as NetdevName)).numVfs;
const portHook = (domain: string) =>
  portHookData({
    network: 'vfp-net',
    forward: `<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>`,
    portUuid: PORT_UUID,
    domain,
    mac: '52:54:00:12:34:56',
    plug: `<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></plug>`,
  });

/**
 * The lab's finding, step by step: a guest on a libvirt hostdev network; `net-destroy` while it
 * runs (the VFs are kept, rightly); then the guest goes away without `port-deleted` (libvirt
 * sends none for an inactive network); `net-start` and `net-destroy` again must remove the VFs.
 * How the guest goes away: `virsh destroy` (libvirt runs the qemu hook's `release end`), or a
 * libvirtd crash during which QEMU died (no hook at all: only the dead pid tells).
 */
for (const how of ['release end', 'no hook at all (daemon crash)'] as const) {
  t.test(`a port record of a guest that is gone no longer pins its VF: ${how}`, async (t) => {
    const w = world(t);
    const hooks = how === 'release end' ? SHIMS : IN_PROCESS;
    t.equal((await net(w, 'start begin', NET_START, hooks)).exitCode, 0, 'net-start');
    t.equal(await numVfs(w), 4);
    const created = await net(w, 'port-created begin', portHook('lvguest'), hooks);
    t.same([created.exitCode, created.stderr], [0, ''], 'port-created');
    const guest = spawnSleeper();
    t.teardown(guest.kill);
    fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'lvguest', guest.pid);
    const started = await qemu(w, 'lvguest', 'started begin', domainXml('started', { name: 'lvguest' }), hooks);
    t.equal(started.exitCode, 0, 'started: the QEMU pid is learnt');

    const kept = await net(w, 'stopped end', NET_STOPPED, hooks);
    t.equal(kept.exitCode, 0);
    t.match(kept.stderr, /eth1 keeps its 4 VFs: VF 1 \(0000:3b:02\.1.*\) is in use by domain 'lvguest' through libvirt network 'vfp-net'/, 'net-destroy under the running guest keeps the VFs');
    t.equal(await numVfs(w), 4);

    // The guest goes away; libvirt sends no port-deleted (the network is not active).
    await guest.kill();
    rmSync(join(w.runDir, 'lvguest.pid'));
    if (how === 'release end') t.equal((await qemu(w, 'lvguest', 'release end', domainXml('release', { name: 'lvguest' }), hooks)).exitCode, 0, 'release end');

    t.equal((await net(w, 'start begin', NET_START, hooks)).exitCode, 0, 'net-start again');
    const stopped = await net(w, 'stopped end', NET_STOPPED, hooks);
    t.same([stopped.exitCode, stopped.stderr], [0, ''], 'net-destroy again: nothing kept');
    t.equal(await numVfs(w), 0, 'the VFs are removed');
    const state = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as { ports: unknown[]; pools: object };
    t.same([state.ports, Object.keys(state.pools)], [[], []], 'no port record, no pool left');
  });
}

t.test('the allocator frees a VF whose guest died without a release (daemon crash) instead of calling the pool exhausted', async (t) => {
  const w = world(t);
  w.definePool('one', `<network><name>one</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='1'/></pf></forward></network>`);
  t.equal((await cli(['net-start', 'one'], { env: w.env })).exitCode, 0);
  const macBefore = simMacs(w)[0];
  const vfpool = (mac: string) => `<vfpool:hostdev pool='one' mac='${mac}'/>`;
  t.equal((await qemu(w, 'vm1', 'prepare begin', domainXml('prepare', { name: 'vm1', vfpool: vfpool('52:54:00:00:00:01') }), IN_PROCESS)).exitCode, 0);
  const guest = spawnSleeper();
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1', guest.pid);
  t.equal((await qemu(w, 'vm1', 'started begin', domainXml('started', { name: 'vm1', vfpool: vfpool('52:54:00:00:00:01') }), IN_PROCESS)).exitCode, 0);

  // While vm1 runs, vm2 finds the pool exhausted.
  const busy = await qemu(w, 'vm2', 'prepare begin', domainXml('prepare', { name: 'vm2', vfpool: vfpool('52:54:00:00:00:02') }), IN_PROCESS);
  t.equal(busy.exitCode, 3);
  t.match(busy.stderr, /pool 'one' is exhausted/);

  // QEMU dies with libvirtd down: no release end ever comes.
  await guest.kill();
  rmSync(join(w.runDir, 'vm1.pid'));
  const vm2 = await qemu(w, 'vm2', 'prepare begin', domainXml('prepare', { name: 'vm2', vfpool: vfpool('52:54:00:00:00:02') }), IN_PROCESS);
  t.same([vm2.exitCode, vm2.stderr], [0, ''], 'vm2 gets the VF');
  const s = JSON.parse((await cli(['status', '--json'], { env: w.env })).stdout) as { pfs: Array<{ vfs: Array<{ mac: string; owner: { domain: string } | null }> }> };
  t.match(s.pfs[0]!.vfs[0], { mac: '52:54:00:00:00:02', owner: { domain: 'vm2' } });
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /freed 0000:3b:02\.0 of domain 'vm1', whose owner is gone/, 'vm1\'s VF was restored and freed first');
  // vm2's release restores the MAC vm1 found, not vm1's.
  t.equal((await qemu(w, 'vm2', 'release end', domainXml('release', { name: 'vm2' }), IN_PROCESS)).exitCode, 0);
  t.equal(simMacs(w)[0], macBefore, 'the original MAC is back');
});

/**
 * libvirtd killed (or restarted) between a guest's prepare and its QEMU: the daemon after it
 * knows the domain as shut off and runs no release. Seen under libvirt 11.3: the next `virsh
 * start`, within the 120 s grace, was refused ("already holds VF ... libvirt may still be
 * starting it"), and only the `release end failed` after that refusal freed the VF. libvirt runs
 * one start of a domain at a time, so a record of a daemon that is gone is no start in progress.
 * The hook runs through the shim with a parent that exits after it, as the killed daemon.
 */
t.test('a start interrupted by a libvirtd crash before QEMU ran: the restarted daemon\'s next start gets the VF at once', async (t) => {
  const w = world(t);
  w.definePool('one', `<network><name>one</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='1'/></pf></forward></network>`);
  t.equal((await cli(['net-start', 'one'], { env: w.env })).exitCode, 0);
  const macBefore = simMacs(w)[0];
  const xml = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='one' mac='52:54:00:00:00:01'/>` });
  const dying = await spawnEntry('/bin/sh', ['-c', '"$@"', 'libvirtd', join(REPO, 'hooks/qemu'), 'vm1', 'prepare', 'begin', '-'], { env: w.hookEnv, stdin: xml });
  t.same([dying.exitCode, dying.stderr], [0, ''], 'prepare under the daemon that then dies');
  t.equal(simMacs(w)[0], '52:54:00:00:00:01');

  const again = await qemu(w, 'vm1', 'prepare begin', xml, IN_PROCESS);
  t.same([again.exitCode, again.stderr], [0, ''], 'the next start\'s prepare succeeds');
  const owner = (JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as { allocations: Array<{ owner: object }> }).allocations[0]!.owner;
  t.match(owner, { daemon: process.ppid, daemonStart: processStartTicks(process.ppid) }, 'the daemon recorded with its start time');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /Step 0: 1 allocation\(s\) from an earlier run/, 'the interrupted start\'s VF was restored and freed first');
  const s = JSON.parse((await cli(['status', '--json'], { env: w.env })).stdout) as { pfs: Array<{ vfs: Array<{ mac: string; owner: { domain: string } | null }> }> };
  t.match(s.pfs[0]!.vfs[0], { mac: '52:54:00:00:00:01', owner: { domain: 'vm1' } });
  // The daemon that prepared this one runs (the test's parent): a start of its still in progress.
  const twice = await qemu(w, 'vm1', 'prepare begin', xml, IN_PROCESS);
  t.match(twice, { exitCode: 3, stderr: /^vfpool: domain 'vm1' already holds VF 0000:3b:02\.0 \(prepared 0 s ago and libvirt may still be starting it/ });
  t.equal((await qemu(w, 'vm1', 'release end', domainXml('release', { name: 'vm1' }), IN_PROCESS)).exitCode, 0);
  t.equal(simMacs(w)[0], macBefore, 'the original MAC is back');
});
