import t from 'tap';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Journal } from '../../src/state/journal.js';
import { readDomainPlan, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import { fileRecordStore, newRecord } from '../../src/state/migration-record.js';
import { writeFileNoFollow } from '../../src/util/json-file.js';
import { Logger } from '../../src/util/log.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { makeSimEnv } from '../helpers/env.js';
import { scratchDir } from '../helpers/scratch.js';

/**
 * Issue 10, hardening: root writes vfpool.log, the history journal, the QEMU plans and the
 * migration records in directories some of which (qemu/NAME/) belong to the QEMU user. A
 * symlink planted in place of any of them is never followed: its target stays as it was, and
 * vfpool says so in one line (a refusal, exit 2; the journal and the log, which never fail an
 * operation, a warning or nothing).
 */
const me = { uid: process.getuid!(), gid: process.getgid!() };
const PLAN: DomainPlanV1 = { version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] };

function target(dir: string, text = 'precious\n'): { file: string; untouched: () => boolean } {
  const file = join(dir, 'target');
  writeFileSync(file, text, { mode: 0o644 });
  return { file, untouched: () => readFileSync(file, 'utf8') === text && (statSync(file).mode & 0o777) === 0o644 };
}

t.test('vfpool.log: a link in its place is not appended through', async (t) => {
  const dir = scratchDir(t);
  const tg = target(dir);
  mkdirSync(join(dir, 'run'));
  symlinkSync(tg.file, join(dir, 'run/vfpool.log'));
  const echoed: string[] = [];
  Logger.forStateDir(join(dir, 'run'), 'test', (l) => echoed.push(l)).info('a step');
  t.ok(tg.untouched(), 'the target is untouched');
  t.same(echoed, ['a step'], 'the operation goes on (a log write never fails one)');
});

t.test('the history journal: a link in its place is neither appended to nor read through; one warning', async (t) => {
  const dir = scratchDir(t);
  const tg = target(dir, '{"op":"secret"}\n');
  const jdir = join(dir, 'journal');
  mkdirSync(jdir);
  symlinkSync(tg.file, join(jdir, 'history.jsonl'));
  const warnings: string[] = [];
  const j = new Journal(jdir, { warn: (m) => warnings.push(m) });
  j.record({ op: 'allocate', domain: 'vm1' });
  t.ok(tg.untouched(), 'the target is untouched');
  t.same(warnings, [`history journal ${join(jdir, 'history.jsonl')} not written: it is a symbolic link, which vfpool does not follow: remove the link`]);
  const dangling = join(dir, 'journal2');
  mkdirSync(dangling);
  symlinkSync(join(dir, 'would-be-created'), join(dangling, 'history.jsonl'));
  new Journal(dangling, { warn: () => {} }).record({ op: 'allocate' });
  t.notOk(readdirSync(dir).includes('would-be-created'), 'a dangling link does not create its target');
  // A link among the rotated files is not read through either.
  const rdir = join(dir, 'journal3');
  const r = new Journal(rdir);
  r.record({ op: 'release', domain: 'vm2' });
  symlinkSync(tg.file, join(rdir, 'history.jsonl.1'));
  const all = r.readAll();
  t.same([all.entries.map((e) => e.op), all.unreadable], [['release'], 1], 'the link is skipped and counted, its content not shown');
  t.equal(lstatSync(join(rdir, 'history.jsonl')).mode & 0o777, 0o600);
});

t.test('QEMU plans: a link for plan.json, for qemu/NAME or for qemu/ is refused, the target untouched', async (t) => {
  const dir = scratchDir(t);
  const state = join(dir, 'run');
  const tg = target(dir, JSON.stringify(PLAN));
  mkdirSync(join(state, 'qemu/vm1'), { recursive: true });
  symlinkSync(tg.file, join(state, 'qemu/vm1/plan.json'));
  t.throws(() => readDomainPlan(state, 'vm1'), { exitCode: 2, message: `the QEMU plan of domain 'vm1' ${join(state, 'qemu/vm1/plan.json')} is a symbolic link; vfpool does not follow links in its state directory` });

  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere, { mode: 0o700 });
  symlinkSync(elsewhere, join(state, 'qemu/vm2'));
  await t.rejects(writeDomainPlan(state, { ...PLAN, domain: 'vm2' }, me), { exitCode: 2, message: /the QEMU plan directory of domain 'vm2' .*\/qemu\/vm2 is a symbolic link/ });
  t.same([readdirSync(elsewhere), statSync(elsewhere).mode & 0o777], [[], 0o700], 'nothing written there, its mode kept');

  const state2 = join(dir, 'run2');
  mkdirSync(state2, { mode: 0o700 });
  symlinkSync(elsewhere, join(state2, 'qemu'));
  await t.rejects(writeDomainPlan(state2, PLAN, me), { exitCode: 2, message: /the QEMU plans directory .*\/run2\/qemu is a symbolic link/ });
  t.equal(statSync(elsewhere).mode & 0o777, 0o700, 'no chmod through the link (0711 would open it to every user)');
  t.ok(tg.untouched());
});

