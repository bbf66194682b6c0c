import { escapeControl } from './util/quote.js';

/**
 * vfpool's error hierarchy. Every failure a user can see is one of these: it carries the exit
 * code DESIGN.md fixes (1 failed, 2 bad input, 3 conflict) and a hint saying what to do next.
 * Only entry points catch them and turn them into an exit status and one line on stderr.
 */
export class VfpoolError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;
  constructor(message: string, exitCode: number, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.hint = hint;
  }
  /**
   * The one line an entry point prints: what failed, then what to do. Messages quote input
   * through quoteInput; escaping here too keeps a message that quoted it raw on one line.
   */
  toLine(): string {
    return escapeControl(this.hint ? `${this.message}: ${this.hint}` : this.message);
  }
}

/** Bad XML, arguments or definitions; the message names the field and the value. Exit 2. */
export class BadInputError extends VfpoolError {
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, 2, hint, options);
  }
}

/** A VF in use, a pool exhausted, a lock that could not be taken. Exit 3. */
export class ConflictError extends VfpoolError {
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, 3, hint, options);
  }
}

export class LockTimeoutError extends ConflictError {}

/**
 * The machine refused: a sysfs write failed, `ip` exited non-zero, a VF never appeared.
 * Keeps the errno or the command so the cause is never lost. Exit 1.
 */
export class HostError extends VfpoolError {
  readonly code: string | undefined;
  constructor(message: string, options?: { code?: string; hint?: string; cause?: unknown }) {
    super(message, 1, options?.hint, { cause: options?.cause });
    this.code = options?.code;
  }
}

/** An operation failed and its rollback failed too: both causes are reported. Exit 1. */
export class RollbackError extends VfpoolError {
  constructor(readonly original: VfpoolError, readonly rollbackFailures: string[]) {
    super(
      `${original.toLine()}; rollback also failed: ${rollbackFailures.join('; ')}`,
      1,
      'run `vfpool reconcile` and check `vfpool status`',
    );
  }
}

/** A bug in vfpool itself. Exit 1. */
export class InternalError extends VfpoolError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 1, 'this is a vfpool bug; please report it with the log', options);
  }
}

/**
 * Puts `where` ("domain 'vm1', pool 'p', VF …", "pool 'p': PF eth1") in front of a failure's
 * message, keeping its exit code, errno and hint (or `hint`, if given) and the failure as the
 * cause. A RollbackError (it names its own causes) and a message that already starts with
 * `where` are returned as they are.
 */
export function prefixError(where: string, err: VfpoolError, hint?: string): VfpoolError {
  if (err instanceof RollbackError || err.message.startsWith(where)) return err;
  if (err instanceof HostError) return new HostError(`${where}: ${err.message}`, { code: err.code, hint: hint ?? err.hint, cause: err });
  return new VfpoolError(`${where}: ${err.message}`, err.exitCode, hint ?? err.hint, { cause: err });
}

export function asVfpoolError(err: unknown): VfpoolError {
  if (err instanceof VfpoolError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(`unexpected error: ${message}`, { cause: err });
}

/** The errno code of a Node system error, if it is one. */
export function errnoOf(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
