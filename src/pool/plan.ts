import { HostError } from '../errors.js';
import type { Host, VfInfo } from '../host/host.js';
import type { NetdevName, PciAddress } from '../types.js';
import type { Logger } from '../util/log.js';
import { monotonicMs } from '../util/process.js';
import { executeSteps, type StepKind } from './executor.js';

/**
 * Pool activation, plan then apply: the planners (activation.ts) are pure and return these
 * actions; `applyPlan` carries them out through the one executor, which undoes what was done,
 * in reverse, when a later step fails.
 *
 * `bind-vfs` names its VFs, decided at plan time so `--dry-run` shows them; only VFs that the
 * writes before it create have no address yet (`'created'`: all of them, once they exist).
 */
export type Action =
  | { kind: 'write-numvfs'; pf: NetdevName; from: number; to: number }
  | { kind: 'await-vfs'; pf: NetdevName; count: number; probed: boolean }
  | { kind: 'bind-vfs'; pf: NetdevName; driver: string | null; vfs: PciAddress[] | 'created'; skip: PciAddress[] };

export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'write-numvfs':
      return `${a.pf}: write ${a.to} to sriov_numvfs (now ${a.from})`;
    case 'await-vfs':
      return `${a.pf}: wait until ${a.count} VFs exist${a.probed && a.count > 0 ? ' with their host driver' : ''}`;
    case 'bind-vfs': {
      const inUse = a.skip.length ? ` (${a.skip.join(', ')} in use, left alone)` : '';
      const driver = a.driver ?? 'no driver (as before the start)';
      if (a.vfs === 'created') return `${a.pf}: bind the VFs just created to ${driver}`;
      if (a.vfs.length === 0) return `${a.pf}: its VFs are on ${driver} already${inUse}`;
      return `${a.pf}: bind VF${a.vfs.length > 1 ? 's' : ''} ${a.vfs.join(', ')} to ${driver}${inUse}`;
    }
  }
}

export interface ApplyOptions {
  /** How long VFs may take to appear or vanish after a write to sriov_numvfs. */
  settleTimeoutMs: number;
  pollMs: number;
}

export const DEFAULT_APPLY: ApplyOptions = { settleTimeoutMs: 15_000, pollMs: 50 };

async function awaitVfs(host: Host, a: Extract<Action, { kind: 'await-vfs' }>, opts: ApplyOptions): Promise<void> {
  const deadline = monotonicMs() + opts.settleTimeoutMs;
  let vfs: VfInfo[] = [];
  for (;;) {
    vfs = await host.listVfs(a.pf);
    const ready = vfs.length === a.count && (!a.probed || vfs.every((v) => v.driver !== null));
    if (ready) return;
    if (monotonicMs() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.pollMs));
  }
  const probedCount = vfs.filter((v) => v.driver !== null).length;
  throw new HostError(
    `${a.pf}: expected ${a.count} VFs within ${opts.settleTimeoutMs / 1000} s, found ${vfs.length}` +
      (a.probed ? ` (${probedCount} with a driver)` : ''),
    { code: 'ETIMEDOUT', hint: 'check `dmesg` for the PF driver\'s errors' },
  );
}

/** How pool actions are carried out, and what undoes each change. */
export function poolStepKind(host: Host, opts: ApplyOptions = DEFAULT_APPLY): StepKind<Action> {
  return {
    describe: describeAction,
    async run(a, did) {
      switch (a.kind) {
        case 'write-numvfs':
          await host.writeNumVfs(a.pf, a.to);
          did({ what: `${a.pf}: restore sriov_numvfs ${a.from}`, run: () => restoreNumVfs(host, a.pf, a.from) });
          return;
        case 'await-vfs':
          return awaitVfs(host, a, opts);
        case 'bind-vfs': {
          const now = await host.listVfs(a.pf);
          const wanted = a.vfs === 'created' ? now.filter((vf) => !a.skip.includes(vf.address)) : now.filter((vf) => (a.vfs as PciAddress[]).includes(vf.address));
          for (const vf of wanted) {
            if (vf.driver === a.driver) continue;
            const previous = vf.driver;
            await host.bindDriver(vf.address, a.driver);
            did({ what: `${vf.address}: rebind ${previous ?? 'no driver'}`, run: () => host.bindDriver(vf.address, previous) });
          }
          return;
        }
      }
    },
  };
}

/** Applies actions in order; on failure undoes the completed ones in reverse and rethrows. */
export async function applyPlan(host: Host, actions: Action[], log: Logger, opts: ApplyOptions = DEFAULT_APPLY): Promise<void> {
  await executeSteps(actions, poolStepKind(host, opts), log, { label: 'Step', undo: true });
}

/** Puts a PF's VF count back: through 0, since the kernel refuses N -> M (EBUSY). */
async function restoreNumVfs(host: Host, pf: NetdevName, count: number): Promise<void> {
  const now = (await host.getPf(pf)).numVfs;
  if (now === count) return;
  if (now !== 0) await host.writeNumVfs(pf, 0);
  if (count !== 0) await host.writeNumVfs(pf, count);
}