t.test('QEMU plans: a plan.json link the QEMU user planted in its directory is never written through at the next prepare', async (t) => {
  // qemu/NAME/ is the QEMU user's once handed over; a prepare that finds it (its release never
  // came) wrote through a link there: the target replaced by a plan owned by the QEMU user.
  const dir = scratchDir(t);
  const state = join(dir, 'run');
  const tg = target(dir);
  await writeDomainPlan(state, PLAN, me);
  const file = join(state, 'qemu/vm1/plan.json');
  rmSync(file);
  symlinkSync(tg.file, file);
  await t.rejects(writeDomainPlan(state, PLAN, me), { exitCode: 2, message: `the QEMU plan of domain 'vm1' ${file} is a symbolic link; vfpool does not follow links in its state directory` });
  t.ok(tg.untouched(), 'the target is untouched');
  t.same(readdirSync(dir).sort(), ['run', 'target'], 'no temp file beside the target');

  // Planted after the check, it is replaced by the rename, not written through: the temp file
  // is created O_EXCL|O_NOFOLLOW and chowned through its descriptor.
  rmSync(file);
  writeFileNoFollow(file, 'first\n', { mode: 0o600, owner: me });
  const racer = join(state, 'qemu/vm1/plan.json');
  rmSync(racer);
  symlinkSync(tg.file, racer);
  writeFileNoFollow(racer, JSON.stringify(PLAN), { mode: 0o600, owner: me });
  t.ok(tg.untouched(), 'the target is untouched');
  t.same([lstatSync(racer).isFile(), statSync(racer).mode & 0o777, readdirSync(join(state, 'qemu/vm1'))], [true, 0o600, ['plan.json']], 'the link itself was replaced by the plan');
  t.same(readDomainPlan(state, 'vm1'), PLAN);
});

t.test('QEMU plans: a FIFO for plan.json is refused at once, not waited on', async (t) => {
  // Opening a FIFO for reading blocks until a writer comes: root's started hook and reconcile
  // hung there for as long as the QEMU user liked.
  const dir = scratchDir(t);
  const state = join(dir, 'run');
  mkdirSync(join(state, 'qemu/vm1'), { recursive: true });
  const file = join(state, 'qemu/vm1/plan.json');
  execFileSync('mkfifo', [file]);
  t.throws(() => readDomainPlan(state, 'vm1'), { exitCode: 1, message: `cannot read ${file}: it is not a regular file (vfpool writes a file there itself)` });
});

t.test('migration records: a link for DOMAIN.json or for migrate/ is refused before anything is written', async (t) => {
  const dir = scratchDir(t);
  const state = join(dir, 'run');
  mkdirSync(join(state, 'migrate'), { recursive: true });
  const tg = target(dir);
  symlinkSync(tg.file, join(state, 'migrate/vm1.json'));
  const store = fileRecordStore(state);
  t.throws(() => store.read('vm1'), { exitCode: 2, message: /the migration record .*\/migrate\/vm1\.json is a symbolic link/ });
  await t.rejects(store.write(newRecord('vm1', 'source', [])), { exitCode: 2, message: /is a symbolic link/ });
  t.ok(tg.untouched(), 'the target is untouched');
  t.ok(lstatSync(join(state, 'migrate/vm1.json')).isSymbolicLink(), 'the link is left for the administrator to see');

  const state2 = join(dir, 'run2');
  mkdirSync(state2);
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, join(state2, 'migrate'));
  await t.rejects(fileRecordStore(state2).write(newRecord('vm1', 'source', [])), { exitCode: 2, message: /the migration records directory .*\/run2\/migrate is a symbolic link/ });
  t.same(readdirSync(elsewhere), [], 'nothing written (nor locked) through the link');
});

t.test('the CLI meets a planted record: exit 2, one line', async (t) => {
  const w = makeSimEnv(t);
  mkdirSync(join(w.settings.stateDir, 'migrate'), { recursive: true });
  const tg = target(w.dir);
  symlinkSync(tg.file, join(w.settings.stateDir, 'migrate/vm1.json'));
  const r = await runCliInProcess(['migrate', 'confirm', 'vm1', '--role', 'source'], w.env);
  t.equal(r.exitCode, 2);
  t.match(r.stderr, /^vfpool: the migration record \S+\/migrate\/vm1\.json is a symbolic link; vfpool does not follow links in its state directory: remove the link \(vfpool writes the file itself\)\n$/);
  t.ok(tg.untouched());
});
