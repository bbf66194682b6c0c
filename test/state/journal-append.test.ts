import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Journal, JOURNAL_FILE } from '../../src/state/journal.js';
import { WITHOUT_TAP_LOADER } from '../helpers/spawn.js';

// The journal appends without a lock (one O_APPEND write per entry) and locks only to rotate:
// entries of processes writing at once, across rotations, must all land whole and in each
// writer's order. Real processes: the kernel's O_APPEND is what is relied upon.
const journalModule = fileURLToPath(new URL('../../src/state/journal.js', import.meta.url));

function writer(dir: string, name: string, count: number): Promise<number | null> {
  const script = `import { Journal } from ${JSON.stringify(journalModule)};
const j = new Journal(${JSON.stringify(dir)}, { warn: (m) => { console.error(m); process.exitCode = 1; } }, { maxBytes: 6000, keep: 100 });
for (let i = 0; i < ${count}; i++) j.record({ op: 'allocate', domain: ${JSON.stringify(name)} + '-' + i, vf: '0000:3b:02.0' });`;
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const child = spawn(envBin, [...unset, process.execPath, '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

t.test('entries of three processes appending at once, across rotations: all there, whole, each writer in order', async (t) => {
  const dir = join(t.testdir({}), 'journal');
  const codes = await Promise.all(['a', 'b', 'c'].map((n) => writer(dir, n, 150)));
  t.same(codes, [0, 0, 0], 'no writer reported a failed write');
  const { entries, unreadable } = new Journal(dir).readAll();
  t.equal(unreadable, 0, 'no line torn or interleaved');
  for (const n of ['a', 'b', 'c']) {
    const mine = entries.filter((e) => e.domain!.startsWith(`${n}-`)).map((e) => Number(e.domain!.slice(2)));
    t.same(mine, Array.from({ length: 150 }, (_, i) => i), `writer ${n}: all 150 entries, in its order`);
  }
  const files = readdirSync(dir).filter((f) => f.startsWith(JOURNAL_FILE));
  t.ok(files.length > 5, `rotated meanwhile (${files.length} files)`);
  for (const f of files) t.ok(readFileSync(join(dir, f), 'utf8').endsWith('\n'), `${f} ends with a whole line`);
});

t.test('a rotation lock left by a killed writer is taken over: at once when its holder is gone, and when its mtime lies in the future', async (t) => {
  const dir = join(t.testdir({}), 'journal');
  const warnings: string[] = [];
  const j = new Journal(dir, { warn: (m) => warnings.push(m) }, { maxBytes: 200, keep: 2 });
  const entry = (n: number) => ({ op: 'allocate' as const, domain: `vm${n}`, after: { owner: `vm${n}` } });
  j.record(entry(0), entry(1));
  const lock = join(dir, 'history.jsonl.lock');
  // Killed mid-rotation by an older vfpool (no holder file), then the clock was set back an hour.
  mkdirSync(lock);
  const future = new Date(Date.now() + 3600_000);
  utimesSync(lock, future, future);
  j.record(entry(2));
  t.same(warnings, [], 'the entry was written');
  t.match(readFileSync(join(dir, 'history.jsonl'), 'utf8'), /"vm2"/);
  t.ok(existsSync(join(dir, 'history.jsonl.1')), 'and the full file rotated');
  // Killed mid-rotation, its holder file naming a process that is gone.
  mkdirSync(lock);
  writeFileSync(join(lock, 'holder'), JSON.stringify({ pid: 2 ** 22 + 1, start: 1, boot: null, what: 'x' }));
  const began = performance.now();
  j.record(entry(3), entry(4), entry(5));
  t.same(warnings, []);
  t.ok(performance.now() - began < 1_000, 'at once');
  t.notOk(existsSync(lock), 'no lock left');
});
