import type { Allocation, PortRecord } from '../state/schema.js';
import { isSameProcessAlive, monotonicMs, processStartTicks } from '../util/process.js';
import { readLibvirtPid, type LibvirtRuntimePaths } from './libvirt-runtime.js';

/**
 * Whether the owner of a record that makes a VF "in use" still exists. Decided wherever "in use"
 * is decided (the allocator, a pool's start and stop, reconcile), not only by `vfpool
 * reconcile`: libvirt skips hook calls (no `port-deleted` for a network that is no longer
 * active, none at all after a daemon crash, a failed start or a domain undefined while it
 * ran), and a record whose owner is gone would otherwise pin its VF until someone reconciles.
 */
export const DEFAULT_RECONCILE_GRACE_MS = 120_000;

export interface Verdict {
  keep: boolean;
  reason: string;
  /** A pid learnt from libvirt's pid file, to record. */
  adoptPid?: number;
}

/** A QEMU pid as a record keeps it: with its start time once vfpool records that too. */
export interface RecordedPid {
  pid: number | null;
  pidStart?: number | null;
}

/** Records QEMU's pid with its start time: the record then names that process, not whichever is given its pid later. */
export function recordPid(r: RecordedPid, pid: number): void {
  r.pid = pid;
  r.pidStart = processStartTicks(pid);
}

/** Whether the recorded QEMU still runs: the same process, not another one given its pid since. */
export function recordedQemuRuns(r: RecordedPid & { pid: number }): boolean {
  return isSameProcessAlive(r.pid, r.pidStart);
}

/**
 * The policy above, for one allocation. Pure but for the liveness checks it is given: `alive`
 * is asked about a recorded QEMU with its start time (another process given its pid is not it).
 */
export function judgeAllocation(
  a: Allocation,
  env: {
    alive: (pid: number, start?: number | null) => boolean;
    libvirtPid: (domain: string) => number | null;
    now: number;
    /** monotonicMs() now: a record's age by it, when the record has its own. */
    mono?: number;
    graceMs: number;
    self: number;
    /** A `vfpool prepare`d domain whose QEMU ran through the wrapper and is gone (its QMP socket refuses). */
    cliQemuGone?: (domain: string) => boolean;
  },
): Verdict {
  if (a.worker && a.worker !== env.self && env.alive(a.worker, a.workerStart)) return { keep: true, reason: `vfpool (pid ${a.worker}) is working on it now` };
  if (a.phase === 'releasing') return { keep: false, reason: `its release did not finish${a.lastError ? ` (${a.lastError})` : ''}` };
  if (a.phase === 'preparing') return { keep: false, reason: `its prepare was interrupted${a.worker ? ` (vfpool pid ${a.worker} is gone)` : ''}` };
  if (a.owner.pid !== null) {
    return env.alive(a.owner.pid, a.owner.pidStart) ? { keep: true, reason: `QEMU pid ${a.owner.pid} runs` } : { keep: false, reason: `QEMU pid ${a.owner.pid} is gone` };
  }
  if (a.owner.via === 'cli') {
    if (env.cliQemuGone?.(a.owner.domain)) return { keep: false, reason: `its QEMU, run through vfpool-qemu, is gone (nobody serves its QMP socket)` };
    return { keep: true, reason: `prepared with \`vfpool prepare\` and no --pid: free it with \`vfpool release ${a.owner.domain}\`` };
  }
  const pid = env.libvirtPid(a.owner.domain);
  if (pid !== null) return { keep: true, reason: `QEMU pid ${pid} (libvirt's pid file) runs`, adoptPid: pid };
  // A libvirt daemon killed or restarted between prepare and QEMU's start never starts it, and
  // the daemon after it runs no release for it: waiting out the grace period would refuse the
  // domain's next start (and pin the VF) for nothing.
  if (a.owner.daemon && !env.alive(a.owner.daemon, a.owner.daemonStart)) {
    return { keep: false, reason: `the libvirt daemon that prepared it (pid ${a.owner.daemon}) is gone and no QEMU pid was recorded` };
  }
  const age = recordAge(a, env);
  if (Number.isFinite(age) && age < env.graceMs) {
    return { keep: true, reason: `prepared ${Math.round(age / 1000)} s ago and libvirt may still be starting it (grace ${Math.round(env.graceMs / 1000)} s)` };
  }
  return { keep: false, reason: `no QEMU pid was ever recorded and libvirt has no pid file for it` };
}

