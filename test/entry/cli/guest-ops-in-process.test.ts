import t from 'tap';
import type { Test } from 'tap';
import { appendFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../../helpers/env.js';
import { domainXml } from '../../helpers/libvirt-domains.js';
import { runCliInProcess } from '../../helpers/cli-in-process.js';
import { spawnSleeper } from '../../helpers/processes.js';

/** prepare / release / reconcile / history / doctor, in-process: their text outputs and refusals. */
async function world(t: Test) {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='12'/>` }));
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  return { w, file, cli };
}

t.test('prepare, release and history as text', async (t) => {
  const { w, file, cli } = await world(t);
  await w.sim.writeNumVfs('eth1' as never, 2);
  const p = await cli('prepare', '--xml', file);
  t.same([p.exitCode, p.stderr], [0, '']);
  t.match(p.stdout, /^Domain vm1: VF 0000:3b:02\.0 \(eth1 VF 0, pool p\) mac 52:54:00:aa:00:01 vlan 12, guest slot 0\n$/);

  const dry = await cli('release', 'vm1', '--dry-run');
  t.equal(dry.exitCode, 0, dry.stderr);
  t.match(dry.stdout, /^plan for release of domain vm1 \(--dry-run, nothing changed\):\n  1\. .*0000:3b:02\.0/);
  const dryJson = JSON.parse((await cli('release', '--xml', file, '--dry-run', '--json')).stdout);
  t.match(dryJson, { dryRun: true });
  t.ok(dryJson.plan.length > 0, 'the JSON plan lists the steps');

  t.same(await cli('release', '--xml', file), { exitCode: 0, stdout: 'Domain vm1: VF 0000:3b:02.0 restored and freed\n', stderr: '' });
  t.same(await cli('release', 'vm1'), { exitCode: 0, stdout: 'Domain vm1 holds no VF (nothing to release)\n', stderr: '' });
  t.match((await cli('release', 'vm1', '--dry-run')).stdout, /\n  1\. nothing to do: vfpool holds nothing for it\n$/);

  const hist = await cli('history', 'vm1');
  t.equal(hist.exitCode, 0);
  t.match(hist.stdout, /vm1.*0000:3b:02\.0/);
  const lines = (await cli('history', '--json', '--pool', 'p', '--vf', '0000:3b:02.0', '--since', '2000-01-01T00:00:00Z')).stdout.trim().split('\n');
  t.ok(lines.length >= 2, 'allocation and release');
  for (const l of lines) t.match(JSON.parse(l), { domain: 'vm1', vf: '0000:3b:02.0' });
  t.same(await cli('history', 'vm2'), { exitCode: 0, stdout: 'no history entries match\n', stderr: '' });
  for (const since of ['2000-01-01', '2000-01-01 00:00', '2000-01-01T01:00:00+01:00', '2000-01-01T00:00:00.000z']) {
    t.match((await cli('history', 'vm1', '--since', since)).stdout, /vm1.*0000:3b:02\.0/, `--since ${since}: an ISO 8601 form`);
  }
  t.same(await cli('history', 'vm1', '--since', '2999-01-01T00:00:00Z'), { exitCode: 0, stdout: 'no history entries match\n', stderr: '' }, 'and it filters');

  // A line that is not JSON is skipped with a warning, the others still print.
  const journalFile = readdirSync(w.settings.journalDir).map((f) => join(w.settings.journalDir, f))[0]!;
  appendFileSync(journalFile, 'not json\n');
  const damaged = await cli('history', 'vm1');
  t.equal(damaged.exitCode, 0);
  t.match(damaged.stderr, /^vfpool: warning: 1 line\(s\) of .* are not history entries \(JSON objects with a time and an op\) and were skipped\n$/);
  // JSON that is no entry (an edit, a power cut): `null` made every `vfpool history` an
  // 'unexpected error ... this is a vfpool bug'; the others printed 'undefined undefined'.
  appendFileSync(journalFile, 'null\n42\n[]\n{}\n{"time":5,"op":"allocate"}\n{"time":"2026-12-01T00:00:00Z","op":"allocate","domain":{"x":1}}\n');
  for (const argv of [['history'], ['history', 'vm1', '--since', '2000-01-01'], ['history', '--json']]) {
    const r = await cli(...argv);
    t.equal(r.exitCode, 0, `${argv.join(' ')}: ${r.stderr}`);
    t.match(r.stderr, /^vfpool: warning: 7 line\(s\) of .* are not history entries/, `${argv.join(' ')}: the 7 bad lines counted`);
    t.notMatch(r.stdout, /undefined|\[object Object\]|^null$|^42$/m, `${argv.join(' ')}: none printed`);
    t.match(r.stdout, /vm1/, `${argv.join(' ')}: the real entries still print`);
  }
  t.match(damaged.stdout, /vm1/);
});

t.test('prepare of a domain that asks for nothing, and its dry run', async (t) => {
  const { w, cli } = await world(t);
  const none = join(w.dir, 'none.xml');
  writeFileSync(none, domainXml('prepare', { name: 'vm9' }));
  t.same(await cli('prepare', '--xml', none), { exitCode: 0, stdout: 'Domain vm9 asks for no VF from vfpool\n', stderr: '' });
  t.match((await cli('prepare', '--xml', none, '--dry-run')).stdout, /^plan for prepare of domain vm9 \(--dry-run, nothing changed\):\n  1\. nothing to do: the domain asks for no VF\n$/);
  // Only emulated SR-IOV NICs (seed 003): no VF, but a plan, and QEMU gets devices from it.
  const nics = join(w.dir, 'nics.xml');
  writeFileSync(nics, domainXml('prepare', { name: 'vm8', machine: 'pc-q35-10.0', vfpool: `<vfpool:sriov-nic vfs='3'/><vfpool:sriov-nic vfs='1' backend='user'/>` }));
  t.same((await cli('prepare', '--xml', nics, '--dry-run')).stdout,
    'plan for prepare of domain vm8 (--dry-run, nothing changed):\n  1. write the plan by which vfpool-qemu adds its 2 emulated SR-IOV NICs (3 VFs, 1 VF); no VF to allocate\n');
  t.same(await cli('prepare', '--xml', nics), { exitCode: 0, stdout: 'Domain vm8 asks for no VF from vfpool; vfpool-qemu adds its 2 emulated SR-IOV NICs (3 VFs, 1 VF)\n', stderr: '' });
});

t.test('reconcile: text report and dry run', async (t) => {
  const { w, file, cli } = await world(t);
  await w.sim.writeNumVfs('eth1' as never, 2);
  // Prepared for a QEMU (a sleeper standing in) that then exits: reconcile frees it.
  const qemu = spawnSleeper();
  t.equal((await cli('prepare', '--xml', file, '--pid', String(qemu.pid))).exitCode, 0);
  await qemu.kill();
  const dry = await cli('reconcile', '--dry-run', '--grace', '0');
  t.equal(dry.exitCode, 0, dry.stderr);
  t.match(dry.stdout, /^would free 0000:3b:02\.0 of domain vm1: .*\n0 kept, 1 would free, 0 failed \(--dry-run, nothing changed\)\n$/);
  const real = await cli('reconcile', '--grace', '0');
  t.match(real.stdout, /^freed 0000:3b:02\.0 of domain vm1: .*\n0 kept, 1 freed, 0 failed\n$/);
  t.match(JSON.parse((await cli('reconcile', '--json')).stdout), { kept: [], freed: [], failed: [], portsDropped: [], portsKept: 0, plansRemoved: [], dryRun: false });
});

t.test('bad input: exit 2, one line naming the option', async (t) => {
  const { w, file, cli } = await world(t);
  const cases: Array<[string[], RegExp]> = [
    [['prepare', '--xml', file, '--pid', '1'], /^vfpool: --pid '1' is not a process id/],
    [['release'], /^vfpool: name the domain, or give --xml FILE \(one of the two\)/],
    [['release', 'vm1', '--xml', file], /^vfpool: name the domain, or give --xml FILE \(one of the two\)/],
    [['release', '--xml', join(w.dir, 'missing.xml')], /^vfpool: cannot read .*missing\.xml: ENOENT.*give the path of an XML file/],
    [['reconcile', '--grace', '-1'], /^vfpool: --grace '-1' is not a number of seconds from 0/],
    [['reconcile', '--grace', 'ten'], /^vfpool: --grace 'ten' is not a number of seconds from 0 to 2147482/],
    [['history', '--since', 'yesterday'], /^vfpool: --since 'yesterday' is not a time.*2026-11-30T04:00:00Z/],
    // V8's Date.parse took these (May 2001, 1999, March 2nd): a typo showed the whole history.
    [['history', '--since', '5'], /^vfpool: --since '5' is not a time: give an ISO 8601 date or time such as 2026-11-30/],
    [['history', '--since', '99'], /^vfpool: --since '99' is not a time/],
    [['history', '--since', 'Dec 1'], /^vfpool: --since 'Dec 1' is not a time/],
    [['history', '--since', '2026-02-30'], /^vfpool: --since '2026-02-30' is not a time/],
    [['history', '--vf', 'eth0'], /--vf/],
    [['prepare'], /^vfpool: prepare: Missing required argument: xml: see `vfpool prepare --help`\n$/],
    [['net-start'], /^vfpool: net-start: missing <pool>, the pool's name \(its <name> in the network XML\): e\.g\. `vfpool net-start sriov-pool`\n$/],
  ];
  for (const [argv, msg] of cases) {
    const r = await cli(...argv);
    t.equal(r.exitCode, 2, `${argv.join(' ')}: exit 2`);
    t.match(r.stderr, msg, argv.join(' '));
    t.equal(r.stderr.split('\n').length, 2, 'one line');
  }
  // The history directory exists but is not readable as one (a file where the dir should be).
  writeFileSync(join(w.dir, 'jfile'), '');
  const r = await runCliInProcess(['history'], { ...w.env, VFPOOL_JOURNAL_DIR: join(w.dir, 'jfile') });
  t.equal(r.exitCode, 2);
  t.match(r.stderr, /^vfpool: the VF history .*jfile\/history\.jsonl: a part of that path is a file, not a directory: remove or rename that file, or point VFPOOL_JOURNAL_DIR elsewhere\n$/);
  // A directory where the history file belongs: named, with the fix, not "run as root" (it is root).
  mkdirSync(join(w.dir, 'jdir/history.jsonl'), { recursive: true });
  const isDir = await runCliInProcess(['history'], { ...w.env, VFPOOL_JOURNAL_DIR: join(w.dir, 'jdir') });
  t.equal(isDir.exitCode, 2);
  t.match(isDir.stderr, /^vfpool: the VF history .*jdir\/history\.jsonl is a directory: remove or rename that directory, or point VFPOOL_JOURNAL_DIR elsewhere\n$/);
});

t.test('history with no journal yet, and doctor with a broken vfpool.conf', async (t) => {
  // No pool started either: a start is in the history.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  const cli = (...argv: string[]) => runCliInProcess(argv, w.env);
  t.same(await cli('history'), { exitCode: 0, stdout: `no history entries in ${join(w.settings.journalDir, 'history.jsonl')}\n`, stderr: '' });
  mkdirSync(w.settings.configDir, { recursive: true });
  writeFileSync(join(w.settings.configDir, 'vfpool.conf'), 'this is not KEY=value\n');
  const d = await cli('doctor', '--json');
  // The simulated host fails some checks (no IOMMU, no libvirt): exit 1, and the conf is reported.
  t.equal(d.exitCode, 1);
  const checks = JSON.parse(d.stdout).checks as Array<{ id: string; ok: boolean }>;
  t.ok(checks.length > 3);
  const text = await cli('doctor');
  t.equal(text.exitCode, 1);
  t.match(text.stdout, /vfpool\.conf/);
});
