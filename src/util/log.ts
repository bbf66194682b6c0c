import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * vfpool's log: `$VFPOOL_STATE_DIR/vfpool.log`, one line per step. Hooks keep stdout for XML
 * (libvirt reads it at migrate/restore), so progress goes here, and to stderr only on failure
 * or when a person asked for it.
 */
export class Logger {
  constructor(
    private readonly file: string | null,
    private readonly context: string,
    private readonly echo: ((line: string) => void) | null = null,
  ) {}

  static forStateDir(stateDir: string, context: string, echo: ((line: string) => void) | null = null): Logger {
    return new Logger(join(stateDir, 'vfpool.log'), context, echo);
  }

  child(context: string): Logger {
    return new Logger(this.file, `${this.context} ${context}`, this.echo);
  }

  info(msg: string): void {
    this.write('info', msg);
  }
  warn(msg: string): void {
    this.write('warn', msg);
  }

  private write(level: string, msg: string): void {
    const line = `${new Date().toISOString()} [${process.pid}] ${level} ${this.context}: ${msg}`;
    if (this.file) {
      try {
        appendFileSync(this.file, line + '\n', { mode: 0o600 });
      } catch (err) {
        // The state directory may not exist yet (the first operation creates it): once.
        try {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          mkdirSync(join(this.file, '..'), { recursive: true, mode: 0o700 });
          appendFileSync(this.file, line + '\n', { mode: 0o600 });
        } catch {
          // Logging must never turn a working operation into a failed one.
        }
      }
    }
    this.echo?.(`${level === 'warn' ? 'warning: ' : ''}${msg}`);
  }
}
