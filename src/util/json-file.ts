import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { BadInputError, errnoOf, LockTimeoutError } from '../errors.js';
import { fsError } from './fs-errors.js';

export interface LockOptions {
  /** How long to wait for another vfpool process before giving up with exit 3. */
  timeoutMs: number;
  /** A lock older than this belongs to a killed process and is taken over. */
  staleMs: number;
}

export const DEFAULT_LOCK: LockOptions = { timeoutMs: 30_000, staleMs: 10_000 };

/**
 * Reads a JSON file; `undefined` when it does not exist. Any other failure to read it (a
 * directory, no permission) is one line naming `what` (`the state file`) and the fix.
 */
export function readJsonFile<T>(file: string, what = 'the file', setting?: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw fsError(err, file, what, setting);
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new BadInputError(`${file} is not valid JSON: ${(err as Error).message}`, 'fix or remove the file', { cause: err });
  }
}

/** Temp file + fsync + rename: a reader sees the old file or the new one, never half of one. */
export async function writeJsonFileAtomic(file: string, value: unknown, mode = 0o600): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', { mode, fsync: true });
}

export interface JsonUpdate<T, R> {
  next?: T;
  result: R;
  /** Runs after the write, still under the lock. */
  afterWrite?: () => void;
}

/**
 * The one read-modify-write path: lock, `read` (which parses and validates the file, or gives the
 * initial value when there is none), apply `fn`, write atomically, unlock in finally.
 * `fn` returning `undefined` means "nothing to write". The lock is a directory next to the file
 * (proper-lockfile), refreshed while held, so a process killed mid-update leaves a lock that
 * goes stale and is reclaimed after `staleMs`.
 */
export async function updateJsonFileLocked<T, R>(
  file: string,
  read: () => T,
  fn: (current: T) => Promise<JsonUpdate<T, R>> | JsonUpdate<T, R>,
  opts: LockOptions = DEFAULT_LOCK,
  mode = 0o600,
): Promise<R> {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw fsError(err, dirname(file), 'the directory of', undefined);
  }
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(file, {
      realpath: false,
      stale: opts.staleMs,
      update: Math.max(1000, Math.floor(opts.staleMs / 2)),
      retries: { retries: Math.max(1, Math.ceil(opts.timeoutMs / 100)), minTimeout: 50, maxTimeout: 100, factor: 1.2 },
    });
  } catch (err) {
    if (errnoOf(err) === 'ELOCKED') {
      throw new LockTimeoutError(
        `lock ${file}.lock is held by another vfpool process (waited ${Math.round(opts.timeoutMs / 1000)} s)`,
        'try again; if no vfpool process runs, the lock goes stale and is reclaimed',
        { cause: err },
      );
    }
    throw fsError(err, `${file}.lock`, 'the lock of');
  }
  try {
    const current = read();
    const { next, result, afterWrite } = await fn(current);
    if (next !== undefined) await writeJsonFileAtomic(file, next, mode);
    afterWrite?.();
    return result;
  } finally {
    await release().catch(() => undefined);
  }
}
