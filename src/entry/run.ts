import { fstatSync, readFileSync } from 'node:fs';
import { asVfpoolError, BadInputError, errnoOf, type VfpoolError } from '../errors.js';
import { captureStdio, writeStderr } from '../util/stdio.js';

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

/**
 * A file argument's text, or stdin's for `-` (the CLI's `--xml -`, `--description -`) and for
 * STDIN_ARG. Not readFileSync(0): it fails with EAGAIN on a non-blocking pipe whose writer is
 * slower than vfpool (`ssh host cat vm1.xml | vfpool prepare --xml=-`); readStdin waits.
 */
export async function readFileOrStdin(file: string): Promise<string> {
  if (file !== '-' && file !== STDIN_ARG) return readFileSync(file, 'utf8');
  return readStdin(0, undefined, { terminal: true });
}

/** readFileOrStdin for a file argument: a file that cannot be read is bad input, one line ending in `hint`. */
export async function readInputFile(file: string, hint = 'give the path of an XML file'): Promise<string> {
  try {
    return await readFileOrStdin(file);
  } catch (err) {
    throw new BadInputError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, hint);
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
export async function readStdin(fd = 0, stream?: AsyncIterable<unknown>, opts: { terminal?: boolean } = {}): Promise<string> {
  if (givenStdin !== null && fd === 0) return givenStdin;
  try {
    if (fstatSync(fd).isCharacterDevice() && !opts.terminal) return '';
  } catch {
    return '';
  }
  try {
    return readFileSync(fd, 'utf8');
  } catch (err) {
    // EAGAIN: stdin is non-blocking (a parent left it so, or anything in this process touched
    // process.stdin, which makes libuv set O_NONBLOCK on a pipe) and the writer has not written
    // yet: readFileSync gives up where the stream waits.
    if (errnoOf(err) !== 'EAGAIN') throw err;
  }
  const chunks: Buffer[] = [];
  // process.stdin only here: touching it loads the stream machinery the fast path avoids.
  for await (const c of stream ?? process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