export function judgePort(p: PortRecord, env: { alive?: (pid: number, start?: number | null) => boolean; libvirtPid: (domain: string) => number | null; now: number; mono?: number; graceMs: number }): Verdict {
  if (p.pid !== null && env.alive) {
    return env.alive(p.pid, p.pidStart) ? { keep: true, reason: `QEMU pid ${p.pid} runs` } : { keep: false, reason: `domain '${p.domain}' QEMU pid ${p.pid} is gone` };
  }
  if (env.libvirtPid(p.domain) !== null) return { keep: true, reason: 'the domain runs' };
  const age = p.createdAt ? recordAge(p, env) : Infinity;
  if (age < env.graceMs) return { keep: true, reason: 'recorded moments ago; the domain may be starting' };
  return { keep: false, reason: `domain '${p.domain}' does not run (no live pid in libvirt's pid file)` };
}

/**
 * How long ago a record was written: by the monotonic clock when it has its stamp (the wall
 * clock is stepped at boot, just when libvirt autostarts guests, and a step forward past the
 * grace took a starting guest's VF), else by the wall clock (a record written before the stamp
 * was kept, or, where the state directory outlived a reboot, one from an earlier boot).
 */
function recordAge(r: { createdAt: string | null; createdMonoMs?: number | null }, env: { now: number; mono?: number }): number {
  if (typeof r.createdMonoMs === 'number' && env.mono !== undefined && env.mono >= r.createdMonoMs) return env.mono - r.createdMonoMs;
  return env.now - Date.parse(r.createdAt ?? '');
}

export interface OwnerEnv {
  alive: (pid: number, start?: number | null) => boolean;
  libvirtPid: (domain: string) => number | null;
  now: number;
  mono: number;
  graceMs: number;
  self: number;
}

/** The liveness checks against this machine; libvirt's pid files are read at most once per domain. */
export function ownerEnv(libvirt: LibvirtRuntimePaths, graceMs = DEFAULT_RECONCILE_GRACE_MS): OwnerEnv {
  const pids = new Map<string, number | null>();
  return {
    alive: isSameProcessAlive,
    libvirtPid: (d) => {
      if (!pids.has(d)) {
        let pid: number | null = null;
        // A pid file vfpool cannot read is not proof that the domain is gone: keep its records.
        try {
          pid = readLibvirtPid(libvirt, d);
        } catch {
          pid = -1;
        }
        pids.set(d, pid);
      }
      const pid = pids.get(d)!;
      return pid === -1 ? process.pid : pid;
    },
    now: Date.now(),
    mono: monotonicMs(),
    graceMs,
    self: process.pid,
  };
}

/** Whether an allocation still pins its VF (its guest runs, or a live vfpool works on it). */
export function allocationPinsVf(a: Allocation, env: OwnerEnv): boolean {
  return judgeAllocation(a, env).keep;
}

/** Why an allocation is kept, or null when it is to be freed: releaseGuest's `keepReason`. */
export function allocationKeepReason(a: Allocation, env: Parameters<typeof judgeAllocation>[1]): string | null {
  const v = judgeAllocation(a, env);
  return v.keep ? v.reason : null;
}

/**
 * Drops, in a state being updated under the lock, the libvirt port records whose domain no
 * longer runs, and returns them with the verdict's reason (for the log and reconcile's report):
 * the healing half of judging owners where "in use" is decided, so the record does not
 * outlive this decision either.
 */
export function pruneGonePorts(state: { ports: PortRecord[] }, env: OwnerEnv): Array<{ port: PortRecord; reason: string }> {
  const gone: Array<{ port: PortRecord; reason: string }> = [];
  const kept = state.ports.filter((port) => {
    const v = judgePort(port, env);
    if (!v.keep) gone.push({ port, reason: v.reason });
    return v.keep;
  });
  if (gone.length) state.ports = kept;
  return gone;
}

export function describeGonePort(p: PortRecord): string {
  return `dropped libvirt network '${p.network}' port of domain '${p.domain}' (${p.vfAddr ?? p.netdev ?? 'no VF'}): the domain no longer runs and libvirt sent no port-deleted`;
}
