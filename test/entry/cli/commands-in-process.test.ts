import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import type { SimState } from '../../../src/host/sim-kernel.js';
import { join } from 'node:path';
import type { NetdevName } from '../../../src/types.js';
import { makeSimEnv, SEED_000_POOL } from '../../helpers/env.js';
import { runCliInProcess } from '../../helpers/cli-in-process.js';

/**
 * Each command's branches run in-process through buildProgram (the spawned tests in
 * cli.test.ts and cli-guest.test.ts cover the bundle end to end): output shapes, exit codes
 * and the one-line errors.
 */
t.test('pool commands: dry runs, tables, warnings and the unknown-pool errors', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, address: '0000:3b:00.0' }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  const file = join(w.dir, 'pool.xml');
  writeFileSync(file, SEED_000_POOL);

  t.same(await cli('net-define', '--dry-run', file), {
    exitCode: 0,
    stdout: `pool 'sriov-pool' is valid; would write ${join(w.settings.configDir, 'networks', 'sriov-pool.xml')} (--dry-run, nothing written)\n`,
    stderr: '',
  });
  t.same(JSON.parse((await cli('net-list', '--json')).stdout), [], 'the dry run wrote nothing');
  t.equal((await cli('net-define', file)).stdout, `Pool sriov-pool defined from ${file}\n`);
  t.same(await cli('net-dumpxml', 'sriov-pool'), { exitCode: 0, stdout: `${SEED_000_POOL}\n`, stderr: '' }, 'the definition as stored');

  const start = await cli('net-start', '--dry-run', 'sriov-pool');
  t.equal(start.exitCode, 0, start.stderr);
  t.match(start.stdout, /^plan for net-start sriov-pool \(--dry-run, nothing changed\):\n  1\. eth1: write 4 to sriov_numvfs \(now 0\)/);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  t.same(await cli('net-start', 'sriov-pool'), { exitCode: 0, stdout: 'Pool sriov-pool started\n', stderr: '' });

  // A second definition that does not parse is left out of the list, with a warning naming it.
  writeFileSync(join(w.settings.configDir, 'networks', 'broken.xml'), '<network><name>broken</name></network>');
  const list = await cli('net-list');
  t.equal(list.exitCode, 0);
  t.match(list.stdout, /Name\s+.*Mode\s+.*State[\s\S]*sriov-pool\s.*hostdev\s.*active\s.*yes\s.*4\s.*0/);
  t.notMatch(list.stdout, /broken/);
  t.match(list.stderr, /^vfpool: warning: pool 'broken' is not listed: .*\(fix the file, or `vfpool net-undefine broken`\)\n$/);

  const table = await cli('status');
  t.match(table.stdout, /^eth1 0000:3b:00\.0 driver igb up: 4 of 8 VFs\n/);
  t.match(table.stdout, /0000:3b:02\.0\s.*vfio-pci\s.*free/);
  const prom = await cli('status', '--format', 'prometheus');
  t.match(prom.stdout, /^# HELP /m);
  t.match(prom.stdout, /pf="eth1"/);
  t.same(JSON.parse((await cli('status', '--format', 'json')).stdout).pfs[0].numVfs, 4);
  // Two outputs asked for: it printed the metrics and ignored --json.
  t.same(await cli('status', '--format', 'prometheus', '--json'), { exitCode: 2, stdout: '', stderr: 'vfpool: --json and --format prometheus ask for two different outputs: give one of them (--json is --format json)\n' });
  t.match((await cli('net-dumpxml', 'sriov-pool')).stdout, /<vf num='4'\/>/, 'the XML it was started with');
  // --json on every read command (DESIGN.md), this one included.
  t.same(JSON.parse((await cli('net-dumpxml', 'sriov-pool', '--json')).stdout), { name: 'sriov-pool', active: true, xml: `${SEED_000_POOL}\n` }, 'net-dumpxml --json');

  // A dry run refuses what the real command refuses: an active pool is not undefined.
  for (const argv of [['net-undefine', '--dry-run', 'sriov-pool'], ['net-undefine', 'sriov-pool']]) {
    t.same(await cli(...argv), {
      exitCode: 3,
      stdout: '',
      stderr: "vfpool: pool 'sriov-pool' is active: stop it first with `vfpool net-destroy sriov-pool`\n",
    }, argv.join(' '));
  }
  const destroy = await cli('net-destroy', '--dry-run', 'sriov-pool');
  t.match(destroy.stdout, /^plan for net-destroy sriov-pool \(--dry-run, nothing changed\):\n  1\. /);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4, 'the dry run removed nothing');
  t.same(await cli('net-destroy', 'sriov-pool'), { exitCode: 0, stdout: 'Pool sriov-pool destroyed\n', stderr: '' });
  t.same(await cli('net-undefine', '--dry-run', 'sriov-pool'), {
    exitCode: 0,
    stdout: `would remove ${join(w.settings.configDir, 'networks')}/sriov-pool.xml (--dry-run)\n`,
    stderr: '',
  });
  t.same(await cli('net-undefine', 'sriov-pool'), { exitCode: 0, stdout: 'Pool sriov-pool has been undefined\n', stderr: '' });

  for (const argv of [['net-undefine', '--dry-run', 'nope'], ['net-dumpxml', 'nope'], ['net-start', 'nope'], ['net-destroy', 'nope'], ['net-destroy', '--dry-run', 'nope']]) {
    const r = await cli(...argv);
    t.same([r.exitCode, r.stdout], [2, ''], argv.join(' '));
    t.match(r.stderr, /^vfpool: unknown pool 'nope': define it with `vfpool net-define FILE`/, argv.join(' '));
  }
});

t.test('status on a host without SR-IOV PFs says so', async (t) => {
  const w = makeSimEnv(t, { pfs: [] });
  const r = await runCliInProcess(['status'], w.env);
  t.same(r, { exitCode: 0, stdout: `no SR-IOV physical functions on host '${w.settings.host}'\n`, stderr: '' });
});

t.test('net-destroy warns about a PF that vanished, and still stops the pool', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }, { name: 'eth2', totalVfs: 8 }] });
  w.definePool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf><pf dev='eth2'><vf num='2'/></pf></forward></network>`);
  t.equal((await runCliInProcess(['net-start', 'p'], w.env)).exitCode, 0);
  const state = JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
  state.pfs = state.pfs.filter((p) => p.name !== 'eth2');
  writeFileSync(w.hostFile, JSON.stringify(state));
  t.same(await runCliInProcess(['net-destroy', 'p'], w.env), {
    exitCode: 0,
    stdout: 'Pool p destroyed\n',
    stderr: "vfpool: warning: pool 'p': PF eth2 no longer exists: nothing to remove on it\n",
  });
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
});
