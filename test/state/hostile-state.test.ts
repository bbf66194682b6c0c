import t from 'tap';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetdevName } from '../../src/types.js';
import { loadSettings } from '../../src/config/settings.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnSleeper } from '../helpers/processes.js';
import { spawnEntry, vfpoolCli } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';
import { networkHookInProcess } from '../helpers/hook-world.js';

/**
 * Defects found on the simulated host (issue 10), each a test that failed before its fix.
 * What races between processes (prepares and reconciles at once) runs as real processes;
 * the rest runs the CLI's and the hooks' mains in-process (cli, networkHookInProcess: the
 * same main, env and exit-code boundary), one call at a time.
 */
const POOL = (name: string, num = 4) => `<network><name>${name}</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='${num}'/></pf></forward></network>`;
const readState = (dir: string) => JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as {
  pools: Record<string, unknown>;
  allocations: Array<{ vfAddr: string; mac: string; owner: { domain: string } }>;
};

t.test('several prepares of the same domain at once: one VF, one MAC; nobody is told of a VF another frees', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL('p', 8));
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const xml = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:01'/>` });
  const results = await Promise.all(Array.from({ length: 6 }, () => spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], { env: w.env, stdin: xml })));
  const ok = results.filter((r) => r.exitCode === 0);
  t.ok(ok.length >= 1, 'at least one prepare succeeded');
  for (const r of results) if (r.exitCode !== 0) t.match(r, { exitCode: 3, stderr: /^vfpool: domain 'vm1' (is being prepared or released by vfpool \(pid \d+\) right now|already holds VF)/ }, 'the others: exit 3, one line');
  const held = readState(w.settings.stateDir).allocations;
  t.equal(held.length, 1, 'the domain holds one VF');
  const simVfs = (JSON.parse(readFileSync(w.hostFile, 'utf8')) as { pfs: Array<{ vfs: Array<{ address: string; mac: string }> }> }).pfs[0]!.vfs;
  const withMac = simVfs.filter((v) => v.mac === '52:54:00:00:00:01');
  t.same(withMac.map((v) => v.address), held.map((a) => a.vfAddr), 'exactly one VF carries the MAC, the recorded one');
  t.notMatch(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /releasing \d+ VF\(s\) \(stale\)/, 'no caller freed another\'s VFs as stale');
});

t.test('pool names that are JavaScript object keys are names like any other', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }, { name: 'eth2', totalVfs: 8 }, { name: 'eth3', totalVfs: 8 }] });
  const names = ['constructor', 'toString', '__proto__'];
  names.forEach((n, i) => w.definePool(n, POOL(n, 2).replace('eth1', `eth${i + 1}`)));
  for (const n of names) {
    const r = await cli(['net-start', n], { env: w.env });
    t.same([r.exitCode, r.stderr], [0, ''], `net-start ${n}`);
  }
  t.same(Object.keys(readState(w.settings.stateDir).pools).sort(), [...names].sort(), 'each recorded as a pool');
  for (const n of names) {
    const r = await cli(['net-destroy', n], { env: w.env });
    t.same([r.exitCode, r.stderr], [0, ''], `net-destroy ${n}`);
  }
  for (const pf of ['eth1', 'eth2', 'eth3']) t.equal((await w.sim.getPf(pf as NetdevName)).numVfs, 0, `${pf}: VFs removed`);
  t.same(Object.keys(readState(w.settings.stateDir).pools), [], 'none left');
  // A network hook call for a network that is not a pool but is named like an object key.
  const r = await networkHookInProcess(w.env, ['constructor', 'stopped', 'end', '-'], `<hookData><network><name>constructor</name><forward mode='nat'/></network></hookData>`);
  t.same([r.exitCode, r.stderr], [0, '']);
});

