import { RollbackError, asVfpoolError, type VfpoolError } from '../errors.js';
import { crashPoint } from '../util/crash-point.js';
import type { Logger } from '../util/log.js';

/**
 * The one executor for every kind of step (pool activation in plan.ts, VF configuration in
 * vf-steps.ts, and whatever comes next, e.g. QMP device_add/device_del with a wait). Planners
 * are pure and return plain data steps; a `StepKind` says how a step reads in a plan and how
 * it is carried out; `executeSteps` runs them in order and, on a failure, undoes what they did,
 * newest first.
 */
export interface Undo {
  what: string;
  run: () => Promise<void>;
}

export interface StepKind<S> {
  describe(step: S): string;
  /**
   * Carries the step out. Each change it makes is reported through `did` (with its inverse) as
   * soon as it is made, so a step that fails half-way (bind 4 VFs, the third fails) is undone as
   * far as it got. A check reports nothing.
   */
  run(step: S, did: (undo: Undo) => void): Promise<void>;
}

export interface ExecuteOptions<S> {
  /** What the log lines start with: `LABEL N: …` (or `LABEL N/M: …` with `showTotal`). */
  label: string;
  showTotal?: boolean;
  /** Undo the completed changes on a failure (configure), or stop where it failed (restore). */
  undo: boolean;
  /** Turns a failure into the one line the user sees (naming domain, pool and VF). */
  wrap?: (cause: VfpoolError, step: S) => VfpoolError;
}

/**
 * Runs `steps` in order, logging each. On a failure: with `undo`, undoes every change made so
 * far in reverse and throws the cause (or a RollbackError naming the undos that failed too);
 * without it, throws the cause at once, leaving the caller to record what is left.
 */
export async function executeSteps<S>(steps: S[], kind: StepKind<S>, log: Logger, opts: ExecuteOptions<S>): Promise<void> {
  const undos: Undo[] = [];
  let n = 0;
  // Crash points around every step (test-only): the crash suite kills here to prove that a
  // process killed between any two kernel changes leaves nothing `vfpool reconcile` cannot mend.
  const point = (s: S, when: string) => crashPoint(`${opts.label.toLowerCase().replace(/[^a-z0-9]+/g, '-')}:${(s as { kind?: string }).kind ?? 'step'}:${when}`);
  for (const s of steps) {
    n++;
    log.info(`${opts.label} ${n}${opts.showTotal ? `/${steps.length}` : ''}: ${kind.describe(s)}`);
    try {
      point(s, 'before');
      await kind.run(s, (u) => undos.push(u));
      point(s, 'after');
    } catch (err) {
      const cause = opts.wrap ? opts.wrap(asVfpoolError(err), s) : asVfpoolError(err);
      log.warn(`${opts.label} ${n} failed: ${cause.toLine()}${opts.undo ? `; undoing ${undos.length} change(s)` : ''}`);
      if (!opts.undo) throw cause;
      return undoInReverse(cause, undos, log);
    }
  }
}

/**
 * Runs the undos newest first, every one even when some fail, then throws the original cause,
 * or a RollbackError naming the undos that failed too.
 */
export async function undoInReverse(cause: VfpoolError, undos: Undo[], log?: Logger): Promise<never> {
  const failures: string[] = [];
  for (const u of [...undos].reverse()) {
    try {
      log?.info(`undo: ${u.what}`);
      await u.run();
    } catch (e) {
      failures.push(`${u.what}: ${asVfpoolError(e).message}`);
    }
  }
  if (failures.length) throw new RollbackError(cause, failures);
  throw cause;
}
