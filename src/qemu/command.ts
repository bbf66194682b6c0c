import { errnoOf, HostError } from '../errors.js';

/** Where the production runner finds prlimit, mknod and bpftool: hooks run with libvirt's bare environment. */
export const COMMAND_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs one command without a shell. Injected so unit tests see the exact argv. A command that
 * could not be started at all (not installed) rejects, with the errno as `code`, as Node's spawn
 * does; a command that ran resolves with its exit status, whatever it is.
 */
export type CommandRunner = (file: string, args: string[]) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

/**
 * `run(file, args)`, a command that could not be started told as one sentence: for ENOENT where
 * to get it (`install`, e.g. "apt-get install bpftool"), for any other errno (EACCES: not
 * executable by this user) what it must be. A command that ran is returned whatever its status.
 * `searched` says where the runner looked (COMMAND_PATH for the hooks' commands).
 */
export async function startCommand(run: CommandRunner, file: string, args: string[], what: string, install: string, searched = COMMAND_PATH) {
  try {
    return await run(file, args);
  } catch (err) {
    const code = errnoOf(err);
    throw new HostError(`${what}: running ${file} failed: ${(err as Error).message}`, {
      code,
      hint: code === 'ENOENT' ? `${file} is not installed where vfpool looks (${searched}): ${install}` : `${file} could not be started: it must be an executable vfpool's user can run, in ${searched}`,
      cause: err,
    });
  }
}

/** startCommand, and a command that ran but failed told with its status and the first line it printed on stderr. */
export async function runOrFail(run: CommandRunner, file: string, args: string[], what: string, install: string) {
  const r = await startCommand(run, file, args, what, install);
  if (r.exitCode !== 0) throw new HostError(`${what}: ${file} ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.trim().split('\n')[0] ?? ''}`, { code: 'ECOMMAND' });
  return r;
}