t.test('reconcile rebuilds the index markers under the lock: a marker of a concurrent prepare survives', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL('p', 8));
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const prepares = Array.from({ length: 6 }, (_, i) =>
    vfpoolCli(['prepare', '--xml=-'], { env: w.env, stdin: domainXml('prepare', { name: `vm${i}`, vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:0${i + 1}'/>` }) }));
  const reconciles = Array.from({ length: 6 }, () => vfpoolCli(['reconcile'], { env: w.env }));
  const all = await Promise.all([...prepares, ...reconciles]);
  t.same(all.map((r) => [r.exitCode, r.stderr]), all.map(() => [0, '']), 'all succeeded');
  // A reconcile that judged a prepare still running, from the state it read before that
  // prepare ended, once freed its VF though the prepare had succeeded (reconcile.test.ts).
  const holders = readState(w.settings.stateDir).allocations.map((a) => a.owner.domain).sort();
  t.same(holders, ['vm0', 'vm1', 'vm2', 'vm3', 'vm4', 'vm5'], 'every prepared domain still holds its VF');
  const markers = readdirSync(join(w.settings.stateDir, 'index'));
  for (const d of new Set(holders)) t.ok(markers.includes(`domain.${d}`), `marker of ${d}`);
  t.ok(markers.includes('pool.p'));
});

t.test('a state directory that is a symlink is refused, its target untouched; a relative one is refused', async (t) => {
  const w = makeSimEnv(t);
  const target = join(w.dir, 'shared');
  mkdirSync(target, { mode: 0o1777 });
  const { chmodSync } = await import('node:fs');
  chmodSync(target, 0o1777);
  const link = join(w.dir, 'link');
  symlinkSync(target, link);
  w.definePool('p', POOL('p'));
  const r = await cli(['net-start', 'p'], { env: { ...w.env, VFPOOL_STATE_DIR: link } });
  t.equal(r.exitCode, 2);
  t.match(r.stderr, /^vfpool: the state directory .*\/link is a symbolic link; vfpool does not follow links in its state directory: point VFPOOL_STATE_DIR at the real directory\n$/);
  t.equal(statSync(target).mode & 0o7777, 0o1777, 'the target keeps its mode (sticky bit)');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'nothing changed');

  const rel = await cli(['status'], { env: { ...w.env, VFPOOL_STATE_DIR: 'run/vfpool' } });
  t.equal(rel.exitCode, 2);
  t.match(rel.stderr, /^vfpool: VFPOOL_STATE_DIR 'run\/vfpool' \(from the environment\) is a relative path: give an absolute path/);
  t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: 'etc' }), /VFPOOL_CONFIG_DIR 'etc' \(from the environment\) is a relative path/);

  // A symlink planted for state.json itself is not read through.
  mkdirSync(w.settings.stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(w.dir, 'elsewhere.json'), '{}');
  symlinkSync(join(w.dir, 'elsewhere.json'), join(w.settings.stateDir, 'state.json'));
  const s = await cli(['status'], { env: w.env });
  t.equal(s.exitCode, 2);
  t.match(s.stderr, /^vfpool: the state file .*state\.json is a symbolic link; vfpool does not follow links there/);
});

t.test('state files are 0600 in a 0700 directory; temp files of killed writers are removed', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL('p'));
  mkdirSync(w.settings.stateDir, { recursive: true, mode: 0o755 });
  // What a writer SIGKILLed between its temp file and the rename leaves: the temp file, and
  // the holder file naming it (a pid that is gone).
  const killed = spawnSleeper();
  await killed.kill();
  mkdirSync(join(w.settings.stateDir, 'state.json.lock'));
  writeFileSync(join(w.settings.stateDir, 'state.json.lock/holder'), JSON.stringify({ pid: killed.pid, start: null, boot: null, what: 'net-start p' }));
  writeFileSync(join(w.settings.stateDir, 'state.json.1234567'), '{"half":');
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json.lock')), 'the dead holder\'s lock is gone');
  t.equal(lstatSync(w.settings.stateDir).mode & 0o777, 0o700, 'directory 0700');
  for (const f of ['state.json', 'index/pool.p']) t.equal(lstatSync(join(w.settings.stateDir, f)).mode & 0o777, 0o600, `${f} 0600`);
  t.notOk(existsSync(join(w.settings.stateDir, 'state.json.1234567')), 'the leftover temp file is gone');
});

