import { appendFileSync } from 'node:fs';

/**
 * Test-only crash injection, so the crash suite can kill vfpool at every step the code has
 * rather than at steps listed by hand. Each call site names its step; the Nth time a process
 * passes a name it is `NAME#N`.
 * - `VFPOOL_TEST_CRASH_LIST=FILE`: append every point passed to FILE (one per line);
 * - `VFPOOL_TEST_CRASH_AT=NAME#N`: SIGKILL this process at that point (no finally, no unlock:
 *   exactly what a killed hook leaves behind).
 * Unset (production), a call costs two property reads.
 */
const passed = new Map<string, number>();

export function crashPoint(name: string): void {
  const at = process.env.VFPOOL_TEST_CRASH_AT;
  const list = process.env.VFPOOL_TEST_CRASH_LIST;
  if (!at && !list) return;
  const n = (passed.get(name) ?? 0) + 1;
  passed.set(name, n);
  const point = `${name}#${n}`;
  if (list) appendFileSync(list, point + '\n');
  if (at === point) process.kill(process.pid, 'SIGKILL');
}
