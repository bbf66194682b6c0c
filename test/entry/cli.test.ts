import t from 'tap';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { execa } from 'execa';
import { domainXml } from '../helpers/libvirt-domains.js';
import { REPO, vfpoolCli, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';
import { cli as inProcess } from '../helpers/cli-in-process.js';

t.test('define, start, list, status, destroy, undefine', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 16, address: '0000:3b:00.0' }] });
  const file = join(w.dir, 'pool.xml');
  writeFileSync(file, SEED_000_POOL);
  // The bundle, as a person runs it, for a define, a start, a refusal (exit 3 and its line) and
  // a stop; the other commands of the lifecycle run in-process (the same program and exit codes).
  const cli = (...args: string[]) => inProcess(args, { env: w.env });
  const spawned = (...args: string[]) => vfpoolCli(args, { env: w.env });

  t.same(await spawned('net-define', file), { exitCode: 0, stdout: `Pool sriov-pool defined from ${file}\n`, stderr: '' });
  const dry = await cli('net-start', 'sriov-pool', '--dry-run');
  t.equal(dry.exitCode, 0);
  t.match(dry.stdout, /1\. eth1: write 4 to sriov_numvfs \(now 0\)/);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, '--dry-run changed nothing');
  t.equal((await spawned('net-start', 'sriov-pool')).exitCode, 0);
  t.equal(statSync(w.settings.stateDir).mode & 0o777, 0o700, 'state is root\'s: a 0700 directory');
  t.equal(statSync(join(w.settings.stateDir, 'state.json')).mode & 0o777, 0o600, '0600 files');
  t.equal(statSync(join(w.settings.stateDir, 'vfpool.log')).mode & 0o777, 0o600);

  const list = await cli('net-list', '--json');
  t.same(JSON.parse(list.stdout), [{ name: 'sriov-pool', mode: 'hostdev', active: true, state: 'active', persistent: true, vfs: 4, inUse: 0 }]);

  const status = JSON.parse((await cli('status', '--json')).stdout);
  t.equal(status.pfs.length, 1);
  t.match(status.pfs[0], { name: 'eth1', address: '0000:3b:00.0', totalVfs: 16, numVfs: 4 });
  t.match(status.pfs[0].vfs[0], { index: 0, address: '0000:3b:02.0', netdev: null, driver: 'vfio-pci', vlan: 0, owner: null });
  t.match(status.pfs[0].vfs[0].mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  t.match((await cli('status')).stdout, /eth1 0000:3b:00\.0 driver igb up: 4 of 16 VFs[\s\S]*0000:3b:02\.3 .* vfio-pci .* free/);
  t.match((await cli('net-dumpxml', 'sriov-pool')).stdout, /<vf num='4'\/>/);

  const undefActive = await spawned('net-undefine', 'sriov-pool');
  t.same([undefActive.exitCode, undefActive.stderr], [3, "vfpool: pool 'sriov-pool' is active: stop it first with `vfpool net-destroy sriov-pool`\n"]);
  t.equal((await cli('net-start', 'sriov-pool')).exitCode, 3, 'already active');
  t.equal((await spawned('net-destroy', 'sriov-pool')).exitCode, 0);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  // The hint of a stop that has nothing to stop is not to start the pool.
  const destroyInactive = await cli('net-destroy', 'sriov-pool');
  t.same([destroyInactive.exitCode, destroyInactive.stderr], [3, "vfpool: pool 'sriov-pool' is not active: it is stopped already (`vfpool net-undefine sriov-pool` removes its definition)\n"], 'not active');
  t.equal((await cli('net-undefine', 'sriov-pool')).exitCode, 0);
  t.same(JSON.parse((await cli('net-list', '--json')).stdout), []);
});

