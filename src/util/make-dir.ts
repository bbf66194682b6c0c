import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { errnoOf } from '../errors.js';

/**
 * Makes `dir` with `mode` (an existing one is left as it is), and the parents it lacks 0755, as
 * `mkdir -p` makes them, rather than with `dir`'s own mode: a state directory made with its
 * parents 0700 (VFPOOL_STATE_DIR=/srv/vfpool/run on a fresh host) put qemu/NAME/plan.json out of
 * the reach of the QEMU user the wrapper runs as, and guests started without their VFs, with
 * nothing said. The parents are chmod'ed because a daemon's umask (077) narrows mkdir's mode.
 */
export function makeDir(dir: string, mode: number): void {
  const parent = dirname(dir);
  const first = mkdirSync(parent, { recursive: true, mode: 0o755 });
  if (first !== undefined) {
    for (let d = parent; ; d = dirname(d)) {
      chmodSync(d, 0o755);
      if (d === first || d === dirname(d)) break;
    }
  }
  try {
    mkdirSync(dir, { mode });
  } catch (err) {
    // As `mkdirSync(dir, { recursive: true })`: an existing directory (or a link to one) is
    // fine, an existing file is EEXIST.
    if (errnoOf(err) !== 'EEXIST' || !statSync(dir).isDirectory()) throw err;
  }
}
