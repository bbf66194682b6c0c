import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { asVfpoolError, BadInputError, errnoOf, type VfpoolError } from '../errors.js';
import { captureStdio, writeStderr } from '../util/stdio.js';
import { MAX_XML_BYTES } from '../util/xml.js';

/**
 * The one exit-code boundary: every entry point's main runs inside it. A VfpoolError becomes
 * its exit code and one line on stderr (libvirt shows a hook's stderr to the user verbatim).
 */
export async function runEntry(main: () => Promise<number>, onError?: (e: VfpoolError) => void): Promise<void> {
  // The hooks are CommonJS bundles (no top-level await): should main ever wait on a promise
  // that nothing can settle, Node would exit with status 0 and libvirt would go on as if the
  // work were done. Say so and fail instead.
  let settled = false;
  const unfinished = () => {
    if (settled) return;
    writeStderr('vfpool: exited before the operation finished: this is a vfpool bug; please report it with the log\n');
    process.exitCode = 1;
  };
  process.once('exit', unfinished);
  try {
    process.exitCode = await main();
  } catch (err) {
    const e = asVfpoolError(err);
    onError?.(e);
    writeStderr(`vfpool: ${e.toLine()}\n`);
    if (process.env.VFPOOL_DEBUG && e.stack) writeStderr(`${e.stack}\n`);
    process.exitCode = e.exitCode;
  } finally {
    settled = true;
    // Settled: the guard has nothing left to say (and a process that runs several mains, such
    // as the in-process CLI tests, must not collect one listener per run).
    process.off('exit', unfinished);
  }
}

/**
 * What an entry run in-process is given as stdin (runInProcess): fd 0 is then the test
 * runner's, not the caller's. null: read fd 0.
 */
let givenStdin: string | null = null;

/**
 * What a lone `-` argument becomes before yargs sees it: yargs turns a positional `-` into an
 * empty string (`net-define -` read the file ''), so the CLI hands it over as this path instead.
 */
export const STDIN_ARG = '/dev/stdin';

/** Thrown by a bounded read at the first byte past its limit. */
export class InputTooLarge extends Error {}

/**
 * A file argument's text, or stdin's for `-` (the CLI's `--xml -`, `--description -`) and for
 * STDIN_ARG, read only up to `limit` bytes: more is refused while it is read, not after the
 * whole of /dev/zero or a wrong file filled memory (the XML parser refuses that much anyway).
 * Not readFileSync(0): it fails with EAGAIN on a non-blocking pipe whose writer is slower than
 * vfpool (`ssh host cat vm1.xml | vfpool prepare --xml=-`); readStdin waits.
 */
export async function readFileOrStdin(file: string, limit = MAX_XML_BYTES): Promise<string> {
  if (file !== '-' && file !== STDIN_ARG) {
    const fd = openSync(file, 'r');
    try {
      const chunks: Buffer[] = [];
      readChunksSync(fd, chunks, limit);
      return Buffer.concat(chunks).toString('utf8');
    } finally {
      closeSync(fd);
    }
  }
  return readStdin(0, undefined, { terminal: true, limit });
}

/** readFileOrStdin for a file argument: a file that cannot be read is bad input, one line ending in `hint`. */
export async function readInputFile(file: string, hint = 'give the path of an XML file'): Promise<string> {
  try {
    return await readFileOrStdin(file);
  } catch (err) {
    if (err instanceof InputTooLarge) {
      throw new BadInputError(`${file === STDIN_ARG || file === '-' ? 'stdin' : file} holds more than ${MAX_XML_BYTES / 1048576} MiB, more than vfpool reads`, 'libvirt domain and network XML and migration descriptions are a few kB: check the input');
    }
    throw new BadInputError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, hint);
  }
}

