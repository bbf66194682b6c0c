import t from 'tap';
import fs, { mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { LockTimeoutError } from '../../src/errors.js';
import { readJsonFile, updateJsonFileLocked, writeJsonFileAtomic } from '../../src/util/json-file.js';
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

t.test('a lock held across a forward step of the wall clock is not taken while its holder lives', async (t) => {
  // NTP stepping the clock at boot, while libvirt autostarts guests: the lock directory's mtime
  // falls far behind Date.now(), which is all proper-lockfile judges staleness by.
  const file = join(scratchDir(t), 'state.json');
  const order: string[] = [];
  let finishFirst!: () => void;
  const first = updateJsonFileLocked(file, () => ({ n: 0 }), async (cur: { n: number }) => {
    order.push('first in');
    await new Promise<void>((r) => (finishFirst = r));
    order.push('first out');
    return { next: { n: cur.n + 1 }, result: 0 };
  });
  while (!finishFirst) await new Promise((r) => setTimeout(r, 5));
  const stepped = new Date(Date.now() - 3600_000);
  utimesSync(`${file}.lock`, stepped, stepped);
  const second = updateJsonFileLocked(file, (): { n: number } => JSON.parse(readFileSync(file, 'utf8')), (cur: { n: number }) => {
    order.push('second in');
    return { next: { n: cur.n + 1 }, result: 0 };
  });
  await new Promise((r) => setTimeout(r, 300));
  t.same(order, ['first in'], 'the second waits for the live holder');
  finishFirst();
  await Promise.all([first, second]);
  t.same(order, ['first in', 'first out', 'second in']);
  t.same(JSON.parse(readFileSync(file, 'utf8')), { n: 2 }, 'no update lost');
});

t.test('a lock whose holder file names a process that is gone, or a reused pid, is taken over at once', async (t) => {
  const file = join(scratchDir(t), 'state.json');
  const real = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const myStart = Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19]);
  const holders = [
    // This very process's pid, recorded with another start time: the pid was reused.
    { pid: process.pid, start: myStart + 1, boot: real, what: 'net-start p' },
    // This process's pid and start time, but of an earlier boot (a state directory on disk).
    { pid: process.pid, start: myStart, boot: '00000000-0000-0000-0000-000000000000', what: 'net-start p' },
  ];
  for (const holder of holders) {
    mkdirSync(`${file}.lock`);
    writeFileSync(join(`${file}.lock`, 'holder'), JSON.stringify(holder) + '\n');
    const began = performance.now();
    t.equal(await updateJsonFileLocked(file, () => ({}), () => ({ result: 7 }), { timeoutMs: 5_000, staleMs: 10_000 }), 7);
    t.ok(performance.now() - began < 1_000, 'at once');
  }
  // The same process, alive: waited for, and named.
  mkdirSync(`${file}.lock`);
  writeFileSync(join(`${file}.lock`, 'holder'), JSON.stringify({ pid: process.pid, start: myStart, boot: real, what: 'net-start p' }) + '\n');
  await t.rejects(updateJsonFileLocked(file, () => ({}), () => ({ result: 1 }), { timeoutMs: 200, staleMs: 10_000 }), {
    exitCode: 3,
    message: `lock ${file}.lock is held by vfpool pid ${process.pid} (net-start p) (waited 0 s)`,
    hint: `try again once pid ${process.pid} is done`,
  });
});

t.test('a lock taken while held without its holder being gone: the write is refused, nothing overwritten', async (t) => {
  const file = join(scratchDir(t), 'state.json');
  writeFileSync(file, '{"n":1}\n');
  const err = await updateJsonFileLocked(file, () => ({ n: 1 }), async () => {
    // Another process (an older vfpool judging by the mtime, or a hand) replaces the lock.
    rmSync(`${file}.lock`, { recursive: true });
    mkdirSync(`${file}.lock`);
    // Its own mtime (within a tick of the first directory's, proper-lockfile would take it for its own).
    const other = new Date(Date.now() - 5_000);
    utimesSync(`${file}.lock`, other, other);
    await new Promise((r) => setTimeout(r, 1_300));
    return { next: { n: 2 }, result: 0 };
  }, { timeoutMs: 1_000, staleMs: 2_000 }).then(() => null, (e: unknown) => e);
  t.match(err, { exitCode: 3, message: `lock ${file}.lock was removed by another process while this one held it; ${file} was not written` });
  t.equal(readFileSync(file, 'utf8'), '{"n":1}\n');
});
