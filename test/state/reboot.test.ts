import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnSleeper } from '../helpers/processes.js';
import { cli } from '../helpers/cli-in-process.js';
import type { SimState } from '../../src/host/sim-kernel.js';

/**
 * A state directory on persistent storage (VFPOOL_STATE_DIR=/var/lib/…, which the README
 * allows) outlives a reboot; the VFs, the pools' VF counts and the guests' QEMUs it records do
 * not. vfpool treats such a file as /run/vfpool would be after the reboot: empty.
 */
const POOL = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
const XML = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:01'/>` });
const kernel = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as SimState;
const json = (s: string) => JSON.parse(s) as unknown;

t.test('the simulated host reboots as the kernel does: a new boot id, no VF until sriov_numvfs is written', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const before = kernel(w.hostFile);
  t.match(before.bootId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  t.equal(before.pfs[0]!.numVfs, 4);
  await w.sim.reboot();
  const after = kernel(w.hostFile);
  t.not(after.bootId, before.bootId, 'a new boot');
  t.same(after.pfs.map((p) => [p.name, p.numVfs, p.vfs.length]), [['eth1', 0, 0]], 'no VF');
  t.equal(w.sim.bootId(), after.bootId);
});

t.test('after a reboot with a persistent state directory: pools inactive, guests\' VFs free, nothing to restore', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  // A process that lives on across the "reboot": its pid is what another process would have
  // after a real one (a pid from the previous boot proves nothing).
  const qemu = spawnSleeper();
  t.teardown(() => qemu.kill());
  const prep = await cli(['prepare', '--xml=-', '--pid', String(qemu.pid)], { env: w.env, stdin: XML });
  t.same([prep.exitCode, prep.stderr], [0, '']);
  const earlier = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as { boot: string };
  t.equal(earlier.boot, w.sim.bootId(), 'the state records the boot it was written in');
  t.same(readdirSync(join(w.settings.stateDir, 'index')).sort(), ['domain.vm1', 'pool.p']);

  await w.sim.reboot();

  const list = await cli(['net-list', '--json'], { env: w.env });
  t.match(json(list.stdout), [{ name: 'p', active: false }], 'the pool is not running: its VFs went with the boot');
  const status = await cli(['status', '--json'], { env: w.env });
  t.equal(status.exitCode, 0);
  t.notMatch(status.stdout, /vm1/, 'no guest holds a VF');
  const rec = await cli(['reconcile'], { env: w.env });
  t.same([rec.exitCode, rec.stderr], [0, ''], 'reconcile restores nothing (no VF survived) and fails on nothing');
  t.same(readdirSync(join(w.settings.stateDir, 'index')), [], 'the earlier boot\'s markers are gone');

  const start = await cli(['net-start', 'p'], { env: w.env });
  t.same([start.exitCode, start.stderr], [0, ''], 'the pool starts again (as libvirt autostarts its network)');
  t.equal(kernel(w.hostFile).pfs[0]!.numVfs, 4);
  const again = await cli(['prepare', '--xml=-', '--pid', String(qemu.pid)], { env: w.env, stdin: XML });
  t.same([again.exitCode, again.stderr], [0, ''], 'the guest gets a VF again');
  const state = JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as { boot: string; allocations: unknown[]; pools: Record<string, unknown> };
  t.equal(state.boot, w.sim.bootId(), 'written in this boot');
  t.equal(state.allocations.length, 1);
  t.same(Object.keys(state.pools), ['p']);
});

t.test('a state file that records no boot (an older vfpool wrote it) is taken as this boot\'s', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const file = join(w.settings.stateDir, 'state.json');
  const s = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete s.boot;
  (await import('node:fs')).writeFileSync(file, JSON.stringify(s));
  t.match(json((await cli(['net-list', '--json'], { env: w.env })).stdout), [{ name: 'p', active: true }]);
});

t.test('vfpool history marks where the host rebooted: the entries after it are of another boot', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  const qemu = spawnSleeper();
  t.teardown(() => qemu.kill());
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  t.equal((await cli(['prepare', '--xml=-', '--pid', String(qemu.pid)], { env: w.env, stdin: XML })).exitCode, 0);
  const first = w.sim.bootId();
  await w.sim.reboot();
  const second = w.sim.bootId();
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  t.equal((await cli(['prepare', '--xml=-', '--pid', String(qemu.pid)], { env: w.env, stdin: XML })).exitCode, 0);

  const entries = (await cli(['history', '--json'], { env: w.env })).stdout.trim().split('\n').map((l) => JSON.parse(l) as { op: string; boot: string });
  t.same(entries.map((e) => [e.op, e.boot]), [
    ['pool-start', first], ['allocate', first], ['configure', first],
    ['pool-start', second], ['allocate', second], ['configure', second],
  ], 'every entry records its boot');
  const text = (await cli(['history'], { env: w.env })).stdout.trim().split('\n');
  t.equal(text.length, 7);
  t.match(text.map((l) => l.replace(/^\d\S* /, '')), [/^pool-start /, /^allocate /, /^configure /, `--- the host rebooted (boot ${second}) ---`, /^pool-start /, /^allocate /, /^configure /]);
  // Filtered, the line still stands between the two boots' entries.
  t.match((await cli(['history', 'vm1'], { env: w.env })).stdout.trim().split('\n').map((l) => l.replace(/^\d\S* /, '')), [/^allocate /, /^configure /, /^--- the host rebooted/, /^allocate /, /^configure /]);
});
