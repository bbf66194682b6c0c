import { closeSync, constants, existsSync, fchmodSync, fchownSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmdirSync, statSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { makeDir } from './make-dir.js';
import { basename, dirname, join } from 'node:path';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { BadInputError, ConflictError, errnoOf, LockTimeoutError } from '../errors.js';
import { crashPoint } from './crash-point.js';
import { fsError } from './fs-errors.js';
import { isSameProcessAlive, kernelBootId, monotonicMs, selfStartTicks } from './process.js';

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
export function readJsonFile<T>(
  file: string,
  what = 'the file',
  setting?: string,
  // The state's advice by default; a file that records no allocation says its own.
  invalidHint = 'restore it from a copy; only if no guest uses what it records, move it aside and run `vfpool reconcile`',
): T | undefined {
  let text: string;
  try {
    // O_NOFOLLOW: a symlink planted in root's state directory is refused (ELOOP), not read through.
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    if (errnoOf(err) === 'ELOOP') throw new BadInputError(`${what} ${file} is a symbolic link; vfpool does not follow links there`, 'replace the link with the file itself', { cause: err });
    throw fsError(err, file, what, setting);
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    // Never "remove the file": an empty state reads as "nothing allocated" and hands out VFs
    // that guests still hold (a truncated state.json is the usual cause).
    throw new BadInputError(`${file} is not valid JSON: ${(err as Error).message}`, invalidHint, { cause: err });
  }
}

/**
 * The whole of a file in root's state directory, read without following a symlink planted in
 * its place (O_NOFOLLOW: ELOOP), so root never reads, and never quotes in an error, a file
 * someone else pointed it at. Other errors are thrown as they are.
 */
export function readTextNoFollow(file: string): string {
  // O_NONBLOCK: a FIFO put in its place (qemu/NAME/ is the QEMU user's) held root's open until
  // someone wrote to it: the started hook, reconcile, forever. A FIFO, socket or device is
  // refused; a directory is read, which fails with EISDIR, as callers already explain.
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile() && !st.isDirectory()) throw new Error('it is not a regular file (vfpool writes a file there itself)');
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes a file; one that is already gone is fine. `rmSync(f, { force: true })` does the same
 * with two lstats more, and loads Node's rimraf module on first use: on every lock release.
 */
export function removeFile(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
}

/** The one line for a symlink found where vfpool keeps one of its files (`what`: "the QEMU plan"). */
export function symlinkRefused(what: string, path: string, cause?: unknown): BadInputError {
  return new BadInputError(`${what} ${path} is a symbolic link; vfpool does not follow links in its state directory`, 'remove the link (vfpool writes the file itself)', { cause });
}

/**
 * Temp file + fsync + rename, for a directory another user may write (a domain's qemu/NAME/,
 * its QEMU user's). write-file-atomic resolves the target with realpath and opens its temp
 * file with a plain 'w', then chowns it by path: a plan.json link planted there had root
 * replace the link's target (/etc/shadow) by a file owned by the QEMU user. Here the temp file
 * is created O_EXCL|O_NOFOLLOW under a random name, owner and mode are set on its
 * descriptor, and rename replaces whatever is at `file` (a link itself, never its target).
 */
export function writeFileNoFollow(file: string, text: string, opts: { mode: number; owner?: { uid: number; gid: number } }): void {
  // O_EXCL is the safety; the random name only keeps a planted one from failing the write
  // (Math.random, not node:crypto, whose load a hook call would pay for: test/bundles.test.ts).
  let tmp = '';
  let fd = -1;
  for (let attempt = 0; fd < 0; attempt++) {
    tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    try {
      fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, opts.mode);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST' || attempt === 4) throw err;
    }
  }
  try {
    try {
      const bytes = Buffer.from(text);
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
      if (opts.owner) fchownSync(fd, opts.owner.uid, opts.owner.gid);
      // After fchown, which may clear set-id bits, and against the umask's narrowing of open's mode.
      fchmodSync(fd, opts.mode);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    removeFile(tmp);
    throw err;
  }
}

/**
 * Temp file + fsync + rename: a reader sees the old file or the new one, never half of one, and
 * after a power cut the new one. `fsync: false` only for a file whose contents must not outlive
 * the machine's memory anyway (the simulated host's kernel state): still atomic, not synced.
 */
export async function writeJsonFileAtomic(file: string, value: unknown, mode = 0o600, opts: WriteOptions = {}): Promise<void> {
  // The library's synchronous path: the same temp file, fsync, chown/chmod and rename, without
  // the asynchronous one's ten thread-pool round trips (its realpath alone lstats every path
  // component through the pool). Every caller awaits the write under the file's lock, so
  // nothing could run beside it anyway; on a busy host each round trip waits for a core.
  writeFileAtomic.sync(file, JSON.stringify(value, null, opts.compact ? undefined : 2) + '\n', { mode, fsync: opts.fsync ?? true });
}

export interface WriteOptions {
  /** false: atomic but not synced (see writeJsonFileAtomic). Default true. */
  fsync?: boolean;
  /** One line, no indentation: for a large file that programs read, not people. */
  compact?: boolean;
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
 * (proper-lockfile) holding a `holder` file that names its process (pid, start time, boot): it
 * is taken over exactly when that process is gone, at once, whatever the clocks say.
 */
export async function updateJsonFileLocked<T, R>(
  file: string,
  read: () => T,
  fn: (current: T) => Promise<JsonUpdate<T, R>> | JsonUpdate<T, R>,
  opts: LockOptions = DEFAULT_LOCK,
  mode = 0o600,
  /** Names this file's crash points (`NAME:locked`, `NAME:written`); none without it. */
  crashName?: string,
  write: WriteOptions = {},
): Promise<R> {
  try {
    makeDir(dirname(file), 0o700);
  } catch (err) {
    throw fsError(err, dirname(file), 'the directory of', undefined);
  }
  let compromised: Error | null = null;
  const { release, lastHolderMayHaveDied } = await takeLock(file, opts, (err) => (compromised = err));
  try {
    if (lastHolderMayHaveDied) removeKilledWritersTemps(file);
    if (crashName) crashPoint(`${crashName}:locked`);
    const current = read();
    const { next, result, afterWrite } = await fn(current);
    // Another process removed this lock while it was held (by hand, or an older vfpool that
    // judged it by its mtime): writing now could overwrite what that process wrote.
    if (compromised) throw new ConflictError(`lock ${file}.lock was removed by another process while this one held it; ${file} was not written`, 'run `vfpool reconcile`, then check `vfpool status`', { cause: compromised });
    // A full or read-only file system fails here, with nothing written (the temp file removed).
    if (next !== undefined) await writeJsonFileAtomic(file, next, mode, write).catch((err: unknown) => Promise.reject(fsError(err, file, 'writing')));
    if (crashName) crashPoint(`${crashName}:written`);
    afterWrite?.();
    return result;
  } finally {
    await release().catch(() => undefined);
  }
}

/**
 * proper-lockfile's own staleness (the lock directory's mtime more than `stale` behind
 * Date.now()) is switched off: a wall clock stepped forward while a lock is held (NTP at boot,
 * when libvirt autostarts guests) made a live holder's lock look stale, and let a second
 * process in beside it. Whether a lock is abandoned is decided by `clearAbandonedLock`, before
 * every attempt; proper-lockfile still makes, refreshes (for a vfpool of an older version, which
 * judges by the mtime) and removes the directory.
 */
export const NEVER_STALE = 2 ** 52;

async function takeLock(file: string, opts: LockOptions, onCompromised: (err: Error) => void): Promise<{ release: () => Promise<void>; lastHolderMayHaveDied: boolean }> {
  const deadline = monotonicMs() + opts.timeoutMs;
  let lastHolderMayHaveDied = false;
  // The first retries come soon (5, 10, 20, 40, 80 ms, then every 100 ms): locks are held for a
  // few milliseconds (a read, an fsynced write), and a first retry at 50 ms made a guest whose
  // prepare met a pool start's short write wait 50 ms for nothing (bench/no-stall.bench.ts).
  for (let wait = 5; ; wait = Math.min(100, wait * 2)) {
    lastHolderMayHaveDied = clearAbandonedLock(file, opts) || lastHolderMayHaveDied;
    try {
      const release = await lockfile.lock(file, { realpath: false, fs: LOCK_FS, stale: NEVER_STALE, update: Math.max(1000, Math.floor(opts.staleMs / 2)), retries: 0, onCompromised });
      // What a vfpool of an older version wrote beside the lock; this one keeps it inside.
      if (lastHolderMayHaveDied) removeFile(`${file}.holder`);
      return { release, lastHolderMayHaveDied };
    } catch (err) {
      if (errnoOf(err) !== 'ELOCKED') throw fsError(err, `${file}.lock`, 'the lock of');
      if (monotonicMs() >= deadline) {
        const holder = readHolder(file);
        const who = holder ? `vfpool pid ${holder.pid}${holder.alive ? '' : ' (gone)'} (${holder.what})` : 'another vfpool process';
        throw new LockTimeoutError(
          `lock ${file}.lock is held by ${who} (waited ${Math.round(opts.timeoutMs / 1000)} s)`,
          holder?.alive ? `try again once pid ${holder.pid} is done` : `try again; a lock whose holder is gone is taken over`,
          { cause: err },
        );
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

type Callback = (err: Error | null, value?: unknown) => void;

/** A node:fs call in proper-lockfile's callback convention, made synchronously (see LOCK_FS). */
function syncCall<A extends unknown[]>(call: (...args: A) => unknown): (...args: [...A, Callback]) => void {
  return (...args) => {
    const callback = args.pop() as Callback;
    let value: unknown;
    try {
      value = call(...(args as unknown as A));
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, value);
  };
}

/** The lock directory with its holder file: removed whole (holder first, so an empty directory is never mistaken for a holder-less lock of an older vfpool for long). */
function removeLockDir(dir: string): void {
  removeFile(join(dir, HOLDER));
  rmdirSync(dir);
}

/**
 * The five file system calls proper-lockfile makes (taking, probing, refreshing and removing the
 * lock directory), made synchronously: each is one system call on a local directory, and the
 * asynchronous ones cost a thread-pool round trip each, which on a busy host waits for a core
 * (a lock and its release were ~8 of them per file). `mkdir` writes the holder file into the
 * directory it made, before proper-lockfile reads the directory's mtime as its own.
 */
const LOCK_FS = {
  mkdir: syncCall((path: string) => {
    mkdirSync(path);
    writeHolder(path);
  }),
  realpath: syncCall((path: string) => realpathSync(path)),
  stat: syncCall((path: string) => statSync(path)),
  rmdir: syncCall((path: string) => removeLockDir(path)),
  utimes: syncCall((path: string, atime: Date, mtime: Date) => utimesSync(path, atime, mtime)),
  // What proper-lockfile's exit handler calls to remove the locks still held when the process
  // is ended by a signal.
  rmdirSync: removeLockDir,
};

/**
 * The same calls for proper-lockfile's synchronous lock (the history's rotation), which takes
 * them by their Sync names. With `clearAbandonedLock` before each attempt and NEVER_STALE, its
 * lock too is taken over exactly when its holder is gone. Only these five: given all of node:fs,
 * proper-lockfile copies it with `{ ...fs }`, whose lazy getters load Node's stream machinery.
 */
export const LOCK_FS_SYNC = {
  mkdirSync: (path: string) => {
    mkdirSync(path);
    writeHolder(path);
  },
  realpathSync,
  statSync,
  rmdirSync: removeLockDir,
  utimesSync,
};

/**
 * Who holds the lock: `LOCK/holder`, one line of JSON, `{ pid, start, boot, what }` (`start`
 * from /proc/PID/stat, `boot` the kernel's boot id): the process exactly, which a pid alone is
 * not (reused after a reboot, with a state directory on persistent storage). Inside the lock
 * directory, it goes with it: no other lock's holder can be read for it.
 */
const HOLDER = 'holder';

function writeHolder(lockDir: string): void {
  const what = process.argv.slice(2).join(' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 200) || basename(process.argv[1] ?? 'vfpool');
  try {
    const fd = openSync(join(lockDir, HOLDER), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeFileSync(fd, JSON.stringify({ pid: process.pid, start: selfStartTicks(), boot: kernelBootId(), what }) + '\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    // Without it the lock is judged as an older vfpool's is: by its mtime (clearAbandonedLock).
  }
}

function readHolder(file: string): { pid: number; what: string; alive: boolean } | null {
  let text: string;
  try {
    text = readTextNoFollow(join(`${file}.lock`, HOLDER));
  } catch {
    return null;
  }
  try {
    const h = JSON.parse(text) as { pid?: unknown; start?: unknown; boot?: unknown; what?: unknown };
    if (!Number.isSafeInteger(h.pid) || (h.pid as number) < 1) return null;
    const start = typeof h.start === 'number' ? h.start : null;
    const boot = typeof h.boot === 'string' ? h.boot : null;
    return { pid: h.pid as number, what: typeof h.what === 'string' && h.what ? h.what : '?', alive: isSameProcessAlive(h.pid as number, start, boot) };
  } catch {
    return null;
  }
}

/**
 * Clears a lock whose holder is gone (killed with it: SIGKILL, OOM, a reboot with the state
 * directory on persistent storage): its holder file names a process that no longer runs, or
 * whose pid another process has now. A live holder's lock is never taken, however old its mtime.
 *
 * A lock without a holder file is an older vfpool's (which refreshes its mtime while it holds
 * it), or its holder was killed between making it and writing the file: judged by its mtime,
 * as proper-lockfile did, and also when the mtime lies more than `staleMs` in the future (a
 * clock set back, a copied tree), which proper-lockfile would have waited out for ever.
 *
 * Returns whether a writer may have been killed holding the lock since the last one that ended
 * well: its lock directory (or an older vfpool's holder file) is still there. Only then can a
 * killed writer's temp file be left to remove.
 */
export function clearAbandonedLock(file: string, opts: Pick<LockOptions, 'staleMs'>): boolean {
  const dir = `${file}.lock`;
  let st;
  try {
    st = lstatSync(dir, { throwIfNoEntry: false });
  } catch {
    return true;
  }
  if (!st) return existsSync(`${file}.holder`);
  try {
    const holder = readHolder(file);
    if (holder ? !holder.alive : Math.abs(Date.now() - st.mtimeMs) > opts.staleMs) removeLockDir(dir);
  } catch {
    // It went away meanwhile: nothing to clear.
  }
  return true;
}

/**
 * A writer killed between creating its temp file and the rename leaves `FILE.NNNN` behind
 * (write-file-atomic's names). Under the lock nobody else writes, so every such file is a leftover.
 */
function removeKilledWritersTemps(file: string): void {
  const dir = dirname(file);
  const prefix = basename(file) + '.';
  try {
    for (const f of readdirSync(dir)) {
      if (f.startsWith(prefix) && /^[0-9]+$/.test(f.slice(prefix.length))) removeFile(join(dir, f));
    }
  } catch {
    // Best effort: a leftover temp file costs space, not correctness.
  }
}
