import { readFileSync } from 'node:fs';
import { readdirOr } from '../util/fs-errors.js';

/** One row of `vfpool doctor`: what was checked, what was found, and the exact fix when it failed. */
export interface Check {
  id: string;
  ok: boolean;
  found: string;
  /** A command, a kernel parameter or a config line; null when the check passed. */
  fix: string | null;
}

export const pass = (id: string, found: string): Check => ({ id, ok: true, found, fix: null });
export const fail = (id: string, found: string, fix: string): Check => ({ id, ok: false, found, fix });

/** A file's text, or null when it cannot be read (doctor never throws on what it inspects). */
export function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export function listDir(path: string): string[] {
  return readdirOr(path, () => []).sort();
}
