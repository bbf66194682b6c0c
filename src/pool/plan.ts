import { HostError, RollbackError, asVfpoolError, type VfpoolError } from '../errors.js';
import type { Host, VfInfo } from '../host/host.js';
import type { NetdevName, PciAddress } from '../types.js';
import type { Logger } from '../util/log.js';

/**
 * Plan, then apply: planners are pure and return these actions; `applyPlan` is the only code
 * that carries them out, and undoes what it did, in reverse, when a later step fails.
 */
export type Action =
  | { kind: 'write-numvfs'; pf: NetdevName; from: number; to: number }
  | { kind: 'await-vfs'; pf: NetdevName; count: number; probed: boolean }
  | { kind: 'bind-vfs'; pf: NetdevName; driver: string; skip: PciAddress[] };

export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'write-numvfs':
      return `${a.pf}: write ${a.to} to sriov_numvfs (now ${a.from})`;
    case 'await-vfs':
      return `${a.pf}: wait until ${a.count} VFs exist${a.probed && a.count > 0 ? ' with their host driver' : ''}`;
    case 'bind-vfs':
      return `${a.pf}: bind its VFs to ${a.driver}${a.skip.length ? ` (except ${a.skip.join(', ')}, in use)` : ''}`;
  }
}

export interface ApplyOptions {
  /** How long VFs may take to appear or vanish after a write to sriov_numvfs. */
  settleTimeoutMs: number;
  pollMs: number;
}

export const DEFAULT_APPLY: ApplyOptions = { settleTimeoutMs: 15_000, pollMs: 50 };

async function awaitVfs(host: Host, a: Extract<Action, { kind: 'await-vfs' }>, opts: ApplyOptions): Promise<void> {
  const deadline = Date.now() + opts.settleTimeoutMs;
  let vfs: VfInfo[] = [];
  for (;;) {
    vfs = await host.listVfs(a.pf);
    const ready = vfs.length === a.count && (!a.probed || vfs.every((v) => v.driver !== null));
    if (ready) return;
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.pollMs));
  }
  const probedCount = vfs.filter((v) => v.driver !== null).length;
  throw new HostError(
    `${a.pf}: expected ${a.count} VFs within ${opts.settleTimeoutMs / 1000} s, found ${vfs.length}` +
      (a.probed ? ` (${probedCount} with a driver)` : ''),
    { code: 'ETIMEDOUT', hint: 'check `dmesg` for the PF driver\'s errors' },
  );
}

/** Applies actions in order; on failure undoes the completed ones in reverse and rethrows. */
export async function applyPlan(host: Host, actions: Action[], log: Logger, opts: ApplyOptions = DEFAULT_APPLY): Promise<void> {
  const undo: Undo[] = [];
  let step = 0;
  try {
    for (const a of actions) {
      step++;
      log.info(`Step ${step}: ${describeAction(a)}`);
      switch (a.kind) {
        case 'write-numvfs':
          await host.writeNumVfs(a.pf, a.to);
          undo.push({ what: `${a.pf}: restore sriov_numvfs ${a.from}`, run: () => restoreNumVfs(host, a.pf, a.from) });
          break;
        case 'await-vfs':
          await awaitVfs(host, a, opts);
          break;
        case 'bind-vfs': {
          for (const vf of await host.listVfs(a.pf)) {
            if (vf.driver === a.driver || a.skip.includes(vf.address)) continue;
            const previous = vf.driver;
            await host.bindDriver(vf.address, a.driver);
            undo.push({ what: `${vf.address}: rebind ${previous ?? 'no driver'}`, run: () => host.bindDriver(vf.address, previous) });
          }
          break;
        }
      }
    }
  } catch (err) {
    const cause = asVfpoolError(err);
    log.warn(`Step ${step} failed: ${cause.toLine()}; undoing ${undo.length} change(s)`);
    return undoInReverse(cause, undo);
  }
}

export interface Undo {
  what: string;
  run: () => Promise<void>;
}

/**
 * The rollback both executors share (pool activation here, VF configuration in vf-config.ts):
 * runs the undos newest first, every one even when some fail, then throws the original cause,
 * or a RollbackError naming the undos that failed too.
 */
export async function undoInReverse(cause: VfpoolError, undos: Undo[]): Promise<never> {
  const failures: string[] = [];
  for (const u of [...undos].reverse()) {
    try {
      await u.run();
    } catch (e) {
      failures.push(`${u.what}: ${asVfpoolError(e).message}`);
    }
  }
  if (failures.length) throw new RollbackError(cause, failures);
  throw cause;
}

/** Puts a PF's VF count back: through 0, since the kernel refuses N -> M (EBUSY). */
async function restoreNumVfs(host: Host, pf: NetdevName, count: number): Promise<void> {
  const now = (await host.getPf(pf)).numVfs;
  if (now === count) return;
  if (now !== 0) await host.writeNumVfs(pf, 0);
  if (count !== 0) await host.writeNumVfs(pf, count);
}
