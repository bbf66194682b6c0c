import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { captureStdio, isTerminal, writeStderr, writeStdout, writeWhole } from '../../src/util/stdio.js';
import { scratchDir } from '../helpers/scratch.js';

/** A named pipe, opened here at both ends without blocking: the write end is a pipe fd of this process's own. */
function fifo(t: Test): { path: string; readEnd: number; writeEnd: number } {
  const path = join(scratchDir(t), 'pipe');
  const made = spawnSync('mkfifo', [path]);
  if (made.status !== 0) throw new Error(`mkfifo: ${made.stderr}`);
  const readEnd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeEnd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  return { path, readEnd, writeEnd };
}

t.test('in a test process the output is captured, and given back after', async (t) => {
  const out: string[] = [];
  const err: string[] = [];
  const outer = captureStdio({ out: (s) => out.push(`outer ${s}`), err: (s) => err.push(`outer ${s}`) });
  const inner = captureStdio({ out: (s) => out.push(s), err: (s) => err.push(s) });
  writeStdout('a\n');
  writeStderr('b\n');
  inner();
  writeStdout('c\n');
  outer();
  t.same(out, ['a\n', 'outer c\n']);
  t.same(err, ['b\n']);
});

t.test('a non-blocking pipe (as process.stdout leaves fd 1) whose reader comes late: every byte arrives, in order', async (t) => {
  const p = fifo(t);
  const copy = join(scratchDir(t), 'copy');
  // The reader opens the pipe only after 0.3 s: the pipe (64 KiB) is full long before.
  const reader = spawn('sh', ['-c', 'sleep 0.3; exec cat "$1" > "$2"', 'sh', p.path, copy], { stdio: 'ignore' });
  const text = Array.from({ length: 20_000 }, (_, i) => `line ${i} ${'é'.repeat(i % 7)}\n`).join('');
  t.equal(writeWhole(p.writeEnd, text), true);
  closeSync(p.writeEnd);
  closeSync(p.readEnd);
  await new Promise((resolve) => reader.on('close', resolve));
  t.ok(Buffer.byteLength(text) > 256 * 1024, 'more than a pipe holds');
  t.equal(readFileSync(copy, 'utf8'), text);
});

t.test('a pipe whose reader is gone: the output ends there, without an error', async (t) => {
  const p = fifo(t);
  closeSync(p.readEnd);
  t.equal(writeWhole(p.writeEnd, 'lost\n'), false, 'EPIPE: nothing thrown, told so (writeStdout then writes no more)');
  closeSync(p.writeEnd);
});

t.test('any other write error is thrown, with its errno', async (t) => {
  const fd = openSync('/dev/full', 'w');
  t.throws(() => writeWhole(fd, 'x'), { code: 'ENOSPC' });
  closeSync(fd);
});

t.test('a terminal is told from a pipe, a file and /dev/null without building process.stderr', async (t) => {
  const file = openSync(join(scratchDir(t), 'f'), 'w');
  t.equal(isTerminal(file), false, 'a file');
  closeSync(file);
  const devNull = openSync('/dev/null', 'w');
  t.equal(isTerminal(devNull), false, '/dev/null');
  closeSync(devNull);
  const p = fifo(t);
  t.equal(isTerminal(p.writeEnd), false, 'a pipe');
  closeSync(p.writeEnd);
  closeSync(p.readEnd);
  t.equal(isTerminal(987), false, 'no such descriptor');
  if (existsSync('/dev/ptmx')) {
    // A pseudo-terminal's master side: a terminal, as it is for isatty(3).
    const pty = openSync('/dev/ptmx', constants.O_RDWR | constants.O_NOCTTY);
    t.equal(isTerminal(pty), true, 'a pseudo-terminal');
    closeSync(pty);
  }
});
