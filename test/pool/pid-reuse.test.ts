import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnSleeper } from '../helpers/processes.js';
import { cli } from '../helpers/cli-in-process.js';

/**
 * A recorded QEMU pid is another process's once that QEMU is gone and the pid wrapped (pid_max
 * is 32768 on a kernel left at its default, and QEMU runs for months): judged by the pid alone,
 * that process pinned the VF for as long as it ran. The record keeps the process's start time
 * with its pid; a live pid with another start time is not the QEMU.
 */
const POOL = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='1'/></pf></forward></network>`;
const xml = (name: string) => domainXml('prepare', { name, vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:01'/>` });
type Owner = { domain: string; pid: number | null; pidStart?: number | null };
type State = { allocations: Array<{ owner: Owner; vfAddr: string }> };

function startOf(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
}

t.test('a QEMU pid now another process\'s does not pin the VF; a record without a start time is judged by the pid', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const other = spawnSleeper();
  t.teardown(() => other.kill());
  t.same((await cli(['prepare', '--xml=-', '--pid', String(other.pid)], { env: w.env, stdin: xml('vm1') })).exitCode, 0);
  const file = join(w.settings.stateDir, 'state.json');
  const state = () => JSON.parse(readFileSync(file, 'utf8')) as State;
  t.same(state().allocations.map((a) => [a.owner.pid, a.owner.pidStart]), [[other.pid, startOf(other.pid)]], 'the pid is recorded with its start time');

  // The same pid, recorded before the start time was kept: the pid alone says it runs.
  const edit = (fn: (o: Owner) => void) => {
    const s = state();
    fn(s.allocations[0]!.owner);
    writeFileSync(file, JSON.stringify(s));
  };
  edit((o) => delete o.pidStart);
  const kept = await cli(['reconcile', '--json'], { env: w.env });
  t.match(JSON.parse(kept.stdout), { kept: [{ domain: 'vm1', reason: `QEMU pid ${other.pid} runs` }], freed: [] });
  t.equal((await cli(['prepare', '--xml=-'], { env: w.env, stdin: xml('vm2') })).exitCode, 3, 'the one VF is held');

  // The QEMU that had the pid is gone; the process with it now started at another time.
  edit((o) => (o.pidStart = startOf(other.pid) - 1));
  const judged = await cli(['reconcile', '--dry-run', '--json'], { env: w.env });
  t.match(JSON.parse(judged.stdout), { kept: [], freed: [{ domain: 'vm1', reason: `QEMU pid ${other.pid} is gone` }] });
  const second = await cli(['prepare', '--xml=-'], { env: w.env, stdin: xml('vm2') });
  t.same([second.exitCode, second.stderr], [0, ''], 'the VF is another guest\'s now: its holder\'s QEMU is gone');
  t.same(state().allocations.map((a) => a.owner.domain), ['vm2']);
});

t.test('a vfpool worker killed mid-way whose pid another process has now: its work counts as interrupted', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  t.equal((await cli(['prepare', '--xml=-'], { env: w.env, stdin: xml('vm1') })).exitCode, 0);
  const file = join(w.settings.stateDir, 'state.json');
  const other = spawnSleeper();
  t.teardown(() => other.kill());
  type Raw = { allocations: Array<{ owner: Owner; phase: string; worker: number | null; workerStart?: number | null }>; pools: Record<string, { change: unknown }> };
  const edit = (fn: (s: Raw) => void) => {
    const s = JSON.parse(readFileSync(file, 'utf8')) as Raw;
    fn(s);
    writeFileSync(file, JSON.stringify(s));
  };
  const start = startOf(other.pid);
  // vm1's release, by a vfpool whose pid is `other`'s: alive, the same process.
  edit((s) => Object.assign(s.allocations[0]!, { phase: 'releasing', worker: other.pid, workerStart: start }));
  t.match(JSON.parse((await cli(['reconcile', '--dry-run', '--json'], { env: w.env })).stdout), { kept: [{ domain: 'vm1', reason: `vfpool (pid ${other.pid}) is working on it now` }] });
  t.match(await cli(['release', 'vm1'], { env: w.env }), { exitCode: 3, stderr: new RegExp(`being released by vfpool \\(pid ${other.pid}\\)`) });
  // That vfpool was killed, and `other` is another process given its pid since.
  edit((s) => (s.allocations[0]!.workerStart = start - 1));
  t.match(JSON.parse((await cli(['reconcile', '--dry-run', '--json'], { env: w.env })).stdout), { kept: [], freed: [{ domain: 'vm1', reason: /its release did not finish/ }] });
  t.same((await cli(['release', 'vm1'], { env: w.env })).exitCode, 0, 'the release finishes it');

  // A pool start whose vfpool was killed half-way, its pid another process's now.
  edit((s) => (s.pools.p!.change = { kind: 'starting', worker: other.pid, workerStart: start - 1, since: new Date().toISOString(), from: [{ pf: 'eth1', numVfs: 0 }] }));
  const refused = await cli(['prepare', '--xml=-'], { env: w.env, stdin: xml('vm2') });
  t.match(refused.stderr, /its start was interrupted \(vfpool pid \d+ is gone\)/, 'not "being reconfigured" for as long as that process runs');
  t.match(JSON.parse((await cli(['reconcile', '--json'], { env: w.env })).stdout), { pools: [{ pool: 'p' }] });
});

t.test('a libvirt port record pins its VF while its QEMU runs: the recorded process, not whichever has its pid', async (t) => {
  const { judgePort } = await import('../../src/pool/owners.js');
  const { isSameProcessAlive } = await import('../../src/util/process.js');
  const port = { network: 'n', portUuid: 'u', domain: 'vm1', domainUuid: null, vfAddr: null, netdev: null, plug: 'direct' as const, mac: null, createdAt: null, createdMonoMs: null, pid: process.pid };
  const env = { alive: isSameProcessAlive, libvirtPid: () => null, now: Date.now(), graceMs: 120_000 };
  const start = startOf(process.pid);
  t.match(judgePort({ ...port, pidStart: start }, env), { keep: true, reason: `QEMU pid ${process.pid} runs` });
  t.match(judgePort(port, env), { keep: true }, 'recorded without a start time: the pid alone');
  t.match(judgePort({ ...port, pidStart: start + 1 }, env), { keep: false, reason: `domain 'vm1' QEMU pid ${process.pid} is gone` });
});
