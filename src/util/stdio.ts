import { fstatSync, writeSync } from 'node:fs';
import { lazyTty } from './lazy-builtins.js';

// vfpool's own output goes to fds 1 and 2 by synchronous writes, not through process.stdout and
// process.stderr: on a pipe or a socket (libvirt reading a hook, the QEMU wrapper's shim reading
// its `$(…)`, a script reading the CLI) the first touch of either builds a net.Socket, which
// loads node:net and Node's stream machinery (28 modules, ~7 ms of CPU measured around a
// one-line write) for a line or two. Node's own streams write to pipes and files synchronously
// too, so nothing changes in what is written or in what order.

/** Where the output goes when an entry runs inside a test process (runInProcess). */
interface Capture {
  out: (text: string) => void;
  err: (text: string) => void;
}
let capture: Capture | null = null;
/** A reader gone (EPIPE: `vfpool status | head -1`) ends that output, silently, as for cat(1) under a shell. */
const readerGone = { 1: false, 2: false };

export function writeStdout(text: string): void {
  if (capture) capture.out(text);
  else if (!readerGone[1]) readerGone[1] = !writeWhole(1, text);
}

export function writeStderr(text: string): void {
  if (capture) {
    capture.err(text);
    return;
  }
  try {
    if (!readerGone[2]) readerGone[2] = !writeWhole(2, text);
  } catch {
    // No stderr to say it on (closed, a full disk): the exit status still tells.
  }
}

/** Sends writeStdout and writeStderr to `to` until the returned function is called. */
export function captureStdio(to: Capture): () => void {
  const before = capture;
  capture = to;
  return () => {
    capture = before;
  };
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/** Writes all of `text` to `fd` (exported for its tests); false when the reader is gone (EPIPE). */
export function writeWhole(fd: number, text: string): boolean {
  const bytes = Buffer.from(text, 'utf8');
  for (let done = 0; done < bytes.length; ) {
    try {
      done += writeSync(fd, bytes, done, bytes.length - done);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPIPE') return false;
      // A pipe another process left non-blocking, full: wait for its reader as a blocking write would.
      if (code !== 'EAGAIN') throw err;
      Atomics.wait(pause, 0, 0, 2);
    }
  }
  return true;
}

/**
 * Whether `fd` is a terminal (stderr: where the CLI shows progress), without building
 * process.stderr on a pipe or a file: only a character device other than the memory devices
 * (/dev/null, major 1) is asked, through node:tty (which loads node:net), as isTTY would.
 */
export function isTerminal(fd: number): boolean {
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    return false;
  }
  const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
  if (!st.isCharacterDevice() || major === 1) return false;
  return lazyTty().isatty(fd);
}
