import { readFileSync } from 'node:fs';

/**
 * Whether a process exists and has not exited (EPERM means it exists, owned by someone else).
 * A zombie has exited: only its parent has not collected its status yet (an orchestrator that
 * started QEMU and never calls wait()), and kill(2) still finds it, so /proc says which it is.
 */
export function isAlive(pid: number): boolean {
  if (!signalReaches(pid)) return false;
  const stat = readStat(pid);
  // Gone since kill(2) found it, or no /proc to ask: what kill(2) said.
  return stat === null || !isZombie(stat);
}

/** kill(pid, 0): the process exists (EPERM: owned by someone else, but there). */
function signalReaches(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return true;
}

function readStat(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
}

// The fields after the command name (field 2, which may hold spaces and parentheses), from field 3 on.
function fieldsAfterName(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function isZombie(stat: string): boolean {
  return fieldsAfterName(stat)[0] === 'Z';
}

function startOf(stat: string): number | null {
  const start = Number(fieldsAfterName(stat)[19]);
  return Number.isSafeInteger(start) ? start : null;
}

/**
 * Milliseconds on a clock that only goes forward (CLOCK_MONOTONIC), for deadlines and durations:
 * the wall clock is stepped (NTP at boot, an administrator's `date -s`), and a deadline on it
 * expired at once after a step forward, or waited as long as the step back on top.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

/**
 * When a process started, in clock ticks since boot (field 22 of /proc/PID/stat), or null when
 * it is gone or there is no /proc. With the pid it names one process for the whole boot: a pid
 * is reused once pid_max wraps (after a reboot at once), a start time within a boot never.
 */
export function processStartTicks(pid: number): number | null {
  const stat = readStat(pid);
  return stat === null ? null : startOf(stat);
}

let selfStart: number | null | undefined;

/** This process's start time (processStartTicks), recorded with its pid wherever it names itself the worker. */
export function selfStartTicks(): number | null {
  if (selfStart === undefined) selfStart = processStartTicks(process.pid);
  return selfStart;
}

let cachedBootId: string | null | undefined;

/** This boot of the kernel (/proc/sys/kernel/random/boot_id, new at every boot), or null without /proc. */
export function kernelBootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      cachedBootId = null;
    }
  }
  return cachedBootId;
}

/**
 * Whether the process recorded as `pid` (started at `startTicks`, in boot `boot`) still runs:
 * alive, and the same process, not another one given its pid since. A record without a start
 * time or a boot (written before they were kept) is judged by the pid alone.
 */
export function isSameProcessAlive(pid: number, startTicks: number | null | undefined, boot?: string | null): boolean {
  if (boot && kernelBootId() !== null && boot !== kernelBootId()) return false;
  if (!signalReaches(pid)) return false;
  // /proc/PID/stat read once for both questions: exited (a zombie), and the same process.
  const stat = readStat(pid);
  if (stat === null) return true;
  if (isZombie(stat)) return false;
  if (startTicks === null || startTicks === undefined) return true;
  const now = startOf(stat);
  return now === null || now === startTicks;
}
