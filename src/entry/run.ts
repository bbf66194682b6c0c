import { asVfpoolError, type VfpoolError } from '../errors.js';

/**
 * The one exit-code boundary: every entry point's main runs inside it. A VfpoolError becomes
 * its exit code and one line on stderr (libvirt shows a hook's stderr to the user verbatim).
 */
export async function runEntry(main: () => Promise<number>, onError?: (e: VfpoolError) => void): Promise<void> {
  try {
    process.exitCode = await main();
  } catch (err) {
    const e = asVfpoolError(err);
    onError?.(e);
    process.stderr.write(`vfpool: ${e.toLine()}\n`);
    if (process.env.VFPOOL_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
    process.exitCode = e.exitCode;
  }
}

export async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
