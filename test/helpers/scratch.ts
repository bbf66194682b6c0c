import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';

const TMPFS = '/dev/shm';

/**
 * A private directory for one test, removed after it, on tmpfs when the machine has one. Where
 * vfpool keeps its state in production (/run/vfpool) is tmpfs too; every state and sim-kernel
 * write fsyncs, and on a shared disk that costs 20-30 ms a write against ~1 on tmpfs, which
 * made the failure-injection suites spend most of their time waiting for the disk.
 */
export function scratchDir(t: Test): string {
  if (!existsSync(TMPFS)) return t.testdir({});
  const dir = mkdtempSync(join(TMPFS, 'vfpool-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
