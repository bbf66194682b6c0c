import { HostError } from '../errors.js';
import { startCommand, type CommandRunner } from '../qemu/command.js';

/** What a host without virsh needs, said when it cannot be started. */
const INSTALL = "install libvirt's client (Debian: apt-get install libvirt-clients)";

export interface VirshResult {
  /** 128 when virsh did not exit by itself (`timedOut`, `signal`). */
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  signal: string | null;
}

/**
 * `virsh ARGS`, without a shell, bounded by `timeoutMs`, on the caller's PATH (a person or a
 * script runs `vfpool migrate`, never libvirt's bare hook environment; the tests put their
 * virsh first on it). Started through startCommand: a virsh that could not be started at all
 * (ENOENT: not installed; EACCES: not executable) is one line saying so and what to install,
 * where execa's reject:false answer had no exit code ("failed: exit undefined").
 */
export async function runVirsh(args: string[], what: string, timeoutMs: number): Promise<VirshResult> {
  let ended: Pick<VirshResult, 'timedOut' | 'signal'> = { timedOut: false, signal: null };
  const run: CommandRunner = async (file, argv) => {
    const { execa } = await import('execa'); // loaded only when used (CLI start-up)
    const r = await execa(file, argv, { reject: false, timeout: timeoutMs, env: { LC_ALL: 'C' } });
    if (r.exitCode === undefined && !r.isTerminated) throw Object.assign(new Error(r.originalMessage || r.shortMessage), { code: r.code ?? 'ECOMMAND' });
    ended = { timedOut: r.timedOut, signal: r.signal ?? null };
    return { exitCode: r.exitCode ?? 128, stdout: String(r.stdout), stderr: String(r.stderr) };
  };
  return { ...(await startCommand(run, 'virsh', args, what, INSTALL, `the PATH vfpool was run with: ${process.env.PATH ?? '(none)'}`)), ...ended };
}

/** Why a virsh that ran did not succeed: what it said on stderr, else how it ended. */
export function virshFailure(r: VirshResult, timeoutMs: number): string {
  if (r.timedOut) return `no answer within ${timeoutMs / 1000} s, stopped`;
  return r.stderr.trim() || (r.signal !== null ? `ended by ${r.signal}` : `exit ${r.exitCode}`);
}

/**
 * Whether virsh can be started here, asked before a migration changes anything: found missing
 * only at `virsh migrate`, the domain's VFs would already have left the guest.
 */
export async function checkVirsh(what: string): Promise<void> {
  const timeoutMs = 30_000;
  const r = await runVirsh(['--version'], what, timeoutMs);
  if (r.exitCode !== 0) throw new HostError(`${what}: virsh --version failed: ${virshFailure(r, timeoutMs)}`, { hint: 'check the virsh on PATH (Debian: libvirt-clients) before migrating' });
}
