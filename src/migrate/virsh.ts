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

/** The host UUID in `virsh capabilities`' answer, or null. */
function hostUuid(capabilities: string): string | null {
  return /<host>\s*<uuid>([0-9a-fA-F-]{36})<\/uuid>/.exec(capabilities)?.[1]?.toLowerCase() ?? null;
}

/**
 * The destination's libvirt answers, and is not this host's, asked before a migration changes
 * anything: found only by `virsh migrate` (a typo in the URI, a daemon not listening, this host
 * named as its own destination), the guest's plain VFs were unplugged and plugged back for
 * nothing, a moment without its NIC. This host is the default connection `virsh migrate` uses.
 */
export async function checkDestination(destUri: string, what: string): Promise<void> {
  const timeoutMs = 30_000;
  const dest = await runVirsh(['-c', destUri, 'capabilities'], what, timeoutMs);
  if (dest.exitCode !== 0) {
    throw new HostError(`${what}: the destination ${destUri} does not answer (virsh -c ${destUri} capabilities: ${virshFailure(dest, timeoutMs)})`, {
      hint: "nothing changed, the VFs stay in the guest: check the URI, and that the destination's libvirt daemon runs and accepts this connection",
    });
  }
  const here = await runVirsh(['capabilities'], what, timeoutMs);
  const uuid = hostUuid(dest.stdout);
  if (here.exitCode === 0 && uuid !== null && uuid === hostUuid(here.stdout)) {
    throw new HostError(`${what}: the destination ${destUri} is this host (libvirt host UUID ${uuid})`, {
      hint: 'nothing changed, the VFs stay in the guest: name another host (libvirt refuses to migrate a guest to the host it runs on)',
    });
  }
}
