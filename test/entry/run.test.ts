import t from 'tap';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, ConflictError } from '../../src/errors.js';
import { readFileOrStdin, readStdin, runEntry, runInProcess } from '../../src/entry/run.js';

/** The one exit-code boundary and stdin, in-process (the spawned entries run them in test/entry/*.test.ts). */
t.test('runEntry: main\'s code; a VfpoolError as its code and one line; anything else is a bug, exit 1', async (t) => {
  t.same(await runInProcess(() => runEntry(async () => 0), { env: {} }), { exitCode: 0, stdout: '', stderr: '' });
  t.same(await runInProcess(() => runEntry(async () => { throw new BadInputError("pool 'p': bad", 'fix it'); }), { env: {} }), { exitCode: 2, stdout: '', stderr: "vfpool: pool 'p': bad: fix it\n" });
  let seen: unknown;
  const conflict = await runInProcess(() => runEntry(async () => { throw new ConflictError('held'); }, (e) => { seen = e.exitCode; }), { env: {} });
  t.same([conflict.exitCode, seen], [3, 3], 'onError sees the error first');
  const bug = await runInProcess(() => runEntry(async () => { throw new TypeError('x is undefined'); }), { env: {} });
  t.equal(bug.exitCode, 1);
  t.match(bug.stderr, /^vfpool: .*x is undefined.*bug/);
  const debug = await runInProcess(() => runEntry(async () => { throw new TypeError('boom'); }), { env: { VFPOOL_DEBUG: '1' } });
  t.match(debug.stderr, /\nInternalError: unexpected error: boom\n\s+at /, 'VFPOOL_DEBUG adds the stack');
});

t.test('a main that never settles: at exit the guard says so and fails', async (t) => {
  const before = process.listeners('exit');
  void runEntry(() => new Promise<number>(() => {}));
  const guard = process.listeners('exit').find((l) => !before.includes(l))!;
  t.ok(guard, 'a guard is registered while main runs');
  process.off('exit', guard);
  const r = await runInProcess(async () => { (guard as () => void)(); }, { env: {} });
  t.same(r, { exitCode: 1, stdout: '', stderr: 'vfpool: exited before the operation finished: this is a vfpool bug; please report it with the log\n' });
  const settled = process.listeners('exit').length;
  await runEntry(async () => 0);
  t.equal(process.listeners('exit').length, settled, 'a settled main leaves no listener behind');
  process.exitCode = undefined;
});

t.test('readStdin: a pipe or file; a terminal or closed stdin is empty; a non-blocking one is read as a stream', async (t) => {
  const dir = t.testdir({ 'in.xml': '<domain/>' });
  const file = openSync(join(dir, 'in.xml'), 'r');
  t.equal(await readStdin(file), '<domain/>');
  closeSync(file);
  const tty = openSync('/dev/null', 'r'); // a character device, as a terminal is
  t.equal(await readStdin(tty), '');
  closeSync(tty);
  t.equal(await readStdin(999), '', 'no such descriptor');
  // A FIFO opened non-blocking with its writer open and nothing written: read() says EAGAIN.
  const fifo = join(dir, 'fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const w = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  t.teardown(() => { closeSync(r); closeSync(w); });
  async function* stream() { yield Buffer.from('<hook'); yield Buffer.from('Data/>'); }
  t.equal(await readStdin(r, stream()), '<hookData/>');
  writeFileSync(join(dir, 'x'), 'text');
  t.equal(await readFileOrStdin(join(dir, 'x')), 'text');
  t.equal((await runInProcess(async () => { process.stdout.write((await readFileOrStdin('-')) + (await readStdin())); }, { env: {}, stdin: 'given' })).stdout, 'givengiven', 'in-process: the given stdin');
});
