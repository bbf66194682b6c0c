import { closeSync, constants, existsSync, fchmodSync, fstatSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { makeDir } from '../util/make-dir.js';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { clearAbandonedLock, LOCK_FS_SYNC, NEVER_STALE, readTextNoFollow } from '../util/json-file.js';
import { untrustedJournalDir } from '../util/state-dir-owner.js';

/**
 * The VF history: one JSON object per line in `$VFPOOL_JOURNAL_DIR/history.jsonl`, appended at
 * every allocation, MAC/VLAN change, restore, release, pool start/stop and refusal. It answers
 * "who had this VF, when, and what was it set to" after the guest, the state record and even
 * the host's /run (a reboot) are gone, which is why it lives in /var/lib and not in the state
 * directory.
 *
 * A journal write never fails an operation: the VF has already changed when it is written, and
 * a full disk must not turn a working start into a failed one. Errors go to the log instead.
 */

export type JournalOp =
  | 'allocate'
  | 'configure'
  | 'prepare-failed'
  | 'restore'
  | 'release'
  | 'release-failed'
  | 'pool-start'
  | 'pool-stop'
  | 'pool-refused';

/** What a VF was set to: the values an administrator asks about. */
export interface VfValues {
  mac?: string | null;
  vlan?: number | null;
  driver?: string | null;
  owner?: string | null;
  numVfs?: number | null;
}

export interface JournalEntry {
  time: string;
  op: JournalOp;
  domain: string | null;
  pool: string | null;
  /** The VF's PCI address, or for pool operations null (see `pf`). */
  vf: string | null;
  pf: string | null;
  before: VfValues | null;
  after: VfValues | null;
  /** Why a refused or failed operation did not happen (its one line), with its exit code. */
  error?: string;
  exitCode?: number;
  /** The host's boot (kernel boot_id) it was written in; absent in entries of older vfpools. */
  boot?: string;
}

export type JournalInput = Partial<Omit<JournalEntry, 'time' | 'op' | 'boot'>> & { op: JournalOp };

/** Bounds: the live file is rotated past `maxBytes`; `keep` older files are kept (history.jsonl.1 …). */
export interface JournalLimits {
  maxBytes: number;
  keep: number;
}
export const DEFAULT_JOURNAL_LIMITS: JournalLimits = { maxBytes: 1024 * 1024, keep: 4 };

export const JOURNAL_FILE = 'history.jsonl';

/** Where a failed journal write is reported (the operation's own log). */
export interface JournalLog {
  warn(msg: string): void;
}

const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

export class Journal {
  readonly file: string;
  constructor(
    readonly dir: string,
    private readonly log: JournalLog | null = null,
    private readonly limits: JournalLimits = DEFAULT_JOURNAL_LIMITS,
    /** The host's boot now (Host.bootId), recorded in every entry: `vfpool history` marks where the host rebooted. */
    private readonly bootOf: () => string | null = () => null,
  ) {
    this.file = join(dir, JOURNAL_FILE);
  }

  /** Appends entries; never throws (see the module comment). */
  record(...inputs: JournalInput[]): void {
    if (inputs.length === 0) return;
    const time = new Date().toISOString();
    // Not written into a directory another user controls (the rule of the state directory):
    // root would append to, rename and chmod what they planted. Said, as any failed write.
    const untrusted = untrustedJournalDir(this.dir);
    if (untrusted) {
      this.log?.warn(`history journal ${this.file} not written: ${untrusted.message} (${untrusted.hint})`);
      return;
    }
    try {
      const boot = this.bootOf();
      const lines = inputs
        .map((i) => JSON.stringify({ time, op: i.op, domain: i.domain ?? null, pool: i.pool ?? null, vf: i.vf ?? null, pf: i.pf ?? null, before: i.before ?? null, after: i.after ?? null, ...(i.error !== undefined ? { error: i.error, exitCode: i.exitCode } : {}), ...(typeof boot === 'string' ? { boot } : {}) }))
        .join('\n') + '\n';
      this.append(lines);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symbolic link, which vfpool does not follow: remove the link' : (err as Error).message;
      this.log?.warn(`history journal ${this.file} not written: ${why}`);
    }
  }

  private append(lines: string): void {
    // No lock for the append itself: one write(2) on an O_APPEND file lands whole at the end
    // whoever else appends (the kernel holds the inode's lock for it). A lock here was a lock
    // directory made and removed in /var/lib at every entry (a disk's journal commit each),
    // for every hook call. Only rotation, which renames files, takes the lock (rotateOnce).
    // O_NOFOLLOW throughout: root appends here, and a link planted for the journal must not
    // make it create, extend or chmod a file elsewhere (ELOOP, reported by `record`).
    let fd = this.open();
    try {
      const size = fstatSync(fd).size;
      if (size > 0 && size + lines.length > this.limits.maxBytes) {
        closeSync(fd);
        fd = -1;
        this.rotateOnce(lines.length);
        fd = this.open();
      }
      writeSync(fd, lines);
      // An administrator's umask or a copy may have widened it; the history names guests.
      fchmodSync(fd, 0o600);
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  }

  /** The live file for appending; its directory is made (0700) by the first entry only. */
  private open(): number {
    try {
      return openSync(this.file, APPEND, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      makeDir(this.dir, 0o700);
      return openSync(this.file, APPEND, 0o600);
    }
  }

  /**
   * Rotates under the lock, unless another process did while this one waited for it (the file
   * it measured is then .1, and the new one has room). Two processes appending at the same
   * moment may each find room and take the file one entry past the cap: bounded, not lost. An
   * entry written to a file that is rotated right after it was opened lands in .1, in order.
   */
  private rotateOnce(incoming: number): void {
    const release = lockWithRetry(this.file);
    try {
      const size = statSync(this.file, { throwIfNoEntry: false })?.size ?? 0;
      if (size > 0 && size + incoming > this.limits.maxBytes) this.rotate();
    } finally {
      release();
    }
  }

  private rotate(): void {
    rmSync(`${this.file}.${this.limits.keep}`, { force: true });
    for (let n = this.limits.keep - 1; n >= 1; n--) {
      if (existsSync(`${this.file}.${n}`)) renameSync(`${this.file}.${n}`, `${this.file}.${n + 1}`);
    }
    if (this.limits.keep > 0) renameSync(this.file, `${this.file}.1`);
    else rmSync(this.file, { force: true });
  }

  /** Every entry, oldest first, across the rotated files. A line that is not an entry is skipped and counted. */
  readAll(): { entries: JournalEntry[]; unreadable: number } {
    const files = readdirSync(this.dir, { withFileTypes: true })
      .map((d) => d.name)
      .filter((n) => n === JOURNAL_FILE || new RegExp(`^${JOURNAL_FILE.replace('.', '\\.')}\\.\\d+$`).test(n))
      .sort((a, b) => generation(b) - generation(a));
    const entries: JournalEntry[] = [];
    let unreadable = 0;
    for (const f of files) {
      let text: string;
      try {
        text = readTextNoFollow(join(this.dir, f));
      } catch (err) {
        // A link planted among the history files is not read through (it could quote any file).
        if ((err as NodeJS.ErrnoException).code !== 'ELOOP') throw err;
        unreadable++;
        continue;
      }
      for (const line of text.split('\n')) {
        if (!line) continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          unreadable++;
          continue;
        }
        // JSON, but not an entry (a `null`, a number, an object whose fields are of other
        // types): the file outlives reboots and power cuts and can be edited, and the filters
        // and the text form read these fields.
        if (isJournalEntry(parsed)) entries.push(parsed);
        else unreadable++;
      }
    }
    return { entries, unreadable };
  }
}

/**
 * proper-lockfile's sync lock has no retries, and the callers (hooks) are synchronous at this
 * point by design (a journal write must not reorder with the operation's own steps): so retry
 * here, briefly. A lock still held after ~2 s is reported as a failed write, not waited out.
 */
function lockWithRetry(file: string): () => void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let attempt = 0; ; attempt++) {
    try {
      // Taken over exactly when its holder is gone (json-file.ts): with proper-lockfile's own
      // staleness, a lock left by a vfpool killed mid-rotation whose mtime a clock set back put
      // in the future blocked every rotation, and every entry past the cap was lost, until the
      // clock caught up.
      clearAbandonedLock(file, { staleMs: 10_000 });
      return lockfile.lockSync(file, { stale: NEVER_STALE, realpath: false, fs: LOCK_FS_SYNC });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED' || attempt >= 200) throw err;
      Atomics.wait(pause, 0, 0, 10);
    }
  }
}

