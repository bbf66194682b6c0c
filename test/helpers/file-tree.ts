import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Test } from 'tap';
import type { SimSeed } from '../../src/host/sim-kernel.js';
import { makeSimEnv, type SimEnv } from './env.js';

/**
 * A directory's files and subdirectories, with their modes, held in memory: a world set up
 * once by the first test that needs it and laid out again in each later test's own directory.
 * In memory, not in a directory of its own, because a test's directories go with that test,
 * and a teardown on the root test would let a test group end before its next file
 * (node-tap's root ends once idle when it has a teardown). Sockets are left out (a fake QEMU's
 * belongs to the test that started it).
 */
export interface FileTree {
  dirs: Array<{ path: string; mode: number }>;
  files: Array<{ path: string; mode: number; data: Buffer }>;
}

export function readTree(root: string): FileTree {
  const tree: FileTree = { dirs: [], files: [] };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        tree.dirs.push({ path: relative(root, p), mode: st.mode & 0o7777 });
        walk(p);
      } else if (st.isFile()) {
        tree.files.push({ path: relative(root, p), mode: st.mode & 0o7777, data: readFileSync(p) });
      } else if (!st.isSocket()) {
        throw new Error(`readTree: ${p} is neither a file, a directory nor a socket`);
      }
    }
  };
  walk(root);
  return tree;
}

/** Lays `tree` out under `root` (which exists), replacing files of the same names. */
export function writeTree(tree: FileTree, root: string): void {
  for (const d of tree.dirs) mkdirSync(join(root, d.path), { recursive: true });
  for (const f of tree.files) {
    writeFileSync(join(root, f.path), f.data);
    chmodSync(join(root, f.path), f.mode);
  }
  // Modes of directories last: a directory without write permission still gets its files.
  for (const d of tree.dirs) chmodSync(join(root, d.path), d.mode);
}

/**
 * A factory of simulated hosts in the state some tests start from: the first call makes one
 * with makeSimEnv and `setup` (vfpool's own commands) and keeps its files (readTree); every
 * call returns a fresh host laid out from them in a directory of the calling test's own, so
 * hosts run side by side and outlive whichever test made the first. What `setup` returns is
 * shared by every copy: it must not name a path inside the host (a copy lives elsewhere).
 */
export function seededWorlds<X extends object>(setup: (w: SimEnv) => Promise<X>, seed?: SimSeed): (t: Test) => Promise<SimEnv & X> {
  let seeded: Promise<{ tree: FileTree; extra: X }> | undefined;
  return async (t) => {
    seeded ??= (async () => {
      const w = makeSimEnv(t, seed);
      const extra = await setup(w);
      return { tree: readTree(w.dir), extra };
    })();
    const { tree, extra } = await seeded;
    const w = makeSimEnv(t, seed);
    writeTree(tree, w.dir);
    return { ...w, ...extra };
  };
}

/**
 * Every directory under `root` with its mode, every file with its mode and bytes (as text, so
 * that a difference shows as one): what a dry run must leave exactly as it found it.
 */
export function treeText(root: string): Record<string, string> {
  const tree = readTree(root);
  return Object.fromEntries([
    ...tree.dirs.map((d): [string, string] => [`${d.path}/`, d.mode.toString(8)]),
    ...tree.files.map((f): [string, string] => [f.path, `${f.mode.toString(8)} ${f.data.toString('utf8')}`]),
  ]);
}
