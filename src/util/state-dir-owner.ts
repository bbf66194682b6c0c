import { lstatSync, realpathSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { BadInputError } from '../errors.js';

/**
 * What in the state directory only root (or the user running vfpool) may have made: root acts on
 * the records there (restores a VF to the driver and MAC a record names, hands a plan's host
 * device to QEMU). `qemu/NAME/` is left out: it is its QEMU user's by design.
 */
const ROOT_ENTRIES = ['state.json', 'index', 'qemu', 'migrate'];

/** The state directory, an entry of it or a directory above it that another user controls (exit 2). */
export class StateDirOwnerError extends BadInputError {}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    // Missing (made at the first operation), or not visible to this user (the QEMU wrapper,
    // which cannot see into a 0700 state directory either, so it reads nothing there).
    return null;
  }
}

/** The directories above `dir`, nearest first, as written and, where a link is among them, as resolved. */
function ancestors(dir: string): string[] {
  const out: string[] = [];
  const walk = (from: string) => {
    for (let p = from; ; p = dirname(p)) {
      if (!out.includes(p)) out.push(p);
      if (p === dirname(p)) break;
    }
  };
  walk(dirname(dir));
  try {
    walk(realpathSync(dirname(dir)));
  } catch {
    // Not there yet: makeDir creates it as root.
  }
  return out;
}

/**
 * Refuses (one line, exit 2, nothing changed) a state directory that a user other than root and
 * the caller could have written: as ssh's StrictModes refuses a foreign or group-writable home,
 * since root's hooks would otherwise trust records, plans and links that user planted. Checked
 * by lstat on every use (a few syscalls; no cache a later chown could outdate): the directory and
 * the entries root makes in it must be owned by root or the effective user, and every directory
 * above it too, none of them writable by others unless sticky (/tmp, /dev/shm), or whoever can
 * write there can swap the state directory itself. Modes of the directory itself are
 * StateStore.ensureDir's business (it narrows them); the QEMU wrapper, running as the QEMU user,
 * passes on root's directory.
 */
export function assertStateDirTrusted(stateDir: string, euid = process.geteuid?.() ?? 0): void {
  const problem = untrustedDir(stateDir, ROOT_ENTRIES, euid);
  if (problem) {
    throw new StateDirOwnerError(
      `the state directory ${stateDir} is open to other users, so vfpool would act as root on what they plant there: ${problem.problems}`,
      `${problem.fixes}, or point VFPOOL_STATE_DIR at a directory of root's`,
    );
  }
}

/**
 * The same rule for the VF history (VFPOOL_JOURNAL_DIR): root appends to, renames and chmods
 * files there, and `vfpool history` is what an administrator believes about who had a VF.
 * null: trusted (or not there yet: the first entry makes it).
 */
export function untrustedJournalDir(journalDir: string, euid = process.geteuid?.() ?? 0): { message: string; hint: string } | null {
  const problem = untrustedDir(journalDir, [JOURNAL_ENTRY], euid);
  return problem && {
    message: `the history directory ${journalDir} is open to other users, who could plant or rewrite the VF history root writes there: ${problem.problems}`,
    hint: `${problem.fixes}, or point VFPOOL_JOURNAL_DIR at a directory of root's`,
  };
}

/** The journal's live file (state/journal.ts JOURNAL_FILE; not imported: this module stays free of the journal's). */
const JOURNAL_ENTRY = 'history.jsonl';

function untrustedDir(dir: string, entries: string[], euid: number): { problems: string; fixes: string } | null {
  const trusted = (uid: number) => uid === 0 || uid === euid;
  const owner = euid === 0 ? 'root' : `root or uid ${euid}`;
  const foreign: Array<[string, number]> = [];
  const writable: Array<[string, number]> = [];
  for (const path of [dir, ...entries.map((e) => join(dir, e))]) {
    const st = lstatOrNull(path);
    if (st && !trusted(st.uid)) foreign.push([path, st.uid]);
  }
  for (const path of ancestors(dir)) {
    const st = lstatOrNull(path);
    if (!st || st.isSymbolicLink()) continue;
    if (!trusted(st.uid)) foreign.push([path, st.uid]);
    else if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) writable.push([path, st.mode & 0o777]);
  }
  if (!foreign.length && !writable.length) return null;
  const problems = [
    ...foreign.map(([p, uid]) => `${p} is owned by uid ${uid}, not ${owner}`),
    ...writable.map(([p, mode]) => `${p} is writable by ${mode & 0o002 ? 'others' : 'its group'} (mode ${mode.toString(8)}, not sticky)`),
  ];
  const fixes = [
    // What another user owned may hold what they planted: looked at before root trusts it.
    ...(foreign.length ? [`chown 0:0 ${foreign.map(([p]) => p).join(' ')} (check what is in it first)`] : []),
    ...(writable.length ? [`chmod go-w ${writable.map(([p]) => p).join(' ')}`] : []),
  ];
  return { problems: problems.join(', '), fixes: fixes.join(' && ') };
}
