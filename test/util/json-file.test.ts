import t from 'tap';
import fs, { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { LockTimeoutError } from '../../src/errors.js';
import { lockRetries, readJsonFile, updateJsonFileLocked, writeJsonFileAtomic } from '../../src/util/json-file.js';
import { scratchDir } from '../helpers/scratch.js';

t.test('readJsonFile: absent is undefined, broken JSON is bad input naming the file (exit 2), never advice to remove it', async (t) => {
  const dir = scratchDir(t);
  t.equal(readJsonFile(join(dir, 'none.json')), undefined);
  writeFileSync(join(dir, 'broken.json'), '{"pools": ');
  t.throws(() => readJsonFile(join(dir, 'broken.json')), {
    exitCode: 2,
    message: new RegExp(`^${join(dir, 'broken.json')} is not valid JSON: `),
    // Removing a truncated state.json reads as "nothing allocated": VFs guests hold handed out again.
    hint: 'restore it from a copy; only if no guest uses what it records, move it aside and run `vfpool reconcile`',
  });
});

t.test('writeJsonFileAtomic writes the whole value, 0600', async (t) => {
  const file = join(scratchDir(t), 'state.json');
  await writeJsonFileAtomic(file, { a: [1, 2] });
  t.same(JSON.parse(readFileSync(file, 'utf8')), { a: [1, 2] });
  t.equal(statSync(file).mode & 0o777, 0o600);
});

t.test('updateJsonFileLocked: creates the directory, writes only when asked, runs afterWrite under the lock', async (t) => {
  const file = join(scratchDir(t), 'run/vfpool/state.json');
  const seen: boolean[] = [];
  const r = await updateJsonFileLocked(file, () => ({ n: 0 }), (cur: { n: number }) => ({
    next: { n: cur.n + 1 },
    result: cur.n,
    afterWrite: () => seen.push(lockfile.checkSync(file, { realpath: false })),
  }));
  t.equal(r, 0);
  t.same(seen, [true], 'afterWrite ran while the lock was held');
  t.equal(statSync(join(file, '..')).mode & 0o777, 0o700, 'the state directory is root\'s');
  t.same(JSON.parse(readFileSync(file, 'utf8')), { n: 1 });
  // The caller's reader sees what the first update wrote.
  const readState = () => JSON.parse(readFileSync(file, 'utf8')) as { n: number };
  const unchanged = await updateJsonFileLocked(file, readState, (cur: { n: number }) => ({ result: cur.n }));
  t.equal(unchanged, 1);
  t.same(JSON.parse(readFileSync(file, 'utf8')), { n: 1 }, 'no next: nothing written');
  t.notOk(lockfile.checkSync(file, { realpath: false }), 'and the lock is released');
});

t.test('updateJsonFileLocked: a lock another process holds is exit 3 after the timeout; a failing update releases the lock', async (t) => {
  const dir = scratchDir(t);
  const file = join(dir, 'state.json');
  writeFileSync(file, '{}');
  const release = await lockfile.lock(file, { realpath: false, stale: 10_000 });
  const err = await updateJsonFileLocked(file, () => ({}), () => ({ result: 1 }), { timeoutMs: 200, staleMs: 10_000 }).then(
    () => null,
    (e: unknown) => e,
  );
  await release();
  t.ok(err instanceof LockTimeoutError);
  t.match(err, { exitCode: 3, message: `lock ${file}.lock is held by another vfpool process (waited 0 s)`, hint: /try again/ });
  await t.rejects(updateJsonFileLocked(file, () => ({}), () => Promise.reject(new Error('boom'))), { message: 'boom' });
  t.notOk(lockfile.checkSync(file, { realpath: false }), 'the lock is released after a failed update');
});

t.test('updateJsonFileLocked: a full file system is one line naming the file (exit 1), the file and the lock as before', async (t) => {
  const dir = scratchDir(t);
  const file = join(dir, 'state.json');
  writeFileSync(file, '{"n":1}\n');
  // write(2) answering ENOSPC, as on a full /run (write-file-atomic calls fs.writeSync at call time).
  const writeSync = fs.writeSync;
  fs.writeSync = () => {
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
  };
  const err = await updateJsonFileLocked(file, () => ({ n: 1 }), () => ({ next: { n: 2 }, result: 0 })).finally(() => (fs.writeSync = writeSync)).then(
    () => null,
    (e: unknown) => e,
  );
  t.match(err, { exitCode: 1, message: `writing ${file}: its file system is full (ENOSPC)`, hint: 'free space on it' });
  t.equal(readFileSync(file, 'utf8'), '{"n":1}\n', 'the file as it was');
  t.same(readdirSync(dir).sort(), ['state.json'], 'no temp file left, and the lock released');
});

t.test('lockRetries: the first retries come soon, and the waits add up to the timeout', async (t) => {
  const waits = (r: ReturnType<typeof lockRetries>) =>
    Array.from({ length: r.retries }, (_, i) => Math.min(r.maxTimeout, r.minTimeout * r.factor ** i));
  for (const timeoutMs of [1, 200, 300, 30_000]) {
    const w = waits(lockRetries(timeoutMs));
    const total = w.reduce((a, b) => a + b, 0);
    t.ok(total >= timeoutMs && total < timeoutMs + 100, `${timeoutMs} ms: ${w.length} retries waiting ${total} ms in all`);
  }
  t.same(waits(lockRetries(30_000)).slice(0, 6), [5, 10, 20, 40, 80, 100]);
});
