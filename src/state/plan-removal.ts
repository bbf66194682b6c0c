import { chmodSync, lchownSync, lstatSync, opendirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errnoOf } from '../errors.js';
import { removeFile } from '../util/json-file.js';
import { isSameProcessAlive, selfStartTicks } from '../util/process.js';
import { assertStateDirTrusted } from '../util/state-dir-owner.js';
import { domainRunDir, qmpLinkPath } from './domain-plan.js';

/**
 * Removes the domain's wrapper directory (plan, socket, cache) and its short link: retired at
 * once, then the trash emptied within its budget. Idempotent. What the budget left (a directory
 * its QEMU user flooded) is in `left`, emptied by the next removal.
 */
export function removeDomainPlan(stateDir: string, domain: string): { left: boolean } {
  retireDomainPlan(stateDir, domain);
  return purgePlanTrash(stateDir);
}

/**
 * Takes the domain's wrapper directory away in one rename, to `qemu/.trash-PID-START-RANDOM` (qemu/ is
 * root's: no QEMU user can move or plant anything there), and removes its short link. What is
 * in the directory does not matter here, so this is what runs under the state lock (reconcile):
 * a QEMU user that filled its directory with a million files held the lock for the seconds
 * their removal took, and every guest start and release waited, up to the lock's timeout.
 */
export function retireDomainPlan(stateDir: string, domain: string): void {
  assertStateDirTrusted(stateDir);
  const dir = domainRunDir(stateDir, domain);
  try {
    renameSync(dir, trashPath(stateDir));
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
  const link = qmpLinkPath(stateDir, domain);
  if (link !== null) rmSync(link, { force: true });
}

/**
 * Directories retired from qemu/: never a domain's (names never start with a dot) nor a short
 * link (`.qmp-`). Named by the pid and start time (/proc/PID/stat) of the vfpool emptying it: a
 * vfpool killed half-way leaves its pid, which another process may hold by the time the next
 * removal looks (a state directory on persistent storage, after a reboot). An older vfpool's
 * `.trash-PID-RANDOM` is judged by the pid alone.
 */
const TRASH = /^\.trash-(\d+)(?:-s(\d+))?-[0-9a-z]+$/;
/**
 * Entries removed per call: a wrapper directory holds 3 (plan, socket, capability cache); 10 000
 * are ~0.5 s of unlinks. An object so that a test can flood a directory past a smaller budget
 * (12 000 files cost the suite ~10 s of CPU on a 2-core VM).
 */
export const PURGE = { budget: 10_000 };

function trashPath(stateDir: string): string {
  const start = selfStartTicks();
  return join(stateDir, 'qemu', `.trash-${process.pid}${start === null ? '' : `-s${start}`}-${Math.random().toString(36).slice(2)}`);
}

/**
 * Empties qemu/'s trash, `budget` entries at most, outside the state lock. A trash directory is
 * first renamed to one of this process (a vfpool killed half-way leaves one that the next call
 * takes over; one a live vfpool is emptying is left to it). `left`: some stays for the next call.
 */
export function purgePlanTrash(stateDir: string, budget = PURGE.budget): { left: boolean } {
  const qemuDir = join(stateDir, 'qemu');
  let names: string[];
  try {
    names = readdirSync(qemuDir).filter((n) => TRASH.test(n));
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { left: false };
    throw err;
  }
  for (const name of names) {
    const [, pid, start] = TRASH.exec(name)!;
    const owner = Number(pid);
    const isMine = owner === process.pid && (start === undefined || Number(start) === selfStartTicks());
    if (!isMine && isSameProcessAlive(owner, start === undefined ? null : Number(start))) continue;
    let mine = join(qemuDir, name);
    if (!isMine) {
      mine = trashPath(stateDir);
      try {
        renameSync(join(qemuDir, name), mine);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') continue; // another vfpool took it first
        throw err;
      }
    }
    budget = removeTreeOfAnotherUser(mine, budget);
    if (budget <= 0) return { left: lstatSync(mine, { throwIfNoEntry: false }) !== undefined || names.length > 1 };
  }
  return { left: false };
}

/**
 * `rm -rf` of a directory its QEMU user may have written, at most `budget` entries; returns the
 * budget left (0: the directory may remain, partly emptied). Node's rmSync lstats an entry, then
 * lists it by path: a subdirectory swapped for a link to /etc between the two had root list and
 * unlink /etc's files. Here each directory is made root's 0700 before it is listed, so what is
 * listed stays put; files are unlinked (never chowned: one may be a hard link to anything) and
 * only directories, which cannot be hard links, are taken over. The top one must sit in a
 * directory its owner cannot write (qemu/ is root's). Listed as a stream (opendir), so a
 * million names are never all in memory for the few the budget removes.
 */
function removeTreeOfAnotherUser(dir: string, budget: number): number {
  const st = lstatSync(dir, { throwIfNoEntry: false });
  if (st === undefined) return budget;
  if (!st.isDirectory()) {
    removeFile(dir);
    return budget - 1;
  }
  const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  if (st.uid !== me.uid || st.gid !== me.gid) lchownSync(dir, me.uid, me.gid);
  chmodSync(dir, 0o700);
  for (;;) {
    const before = budget;
    const listing = opendirSync(dir);
    try {
      for (let e = listing.readSync(); e !== null && budget > 0; e = listing.readSync()) {
        const entry = join(dir, e.name);
        if (e.isDirectory()) budget = removeTreeOfAnotherUser(entry, budget);
        else {
          removeFile(entry);
          budget--;
        }
      }
    } finally {
      listing.closeSync();
    }
    if (budget <= 0) return 0;
    try {
      rmdirSync(dir);
      return budget - 1;
    } catch (err) {
      // Entries a pass did not see (unlinked under the listing): another pass, while it removes some.
      if (errnoOf(err) !== 'ENOTEMPTY' || budget === before) throw err;
    }
  }
}
