import { fstatSync, readFileSync } from 'node:fs';
import { asVfpoolError, errnoOf, type VfpoolError } from '../errors.js';

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
    process.stderr.write('vfpool: exited before the operation finished: this is a vfpool bug; please report it with the log\n');
    process.exitCode = 1;
  };
  process.once('exit', unfinished);
  try {
    process.exitCode = await main();
  } catch (err) {
    const e = asVfpoolError(err);
    onError?.(e);
    process.stderr.write(`vfpool: ${e.toLine()}\n`);
    if (process.env.VFPOOL_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
    process.exitCode = e.exitCode;
  } finally {
    settled = true;
    // Settled: the guard has nothing left to say (and a process that runs several mains, such
    // as the in-process CLI tests, must not collect one listener per run).
    process.off('exit', unfinished);
  }
}

/**
 * The whole of stdin. Read with readFileSync on fd 0, not through process.stdin: libvirt hands
 * hooks a pipe, and the stream machinery behind process.stdin (net, stream, tty: even
 * node:tty's isatty loads net) is a good part of a hook's start-up. A terminal (a character
 * device: a person ran the hook by hand) or a closed stdin gives nothing, unless `terminal`
 * (the CLI's `-`: a person may type or paste the XML).
 */
export async function readStdin(opts: { terminal?: boolean } = {}): Promise<string> {
  try {
    if (fstatSync(0).isCharacterDevice() && !opts.terminal) return '';
  } catch {
    return '';
  }
  try {
    return readFileSync(0, 'utf8');
  } catch (err) {
    // EAGAIN: stdin is non-blocking (a parent left it so, or anything in this process touched
    // process.stdin, which makes libuv set O_NONBLOCK on a pipe) and the writer has not written
    // yet: readFileSync gives up where the stream waits.
    if (errnoOf(err) !== 'EAGAIN') throw err;
  }
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
