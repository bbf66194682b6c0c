import t from 'tap';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Journal, JOURNAL_FILE } from '../../src/state/journal.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { cli as inProcessCli } from '../helpers/cli-in-process.js';

// The CLI runs in-process (cli: the same program, env and exit-code boundary as the bundle,
// without a Node start per command); cli.test.ts and the fuzz suite run the bundle itself.
t.test('vfpool history: pool start, prepare, a refused prepare, release and pool stop, in order, with before and after', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('p', `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward></network>`);
  const cli = (...args: string[]) => inProcessCli(args, { env: w.env });
  const vm1 = join(w.dir, 'vm1.xml');
  writeFileSync(vm1, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='12'/>` }));
  const vm2 = join(w.dir, 'vm2.xml');
  writeFileSync(vm2, domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:02'/><vfpool:hostdev pool='p' mac='52:54:00:aa:00:03'/>` }));

  t.equal((await cli('net-start', 'p')).exitCode, 0);
  const vf0 = JSON.parse((await cli('status', '--json')).stdout).pfs[0].vfs[0];
  t.equal((await cli('prepare', '--xml', vm1)).exitCode, 0);
  const refused = await cli('prepare', '--xml', vm2);
  t.equal(refused.exitCode, 3, 'two VFs asked, one free: refused');
  t.equal((await cli('release', 'vm1')).exitCode, 0);
  t.equal((await cli('net-destroy', 'p')).exitCode, 0);

  const h = await cli('history', '--json');
  t.equal(h.exitCode, 0, h.stderr);
  const entries = h.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.same(entries.map((e) => [e.op, e.domain, e.pool]), [
    ['pool-start', null, 'p'],
    ['allocate', 'vm1', 'p'],
    ['configure', 'vm1', 'p'],
    ['prepare-failed', 'vm2', 'p'],
    ['restore', 'vm1', 'p'],
    ['release', 'vm1', 'p'],
    ['pool-stop', null, 'p'],
  ]);
  const [start, alloc, conf, failed, restore, release, stop] = entries;
  t.match(start, { pf: 'eth1', before: { numVfs: 0 }, after: { numVfs: 2 } });
  t.match(alloc, { vf: vf0.address, pf: 'eth1', before: { owner: null }, after: { owner: 'vm1' } });
  t.same([conf.before.mac, conf.before.vlan, conf.after.mac, conf.after.vlan], [vf0.mac, 0, '52:54:00:aa:00:01', 12], 'configure: the VF\'s own MAC and VLAN 0 -> the guest\'s');
  t.match(failed, { exitCode: 3, error: /vm2/ });
  t.same([restore.before.mac, restore.before.vlan, restore.after.mac, restore.after.vlan], ['52:54:00:aa:00:01', 12, vf0.mac, 0], 'restore: back to what it was');
  t.match(release, { vf: vf0.address, before: { owner: 'vm1' }, after: { owner: null } });
  t.match(stop, { pf: 'eth1', before: { numVfs: 2 }, after: { numVfs: 0 } });
  for (let i = 1; i < entries.length; i++) t.ok(entries[i].time >= entries[i - 1].time, `entry ${i} is not older than the one before`);

  const byVf = await cli('history', '--vf', vf0.address);
  t.match(byVf.stdout, new RegExp(`^\\S+ allocate domain vm1, pool p, VF ${vf0.address}: owner=- -> owner=vm1\\n`));
  t.equal(byVf.stdout.trim().split('\n').length, 4, 'allocate, configure, restore, release of that VF');
  t.same((await cli('history', 'vm2', '--json')).stdout.trim().split('\n').map((l) => JSON.parse(l).op), ['prepare-failed']);
  t.equal((await cli('history', '--pool', 'p', '--json')).stdout.trim().split('\n').length, 7, 'the refusal too names the pool it asked (an exhausted pool is found by its refusals)');
  t.equal((await cli('history', '--since', '2999-01-01T00:00:00Z')).stdout, 'no history entries match\n');
  const bad = await cli('history', '--since', 'yesterday-ish');
  t.same([bad.exitCode, bad.stderr], [2, "vfpool: --since 'yesterday-ish' is not a time: give an ISO 8601 date or time such as 2026-11-30 or 2026-11-30T04:00:00Z\n"]);
  t.equal((await cli('history', '--vf', 'eth1')).exitCode, 2, 'a VF is named by its PCI address');

  t.equal(statSync(w.settings.journalDir).mode & 0o777, 0o700);
  t.equal(statSync(join(w.settings.journalDir, JOURNAL_FILE)).mode & 0o777, 0o600);
});

t.test('the journal stays bounded: rotated at a size cap, N old files kept, order kept across them', async (t) => {
  const dir = join(t.testdir({}), 'journal');
  const j = new Journal(dir, null, { maxBytes: 2000, keep: 2 });
  for (let i = 0; i < 200; i++) j.record({ op: 'allocate', domain: `vm${i}`, vf: '0000:3b:02.0' });
  const files = readdirSync(dir).filter((f) => f.startsWith(JOURNAL_FILE)).sort();
  t.same(files, [JOURNAL_FILE, `${JOURNAL_FILE}.1`, `${JOURNAL_FILE}.2`]);
  for (const f of files) {
    t.ok(statSync(join(dir, f)).size <= 2000, `${f} is within the cap`);
    t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  }
  const { entries } = j.readAll();
  t.ok(entries.length > 10 && entries.length < 200, `only the newest entries are kept (${entries.length})`);
  t.equal(entries.at(-1)!.domain, 'vm199', 'the newest is there');
  const n = entries.map((e) => Number(e.domain!.slice(2)));
  t.same(n, n.map((_, i) => n[0]! + i), 'oldest first, none missing in between');
});

t.test('a journal write never fails an operation: the error goes to the log', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const notADir = join(w.dir, 'file');
  writeFileSync(notADir, '');
  const warnings: string[] = [];
  new Journal(notADir, { warn: (m) => warnings.push(m) }).record({ op: 'pool-start', pool: 'p' });
  t.match(warnings, [/history journal .*file\/history\.jsonl not written: .*(ENOTDIR|EEXIST)/]);

  w.definePool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf></forward></network>`);
  const r = await inProcessCli(['net-start', 'p'], { env: { ...w.env, VFPOOL_JOURNAL_DIR: notADir } });
  t.equal(r.exitCode, 0, 'the pool started');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /warn .*history journal .* not written/);
});

t.test('a refused release is in the history too', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  t.equal((await inProcessCli(['prepare', '--xml', file, '--pid', String(process.pid)], { env: w.env })).exitCode, 0);
  t.equal((await inProcessCli(['release', 'vm1'], { env: w.env })).exitCode, 3, 'its QEMU (this test) still runs');
  const last = JSON.parse((await inProcessCli(['history', 'vm1', '--json'], { env: w.env })).stdout.trim().split('\n').at(-1)!);
  t.match(last, { op: 'release-failed', domain: 'vm1', exitCode: 3, error: /still runs/ });
});