function isJournalEntry(v: unknown): v is JournalEntry {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const e = v as Record<string, unknown>;
  const stringOrNull = (x: unknown) => x === undefined || x === null || typeof x === 'string';
  const valuesOrNull = (x: unknown) => x === undefined || x === null || (typeof x === 'object' && !Array.isArray(x));
  return typeof e.time === 'string' && typeof e.op === 'string' && stringOrNull(e.domain) && stringOrNull(e.pool) && stringOrNull(e.vf) && stringOrNull(e.pf) && valuesOrNull(e.before) && valuesOrNull(e.after);
}

/** history.jsonl is generation 0, history.jsonl.N is N (older). */
function generation(name: string): number {
  const m = /\.(\d+)$/.exec(name);
  return m ? Number(m[1]) : 0;
}

export interface HistoryFilter {
  domain?: string;
  pool?: string;
  vf?: string;
  /** ISO time or anything Date.parse accepts. */
  since?: number;
}

export function filterHistory(entries: JournalEntry[], f: HistoryFilter): JournalEntry[] {
  return entries.filter(
    (e) =>
      (f.domain === undefined || e.domain === f.domain) &&
      (f.pool === undefined || e.pool === f.pool) &&
      (f.vf === undefined || e.vf === f.vf) &&
      (f.since === undefined || Date.parse(e.time) >= f.since),
  );
}

function fmtValues(v: VfValues | null): string {
  if (!v) return '-';
  return Object.entries(v)
    .filter(([, x]) => x !== undefined)
    .map(([k, x]) => `${k}=${x === null ? '-' : x}`)
    .join(' ');
}

/**
 * `vfpool history`'s text: one line per entry, and a line where the host rebooted between two
 * of them (their boots differ): what the first entries after it name (VFs, pools, QEMU pids) is
 * of a new boot, not the one before. Entries of older vfpools record no boot: no line there.
 */
export function formatHistory(entries: JournalEntry[]): string[] {
  const lines: string[] = [];
  let boot: string | undefined;
  for (const e of entries) {
    if (typeof e.boot === 'string') {
      if (boot !== undefined && e.boot !== boot) lines.push(`--- the host rebooted (boot ${e.boot}) ---`);
      boot = e.boot;
    }
    lines.push(formatHistoryLine(e));
  }
  return lines;
}

/** One line per entry for `vfpool history`. */
export function formatHistoryLine(e: JournalEntry): string {
  const who = [e.domain ? `domain ${e.domain}` : null, e.pool ? `pool ${e.pool}` : null, e.vf ? `VF ${e.vf}` : e.pf ? `PF ${e.pf}` : null].filter(Boolean).join(', ');
  const change = e.before || e.after ? `: ${fmtValues(e.before)} -> ${fmtValues(e.after)}` : '';
  const err = e.error ? `: ${e.error}` : '';
  return `${e.time} ${e.op} ${who}${change}${err}`;
}
