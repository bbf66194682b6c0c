import { runPlainCommand } from '../../src/entry/cli/fast-path.js';
import { buildProgram } from '../../src/entry/cli/program.js';
import { runInProcess, type InProcessRun } from '../../src/entry/run.js';

export type CliResult = InProcessRun;

/** The part of yargs' internals (not in its types) that holds the help a command run caches. */
interface YargsInternals {
  getInternalMethods(): { getUsageInstance(): { cacheHelpMessage(): void } };
}

/**
 * Runs `vfpool ARGV` inside the test's own process (so tap's coverage sees the CLI's code),
 * with `env` laid over process.env, `stdin` as its standard input and stdout/stderr captured.
 * The spawned-process tests (cli.test.ts, cli-conventions.test.ts) cover the bundle; these
 * cover each command's branches quickly. A usage error ends in process.exit(2) in the real
 * CLI: here exit throws, and the code is kept. Runs must not overlap (env is global): a test
 * of several CLIs at once spawns them (vfpoolCli). A plain command line takes the installed
 * CLI's way, without yargs (src/entry/cli/fast-path.ts); the rest goes through yargs.
 */
export function runCliInProcess(argv: string[], env: Record<string, string>, stdin?: string): Promise<CliResult> {
  return runInProcess(async () => {
    const plain = runPlainCommand(argv);
    if (plain) return plain;
    const program = buildProgram(argv).exitProcess(false);
    // As the installed bundle runs (scripts/bundle.mjs, yargsLeaner): yargs lays out the whole
    // help of a command after running it, in case the handler asks for it later; vfpool's never
    // do. The bundle leaves that out; here it was ~40% of an in-process `vfpool status`.
    (program as unknown as YargsInternals).getInternalMethods().getUsageInstance().cacheHelpMessage = () => {};
    await program.parseAsync();
  }, { env, ...(stdin !== undefined ? { stdin } : {}) });
}

/** vfpoolCli's signature (test/helpers/spawn.ts), in-process: a drop-in where the process is not what is tested. */
export function cli(args: string[], opts: { env: Record<string, string>; stdin?: string }): Promise<CliResult> {
  return runCliInProcess(args, opts.env, opts.stdin);
}
