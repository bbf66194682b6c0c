import fc from 'fast-check';
import type { Test } from 'tap';

/**
 * fast-check with a fixed seed, so `npm test` is the same run every time and a failure can be
 * replayed: the seed is printed with the counterexample (VFPOOL_FUZZ_SEED=N picks another).
 */
export const FUZZ_SEED = Number(process.env.VFPOOL_FUZZ_SEED ?? 20261130);

export async function checkProperty<Ts extends [unknown, ...unknown[]]>(
  t: Test,
  name: string,
  prop: fc.IRawProperty<Ts>,
  numRuns: number,
): Promise<void> {
  const r = await fc.check(prop, { seed: FUZZ_SEED, numRuns, endOnFailure: true });
  if (r.failed) {
    t.fail(`${name}: counterexample ${fc.stringify(r.counterexample)} (seed ${r.seed}, path '${r.counterexamplePath}'): ${String(r.errorInstance)}`);
  } else {
    t.pass(`${name}: ${r.numRuns} runs (seed ${FUZZ_SEED})`);
  }
}

/** Values that must never reach a path or a shell: traversal, separators, controls, shell syntax. */
export const HOSTILE_STRINGS = [
  '..', '.', '../../etc/passwd', 'a/b', '/etc/shadow', 'a\nb', 'a\0b', 'a\rb', '\x1b[31mred', 'x\u2028y',
  '$(reboot)', '`id`', 'a;rm -rf /', 'a|b', 'a&&b', "a'b", 'a"b', '-rf', '--help', ' ', '', 'a b',
  'é', '\ud83d\ude00', 'x'.repeat(300), '%00', 'a\\b', '*', '?', '~root', '${IFS}',
];

/** A string that is never a valid vfpool object name (contains or starts with something refused). */
export const invalidName = fc.oneof(
  fc.constantFrom(...HOSTILE_STRINGS.filter((s) => !/^[A-Za-z0-9_+][A-Za-z0-9_.+:-]{0,127}$/.test(s))),
  fc.tuple(fc.string({ maxLength: 8 }), fc.constantFrom('/', '\n', '\0', ' ', '$', '`', ';', '|', '\\', '"', "'", '\t', '*'), fc.string({ maxLength: 8 }))
    .map(([a, bad, b]) => a + bad + b),
  fc.string({ maxLength: 10 }).map((s) => `.${s}`),
  fc.string({ maxLength: 10 }).map((s) => `-${s}`),
);
