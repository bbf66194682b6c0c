import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv } from '../helpers/env.js';
import { spawnSleeper } from '../helpers/processes.js';
import { REPO, spawnEntry } from '../helpers/spawn.js';

const sample = (name: string) => readFileSync(join(REPO, 'test/libvirt/samples', name), 'utf8');
const SEQNET_START = sample('stdin-network-seqnet-start-begin.xml'); // libvirt 11.3, a plain bridge network
const hook = (w: { env: Record<string, string> }, args: string[], stdin: string) => spawnEntry('hooks/network', args, { env: w.env, stdin });

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
  const started = await hook(w, ['vfp-net', 'started', 'begin', '-'], sample('stdin-network-vfp-net-started-begin.xml'));
  t.equal(started.exitCode, 0, 'started begin: nothing to do');
  const stopped = await hook(w, ['vfp-net', 'stopped', 'end', '-'], sample('stdin-network-vfp-net-stopped-end.xml'));
  t.same([stopped.exitCode, stopped.stderr], [0, ''], 'stopped end');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  t.same(readdirSync(join(w.settings.stateDir, 'index')), [], 'marker gone');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /Step 1: eth1: write 4 to sriov_numvfs/);
});

t.test('more VFs than the PF has: exit 2, vfpool\'s sentence on stderr for virsh, nothing changed', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const r = await hook(w, ['vfp-big', 'start', 'begin', '-'], sample('stdin-network-vfp-big-start-begin.xml'));
  t.equal(r.exitCode, 2);
  t.equal(r.stderr, "vfpool: pool 'vfp-big': <vf num='99'> on PF eth1 is more than its sriov_totalvfs 8: lower num to at most 8\n");
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  const after = await hook(w, ['vfp-big', 'stopped', 'end', '-'], sample('stdin-network-vfp-big-stopped-end.xml'));
  t.same([after.exitCode, after.stderr], [0, ''], 'libvirt\'s stopped end after the refused start is harmless');
});

t.test('stopped end with a VF in use: exit 0, the VFs stay, stderr says why', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  await hook(w, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml'));
  const vf = (await w.sim.listVfs('eth1' as NetdevName))[0]!;
  const qemu = spawnSleeper();
  t.teardown(qemu.kill);
  await w.sim.holdVfioGroup(vf.address, qemu.pid);
  const r = await hook(w, ['vfp-net', 'stopped', 'end', '-'], sample('stdin-network-vfp-net-stopped-end.xml'));
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
    const r = await hook(w, args, stdin);
    t.equal(r.exitCode, 2, `${name}: exit 2`);
    t.match(r.stderr, msg, name);
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
  }
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'nothing changed');
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json')), 'no state written');
});

t.test('a missing PF is exit 1 naming the pool and the PF', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const r = await hook(w, ['vfp-net', 'start', 'begin', '-'], sample('stdin-network-vfp-net-start-begin.xml').replace('dev="eth1"', 'dev="eth7"'));
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