t.test('--pid is a live process id: `abc` and a dead pid are one line each, exit 2, nothing prepared', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL('p'));
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const xml = domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:01'/>` });
  const dead = spawnSleeper();
  const deadPid = dead.pid;
  await dead.kill();
  for (const [pid, msg] of [['abc', /^vfpool: --pid 'abc' is not a process id: give the pid/], ['1.5', /--pid '1\.5' is not a process id/], [String(deadPid), new RegExp(`^vfpool: --pid ${deadPid}: no such process`)]] as const) {
    const r = await cli(['prepare', '--xml=-', '--pid', pid], { env: w.env, stdin: xml });
    t.equal(r.exitCode, 2, `--pid ${pid}: exit 2`);
    t.match(r.stderr, msg);
    t.equal(r.stderr.split('\n').length, 2, 'one line');
  }
  t.same(readState(w.settings.stateDir).allocations, [], 'nothing allocated');
  const live = await cli(['prepare', '--xml=-', '--pid', String(process.pid)], { env: w.env, stdin: xml });
  t.same([live.exitCode, live.stderr], [0, ''], 'a live pid is taken');
});

t.test('a lock with a future mtime or a dead holder does not block; a held lock names its holder', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL('p'));
  mkdirSync(w.settings.stateDir, { recursive: true, mode: 0o700 });
  const lock = join(w.settings.stateDir, 'state.json.lock');
  mkdirSync(lock);
  const future = new Date(Date.now() + 3600_000);
  utimesSync(lock, future, future);
  const r = await cli(['net-start', 'p'], { env: w.env });
  t.same([r.exitCode, r.stderr], [0, ''], 'a future-dated lock without a live holder is cleared at once');

  // A holder killed with the lock: its holder file names a dead pid.
  const dead = spawnSleeper();
  const deadPid = dead.pid;
  await dead.kill();
  mkdirSync(lock);
  writeFileSync(join(lock, 'holder'), JSON.stringify({ pid: deadPid, start: null, boot: null, what: 'net-start p' }));
  const started = Date.now();
  const r2 = await cli(['net-destroy', 'p'], { env: w.env });
  t.same([r2.exitCode, r2.stderr], [0, ''], 'taken over from the dead holder');
  t.ok(Date.now() - started < 9000, 'without waiting for the lock to go stale (10 s)');
});

t.test('a lock timeout names the lock and its holder', async (t) => {
  const { updateJsonFileLocked } = await import('../../src/util/json-file.js');
  const dir = t.testdir({});
  const file = join(dir, 'state.json');
  let release!: () => void;
  const held = updateJsonFileLocked(file, () => ({}), () => new Promise<{ result: number }>((r) => (release = () => r({ result: 0 }))), { timeoutMs: 300, staleMs: 10_000 });
  await new Promise((r) => setTimeout(r, 100));
  await t.rejects(updateJsonFileLocked(file, () => ({}), () => ({ result: 1 }), { timeoutMs: 300, staleMs: 10_000 }), {
    exitCode: 3,
    message: new RegExp(`^lock .*state\\.json\\.lock is held by vfpool pid ${process.pid} \\(`),
  });
  release();
  await held;
  t.notOk(existsSync(join(dir, 'state.json.lock')), 'the holder file goes with the lock');
});

t.test('a truncated state file is refused with advice that loses nothing (never "remove the file")', async (t) => {
  const w = makeSimEnv(t);
  mkdirSync(w.settings.stateDir, { recursive: true, mode: 0o700 });
  const truncated = '{"version":2,"pools":{},"allocations":[{"pf":"eth1","vfAddr":"0000:3b:02.0"';
  writeFileSync(join(w.settings.stateDir, 'state.json'), truncated);
  w.definePool('p', POOL('p'));
  for (const args of [['status'], ['net-start', 'p'], ['reconcile']]) {
    const r = await cli(args, { env: w.env });
    t.equal(r.exitCode, 2, `${args[0]}: exit 2`);
    t.match(r.stderr, /^vfpool: .*state\.json is not valid JSON: .*: restore it from a copy; only if no guest uses what it records, move it aside and run `vfpool reconcile`\n$/);
    t.notMatch(r.stderr, /remove/);
  }
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), truncated, 'the file is left as it was');
});
