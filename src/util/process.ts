import { readFileSync } from 'node:fs';

/**
 * Whether a process exists and has not exited (EPERM means it exists, owned by someone else).
 * A zombie has exited: only its parent has not collected its status yet (an orchestrator that
 * started QEMU and never calls wait()), and kill(2) still finds it, so /proc says which it is.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    // Gone since kill(2) found it, or no /proc to ask: what kill(2) said.
    return true;
  }
  // The state is the field after the command name, which may hold spaces and parentheses.
  return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
}

/**
 * Milliseconds on a clock that only goes forward (CLOCK_MONOTONIC), for deadlines and durations:
 * the wall clock is stepped (NTP at boot, an administrator's `date -s`), and a deadline on it
 * expired at once after a step forward, or waited as long as the step back on top.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
