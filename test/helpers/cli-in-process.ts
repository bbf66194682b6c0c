import { buildProgram } from '../../src/entry/cli/program.js';

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `vfpool ARGV` inside the test's own process (so tap's coverage sees the CLI's code),
 * with `env` laid over process.env and stdout/stderr captured. The spawned-process tests
 * (cli.test.ts) cover the bundle; these cover each command's branches quickly.
 * A usage error ends in process.exit(2) in the real CLI: here exit throws, and the code is kept.
 */
export async function runCliInProcess(argv: string[], env: Record<string, string>): Promise<CliResult> {
  const saved = { ...process.env };
  const out: string[] = [];
  const err: string[] = [];
  const realOut = process.stdout.write.bind(process.stdout);
  const realErr = process.stderr.write.bind(process.stderr);
  const realExit = process.exit;
  let exitCode: number | undefined;
  class Exit extends Error {}
  Object.assign(process.env, env);
  process.stdout.write = ((chunk: string | Uint8Array) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => (err.push(String(chunk)), true)) as typeof process.stderr.write;
  process.exit = ((code?: number) => {
    exitCode = code ?? 0;
    throw new Exit();
  }) as typeof process.exit;
  process.exitCode = undefined;
  try {
    await buildProgram(argv).exitProcess(false).parseAsync();
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
  } finally {
    process.stdout.write = realOut;
    process.stderr.write = realErr;
    process.exit = realExit;
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
  const code = exitCode ?? Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return { exitCode: code, stdout: out.join(''), stderr: err.join('') };
}
