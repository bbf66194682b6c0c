import { closeSync, constants, fstatSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { makeDir } from './make-dir.js';
import { join } from 'node:path';
import { escapeControl } from './quote.js';
import { assertStateDirTrusted } from './state-dir-owner.js';

/** When vfpool.log is rotated, and how many old ones are kept (vfpool.log.1 … .N). */
export interface LogRotation {
  maxBytes: number;
  keep: number;
}

// libvirt runs the hooks five times per guest lifecycle for years on end: unbounded, the log
// would fill /run (a tmpfs, i.e. RAM). 3 x 1 MiB holds tens of thousands of steps.
export const DEFAULT_ROTATION: LogRotation = { maxBytes: 1 << 20, keep: 2 };

// O_NOFOLLOW: the log is opened as root in the state directory; a symlink planted there must
// not make vfpool append to (or create) a file elsewhere.
const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

/**
 * vfpool's log: `$VFPOOL_STATE_DIR/vfpool.log`, one line per step. Hooks keep stdout for XML
 * (libvirt reads it at migrate/restore), so progress goes here, and to stderr only on failure
 * or when a person asked for it. Writing it never fails an operation: a full disk, a missing
 * directory or a lost rotation race costs log lines, never a guest start.
 */
export class Logger {
  constructor(
    private readonly file: string | null,
    private readonly context: string,
    private readonly echo: ((line: string) => void) | null = null,
    private readonly rotation: LogRotation = DEFAULT_ROTATION,
    /** The state directory the log is in: nothing is written there while another user controls it. */
    private readonly stateDir: string | null = null,
  ) {}

  /** Set once the state directory was found root's: one check per logger, not per line. */
  private dirTrusted = false;

  static forStateDir(stateDir: string, context: string, echo: ((line: string) => void) | null = null, rotation = DEFAULT_ROTATION): Logger {
    return new Logger(join(stateDir, 'vfpool.log'), context, echo, rotation, stateDir);
  }

  child(context: string): Logger {
    return new Logger(this.file, `${this.context} ${context}`, this.echo, this.rotation, this.stateDir);
  }

  info(msg: string): void {
    this.write('info', msg);
  }
  warn(msg: string): void {
    this.write('warn', msg);
  }

  private write(level: string, msg: string): void {
    // One entry, one line, whatever a name in the message holds.
    const oneLine = escapeControl(msg);
    if (this.file) {
      try {
        this.append(this.file, `${new Date().toISOString()} [${process.pid}] ${level} ${this.context}: ${oneLine}\n`);
      } catch {
        // Logging must never turn a working operation into a failed one.
      }
    }
    this.echo?.(`${level === 'warn' ? 'warning: ' : ''}${oneLine}`);
  }

  private append(file: string, line: string): void {
    if (this.stateDir !== null && !this.dirTrusted) {
      // Thrown, so the line is dropped (write's catch); the operation refuses on its own.
      assertStateDirTrusted(this.stateDir);
      this.dirTrusted = true;
    }
    let fd: number;
    try {
      fd = openSync(file, APPEND_FLAGS, 0o600);
    } catch (err) {
      // The state directory may not exist yet (the first operation creates it): once.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      makeDir(join(file, '..'), 0o700);
      fd = openSync(file, APPEND_FLAGS, 0o600);
    }
    try {
      writeSync(fd, line);
      if (fstatSync(fd).size > this.rotation.maxBytes) this.rotate(file, fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Shifts vfpool.log to .1, .1 to .2, …, dropping the oldest. Hooks run in parallel: only
   * the file this process wrote to is moved (another writer may have rotated it already), so
   * a race loses at most a few lines to an extra rotation, never the whole log.
   */
  private rotate(file: string, fd: number): void {
    const ours = fstatSync(fd);
    const current = statSync(file, { throwIfNoEntry: false });
    if (!current || current.ino !== ours.ino || current.dev !== ours.dev) return;
    for (let i = this.rotation.keep - 1; i >= 1; i--) {
      try {
        renameSync(`${file}.${i}`, `${file}.${i + 1}`);
      } catch {
        // Not there yet: fewer old logs than `keep`.
      }
    }
    if (this.rotation.keep > 0) renameSync(file, `${file}.1`);
    else unlinkSync(file);
  }
}