t.test('bad input: exit 2, one line, nothing written', async (t) => {
  const w = makeSimEnv(t);
  const bad = join(w.dir, 'bad.xml');
  writeFileSync(bad, `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='x'/></pf></forward></network>`);
  const cases: Array<[string[], RegExp]> = [
    [['net-define', bad], /^vfpool: .*bad\.xml: vf num='x' is not a number from 1 to 4096\n$/],
    [['net-define', join(w.dir, 'missing.xml')], /^vfpool: cannot read .*missing\.xml: ENOENT/],
    [['net-start', 'nope'], /^vfpool: unknown pool 'nope': define it with `vfpool net-define FILE`/],
    [['net-start', '../x'], /^vfpool: pool name '..\/x' is not a name vfpool accepts/],
    [['frobnicate'], /^vfpool: unknown command 'frobnicate': `vfpool --help` lists the commands\n$/],
    [[], /^vfpool: name a command: `vfpool --help` lists them\n$/],
  ];
  for (const [args, msg] of cases) {
    const r = await inProcess(args, { env: w.env });
    t.equal(r.exitCode, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, msg, args.join(' '));
  }
  t.notOk(existsSync(join(w.settings.configDir, 'networks/p.xml')), 'invalid definition not written');
  const conf = join(w.dir, 'conf');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(conf);
  writeFileSync(join(conf, 'vfpool.conf'), 'VFPOOL_HOST=sim:/x\nVFPOOL_BOGUS=1\n');
  const r = await inProcess(['status'], { env: { VFPOOL_CONFIG_DIR: conf } });
  t.equal(r.exitCode, 2);
  // One line naming file, line and key, then every key vfpool knows (the list grows with the settings table).
  t.match(r.stderr, new RegExp(`^vfpool: ${join(conf, 'vfpool.conf').replace(/[.]/g, '\\.')}:2: unknown setting 'VFPOOL_BOGUS': known: VFPOOL_CONFIG_DIR, VFPOOL_STATE_DIR, .*VFPOOL_SIM_VF_DEVICE.*\n$`));
  t.equal(r.stderr.split('\n').length, 2, 'one line');
  const badHost = await inProcess(['status'], { env: { ...w.env, VFPOOL_HOST: 'xen' } });
  t.same([badHost.exitCode, badHost.stderr], [2, "vfpool: VFPOOL_HOST 'xen' is not 'linux' or 'sim:FILE': set it in the environment or in vfpool.conf\n"]);
});

// Regression: yargs turned a positional `-` into '' (net-define read the file ''), and
// readFileSync(0) failed with EAGAIN when the writer of a pipe was slower than vfpool: once
// anything touches process.stdin, libuv makes fd 0 non-blocking. Seen in CI as a prepare that
// exited 2 under load; here the writer waits before writing, as `ssh host cat vm1.xml | …` does.
t.test('`-` reads stdin, also from a writer slower than vfpool', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 16, address: '0000:3b:00.0' }] });
  const file = join(w.dir, 'pool.xml');
  writeFileSync(file, SEED_000_POOL);
  const domain = join(w.dir, 'vm1.xml');
  writeFileSync(domain, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:01'/>` }));
  const slowly = async (input: string, ...args: string[]) => {
    // The input's path and the CLI's argv reach sh as "$@", never as script text.
    const [envBin, ...unset] = WITHOUT_TAP_LOADER;
    const r = await execa(envBin, [...unset, '/bin/sh', '-c', 'f=$1; shift; (sleep 0.4; cat "$f") | "$@"', 'sh', input, process.execPath, join(REPO, 'dist/bin/cli.mjs'), ...args], {
      env: { PATH: '/usr/bin:/bin', ...w.env },
      extendEnv: false,
      reject: false,
      stripFinalNewline: false,
    });
    return { exitCode: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
  };
  t.same(await slowly(file, 'net-define', '-'), { exitCode: 0, stdout: 'Pool sriov-pool defined from /dev/stdin\n', stderr: '' }, 'net-define -');
  t.equal((await inProcess(['net-start', 'sriov-pool'], { env: w.env })).exitCode, 0);
  const r = await slowly(domain, 'prepare', '--xml=-');
  t.same([r.exitCode, r.stderr], [0, ''], 'prepare --xml=-');
  t.match((await inProcess(['status', '--json'], { env: w.env })).stdout, /"domain":"vm1"/, 'vm1 holds a VF');
});
