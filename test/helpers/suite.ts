import type { Test } from 'tap';

/**
 * A subtest per check with a fresh world from `make`, cleaned up whatever the check did: the
 * shared suites run on the simulated host, a fixture sysfs and a real kernel, where a check that
 * leaves VFs behind would break the next one.
 */
export function eachWithFresh<W extends { cleanup?: () => Promise<void> }>(t: Test, make: (t: Test) => Promise<W>) {
  return (name: string, fn: (t: Test, w: W) => Promise<void>) =>
    t.test(name, async (t) => {
      const w = await make(t);
      try {
        await fn(t, w);
      } finally {
        await w.cleanup?.();
      }
    });
}
