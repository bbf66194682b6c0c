import { asVfpoolError, RollbackError, type VfpoolError } from '../errors.js';
import type { MigrationRecordStore } from './ports.js';
import type { MigrationRecordV1 } from '../state/migration-record.js';
import { crashPoint } from '../util/crash-point.js';

/**
 * A migration stage is planned as steps, then applied. Each step carries its own undo, and
 * records what it did in the migration record (written after every step), so a stage that
 * fails undoes what it did in reverse order, and one killed half-way is re-run from the record.
 */
export interface MigrationStep {
  /** One line: what the step does to which object ("device_del vfpool-vf0 on the source QEMU"). */
  describe: string;
  run(): Promise<void>;
  /** Marks the step done in the record (run after `run` succeeded, before the record is written). */
  done(record: MigrationRecordV1): void;
  /** Undoes a completed run, and unmarks it in the record; null: nothing to undo. */
  undo: ((record: MigrationRecordV1) => Promise<void>) | null;
  /**
   * For a dry run, what the step would change in detail (one line each, shown after
   * `describe`), found by reading only; absent when `describe` says it all.
   */
  explain?: () => Promise<string[]>;
}

export interface ApplyResult {
  applied: string[];
}

/**
 * Runs the steps in order, saving the record after each. On a failure, undoes the completed
 * steps in reverse (saving the record after each undo) and throws the failure; if an undo fails
 * too, a RollbackError names both. `stage` names the crash points (`STAGE:ran`, `STAGE:recorded`,
 * once per step): the crash suite kills a stage between a step's effect and its record.
 */
export async function applySteps(steps: MigrationStep[], record: MigrationRecordV1, store: MigrationRecordStore, stage = 'migrate'): Promise<ApplyResult> {
  const completed: MigrationStep[] = [];
  for (const step of steps) {
    try {
      await step.run();
    } catch (err) {
      const failure: VfpoolError = asVfpoolError(err);
      const rollbackFailures: string[] = [];
      for (const s of completed.reverse()) {
        if (!s.undo) continue;
        try {
          await s.undo(record);
          await store.write(record);
        } catch (undoErr) {
          rollbackFailures.push(`undo of '${s.describe}': ${asVfpoolError(undoErr).toLine()}`);
        }
      }
      if (rollbackFailures.length) throw new RollbackError(failure, rollbackFailures);
      throw failure;
    }
    crashPoint(`${stage}:ran`);
    step.done(record);
    await store.write(record);
    crashPoint(`${stage}:recorded`);
    completed.push(step);
  }
  return { applied: steps.map((s) => s.describe) };
}