/** Appends what `fd` holds to `chunks` until its end; InputTooLarge past `limit` bytes (counted with what `chunks` had). */
function readChunksSync(fd: number, chunks: Buffer[], limit: number): void {
  let total = chunks.reduce((n, c) => n + c.length, 0);
  for (;;) {
    const buf = Buffer.allocUnsafe(65536);
    const n = readSync(fd, buf, 0, buf.length, null);
    if (n === 0) return;
    total += n;
    if (total > limit) throw new InputTooLarge();
    chunks.push(n === buf.length ? buf : buf.subarray(0, n));
  }
}

export interface InProcessRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs an entry's main inside the calling process, as its own process would run: `env` laid
 * over process.env (without its VFPOOL_* settings), `stdin` as its standard input, stdout and stderr captured, process.exit
 * and process.exitCode turned into the returned exitCode; everything restored after. For the
 * tests (tap's coverage sees only its own process); runs must not overlap (env is global).
 */
export async function runInProcess(main: () => Promise<void>, opts: { env: Record<string, string>; stdin?: string }): Promise<InProcessRun> {
  const savedEnv = { ...process.env };
  const out: string[] = [];
  const err: string[] = [];
  const realOut = process.stdout.write;
  const realErr = process.stderr.write;
  const realExit = process.exit;
  const savedStdin = givenStdin;
  let exitCode: number | undefined;
  class Exit extends Error {}
  // Only the given VFPOOL_* settings count, as in a spawned entry's environment.
  for (const k of Object.keys(process.env)) if (k.startsWith('VFPOOL_')) delete process.env[k];
  Object.assign(process.env, opts.env);
  givenStdin = opts.stdin ?? '';
  // vfpool writes to fds 1 and 2 itself (src/util/stdio.ts); yargs (help, completion) through process.stdout.
  const uncapture = captureStdio({ out: (text) => out.push(text), err: (text) => err.push(text) });
  process.stdout.write = ((chunk: string | Uint8Array) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => (err.push(String(chunk)), true)) as typeof process.stderr.write;
  process.exit = ((code?: number) => {
    exitCode = code ?? 0;
    throw new Exit();
  }) as typeof process.exit;
  process.exitCode = undefined;
  try {
    await main();
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
  } finally {
    uncapture();
    process.stdout.write = realOut;
    process.stderr.write = realErr;
    process.exit = realExit;
    givenStdin = savedStdin;
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    Object.assign(process.env, savedEnv);
  }
  const code = exitCode ?? Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return { exitCode: code, stdout: out.join(''), stderr: err.join('') };
}

/**
 * The whole of stdin. Read with readFileSync on fd 0, not through process.stdin: libvirt hands
 * hooks a pipe, and the stream machinery behind process.stdin (net, stream, tty: even
 * node:tty's isatty loads net) is a good part of a hook's start-up. A terminal (a character
 * device: a person ran the hook by hand) or a closed stdin gives nothing, unless `terminal`
 * (the CLI's `-`: a person may type or paste the XML).
 */
export async function readStdin(fd = 0, stream?: AsyncIterable<unknown>, opts: { terminal?: boolean; limit?: number } = {}): Promise<string> {
  const limit = opts.limit ?? Infinity;
  if (givenStdin !== null && fd === 0) {
    if (Buffer.byteLength(givenStdin) > limit) throw new InputTooLarge();
    return givenStdin;
  }
  try {
    if (fstatSync(fd).isCharacterDevice() && !opts.terminal) return '';
  } catch {
    return '';
  }
  const chunks: Buffer[] = [];
  try {
    readChunksSync(fd, chunks, limit);
    return Buffer.concat(chunks).toString('utf8');
  } catch (err) {
    // EAGAIN: stdin is non-blocking (a parent left it so, or anything in this process touched
    // process.stdin, which makes libuv set O_NONBLOCK on a pipe) and the writer has not written
    // yet: a synchronous read gives up where the stream waits. What was read is kept.
    if (errnoOf(err) !== 'EAGAIN') throw err;
  }
  let total = chunks.reduce((n, c) => n + c.length, 0);
  // process.stdin only here: touching it loads the stream machinery the fast path avoids.
  for await (const c of stream ?? process.stdin) {
    total += (c as Buffer).length;
    if (total > limit) throw new InputTooLarge();
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
