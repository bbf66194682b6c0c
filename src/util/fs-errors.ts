import { readdirSync } from 'node:fs';
import { BadInputError, HostError, VfpoolError, errnoOf } from '../errors.js';

/** A directory's entries (unsorted), or what `onError` makes of the failure (it may throw). */
export function readdirOr(path: string, onError: (err: unknown) => string[]): string[] {
  try {
    return readdirSync(path);
  } catch (err) {
    return onError(err);
  }
}

/**
 * A file-system failure on a path the person configured (state dir, config dir, conf file) as
 * one line with a fix, instead of Node's raw error ending up as "unexpected error … a vfpool
 * bug". `what` names the role of the path ("the state file", "the pool definitions directory").
 * Misconfiguration (a directory where a file belongs, or the other way round) is bad input
 * (exit 2); a refusal of the machine (permissions, I/O) is a HostError (exit 1).
 */
export function fsError(err: unknown, path: string, what: string, setting?: string): VfpoolError {
  if (err instanceof VfpoolError) return err; // already one line with its fix (a bad name, say)
  const code = errnoOf(err);
  const moveIt = setting ? `, or point ${setting} elsewhere` : '';
  switch (code) {
    case 'EISDIR':
      return new BadInputError(`${what} ${path} is a directory`, `remove or rename that directory${moveIt}`, { cause: err });
    case 'ENOTDIR':
      return new BadInputError(`${what} ${path}: a part of that path is a file, not a directory`, `remove or rename that file${moveIt}`, { cause: err });
    case 'EEXIST':
      return new BadInputError(`${what} ${path} exists and is not a directory`, `remove or rename it${moveIt}`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new HostError(`${what} ${path}: permission denied (${code})`, { code, hint: 'run vfpool as root', cause: err });
    case 'EROFS':
      return new HostError(`${what} ${path} is on a read-only file system`, { code, hint: `make it writable${moveIt}`, cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new HostError(`${what} ${path}: its file system is full (${code})`, { code, hint: `free space on it${moveIt}`, cause: err });
    default:
      return new HostError(`${what} ${path}: ${code ?? (err instanceof Error ? err.message : String(err))}`, { code, hint: 'check the file system (dmesg)', cause: err });
  }
}
