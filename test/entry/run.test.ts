import t from 'tap';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, ConflictError } from '../../src/errors.js';
import { InputTooLarge, readFileOrStdin, readInputFile, readStdin, runEntry, runInProcess } from '../../src/entry/run.js';

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

t.test('a file argument or stdin over 4 MiB (bytes) is refused while it is read: one line, exit 2', async (t) => {
  // Reproduced: the limit counted characters, so 6 MiB of a 2-byte script was read and used,
  // and `vfpool net-define /dev/zero` read until the process died (std::bad_alloc).
  const dir = t.testdir({});
  const big = join(dir, 'big.xml');
  const description = 'é'.repeat(3 * 1048576); // 3 Mi characters, 6 MiB
  writeFileSync(big, `<network><name>q</name><description>${description}</description></network>`);
  const hint = 'libvirt domain and network XML and migration descriptions are a few kB: check the input';
  await t.rejects(readInputFile(big), { constructor: BadInputError, message: `${big} holds more than 4 MiB, more than vfpool reads`, hint });
  await t.rejects(readInputFile('/dev/zero'), { constructor: BadInputError, message: '/dev/zero holds more than 4 MiB, more than vfpool reads' }, 'an endless file: refused at 4 MiB');
  const r = await runInProcess(() => runEntry(async () => { await readInputFile('-'); return 0; }), { env: {}, stdin: description });
  t.same(r, { exitCode: 2, stdout: '', stderr: `vfpool: stdin holds more than 4 MiB, more than vfpool reads: ${hint}\n` }, 'stdin, counted in bytes');
  const fourMiB = 'é'.repeat(2 * 1048576);
  t.equal((await runInProcess(async () => { process.stdout.write(String((await readFileOrStdin('-')).length)); }, { env: {}, stdin: fourMiB })).stdout, String(2 * 1048576), 'exactly 4 MiB is read');
  // A non-blocking pipe read as a stream past its first chunks: counted together.
  async function* stream() { yield Buffer.alloc(3 * 1048576, 0x20); yield Buffer.alloc(1048576 + 1, 0x20); }
  const fifo = join(dir, 'fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const rd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const wr = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  t.teardown(() => { closeSync(rd); closeSync(wr); });
  await t.rejects(readStdin(rd, stream(), { limit: 4 * 1048576 }), { constructor: InputTooLarge, message: '' }, 'the stream past the limit');
  t.equal((await readStdin(rd, stream())).length, 4 * 1048576 + 1, 'a hook\'s stdin has no limit here (parseXml refuses what it parses)');
});
