#!/usr/bin/env node
// Packs every compiled test file (dist/test/**/*.test.js) into a few groups (`npm test` runs
// this after the build, then the groups at once; .taprc includes them for a plain `npx tap`).
// Why: tap runs each file in its own Node with its coverage loader (@tapjs/processinfo's
// module hooks, on a thread of their own in Node 20), ~1.5 s of CPU per file before the first
// assertion; 89 files paid that 89 times on 2 cores. A group runs its files one after the
// other in one Node (test/helpers/test-group.ts: each file alone, env and cwd checked after
// each, tap's per-file timeout per file).
//
// Every test file lands in exactly one group (checked below), new files included: nothing is
// left out. Groups are balanced by the files' measured seconds (WEIGHTS; files not listed count
// as DEFAULT_SECONDS), longest file first, and numbered heaviest first (the order `npx tap`
// starts them in). npm test starts GROUPS of them at once and hands the files out from one
// queue, heaviest first (queue.json), each group taking the next when it is done with one.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const testDir = join(root, 'dist/test');
const outDir = join(root, 'dist/test-groups');

// Seconds each file takes (the files above ~1 s), used only to order the queue and balance the
// groups: each file's time in a whole npm test run on the 2-core machine (2026-12-01; a
// file's time varies up to 4x with the machine's load, so the balance is rough). After the test
// files change, `node scripts/test-groups.mjs --measured` prints these from the last npm test's
// results.
const WEIGHTS = {
  'install.test.js': 23.1,
  'demo.test.js': 13.2,
  'fuzz/qemu-cmdline.test.js': 6.1,
  'migrate/migrate-qmp.test.js': 5.7,
  'ops/doctor.test.js': 5.5,
  'pool/crash-reconcile.test.js': 5.2,
  'test-group.test.js': 5.2,
  'host/linux-host-flow.test.js': 4.4,
  'state/plan-trash.test.js': 4.0,
  'fuzz/processes.test.js': 3.9,
  'entry/network-hook.test.js': 3.7,
  'entry/cli-conventions.test.js': 3.5,
  'pool/crash-release.test.js': 3.4,
  'state/hostile-state.test.js': 3.3,
  'pool/crash-net-start.test.js': 3.2,
  'bundles.test.js': 3.2,
  'migrate/crash-confirm-destination-success.test.js': 3.1,
  'ops/doctor-cli.test.js': 3.1,
  'pool/guest-concurrency.test.js': 3.1,
  'entry/qemu-wrapper-crash.test.js': 3.0,
  'pool/crash-prepare.test.js': 2.9,
  'pool/guest-faults.test.js': 2.9,
  'entry/owner-gone.test.js': 2.7,
  'host/linux-host.test.js': 2.6,
  'entry/cli.test.js': 2.6,
  'entry/qemu-wrapper.test.js': 2.5,
  'entry/qemu-hook.test.js': 2.3,
  'util/json-file.test.js': 2.3,
  'pool/crash-net-destroy.test.js': 2.2,
  'migrate/crash-prepare.test.js': 2.2,
  'qemu/qemu-real.test.js': 2.1,
  'pool/guest.test.js': 2.0,
  'pool/pools.test.js': 1.9,
  'migrate/crash-perform.test.js': 1.7,
  'migrate/crash-confirm-source.test.js': 1.7,
  'migrate/crash-confirm-destination.test.js': 1.6,
  'pool/pool-no-stall.test.js': 1.6,
  'entry/shim.test.js': 1.5,
  'pool/pf-rename.test.js': 1.4,
  'migrate/migrate-dry-run.test.js': 1.3,
  'pool/guest-deliver.test.js': 1.3,
  'fuzz/parsers.test.js': 1.3,
  'migrate/migrate-cli.test.js': 1.2,
  'pool/guest-qemu-plan.test.js': 1.2,
  'qemu/deliver.test.js': 1.2,
  'entry/shim-scale.test.js': 1.2,
  'pool/reconcile.test.js': 1.2,
  'entry/cli/guest-ops-in-process.test.js': 1.1,
  'pool/pool-overlap.test.js': 1.0
};
const DEFAULT_SECONDS = 0.25;
// Three on 2 cores. Each group spends over half its time waiting for the processes its tests
// start (a CPU profile of a whole run: 42 s idle of 75 s), and a third group fills those waits.
// Under tap's runner a group cost ~3.5 s of CPU more than its files (everything it loaded went
// through @tapjs/processinfo's loader thread), and two were best; npm test now runs the groups
// as plain Nodes (scripts/test.mjs), where a group costs ~1 s (tap, src/ and the helpers).
// Whole npm test runs, interleaved: 3 groups 38.97 s and 43.58 s, 2 groups 39.66 s and 43.88 s
// (the machine's load moved between the pairs).
const GROUPS = Number(process.env.VFPOOL_TEST_GROUPS ?? 3);

// `--measured`: each file's seconds in the last npm test (its tests' `# time=` in the saved
// results of the groups; under the run's load, so comparable with each other), as WEIGHTS lines.
if (process.argv.includes('--measured')) {
  const results = join(root, '.tap/test-results/dist/test-groups');
  if (!existsSync(results)) {
    console.error(`test-groups --measured: no results of a grouped tap run in ${results}: run npm test first`);
    process.exit(1);
  }
  const seconds = {};
  // tap keeps the results of a group file that no longer exists (a run with more groups): only
  // the groups of the last build count.
  const current = existsSync(outDir) ? new Set(readdirSync(outDir).map((f) => `${f}.tap`)) : new Set();
  for (const f of readdirSync(results).filter((f) => current.has(f))) {
    let sum = 0;
    for (const line of readFileSync(join(results, f), 'utf8').split('\n')) {
      // A group's top-level tests are its files' tests, then each file's "ran alone" check.
      const m = /^(?:not )?ok \d+ - (.*?)(?: # time=([\d.]+)ms)?$/.exec(line);
      if (!m) continue;
      sum += Number(m[2] ?? 0) / 1000;
      const file = /^\.\.\/test\/(.*): ran alone/.exec(m[1]);
      if (file) [seconds[file[1]], sum] = [sum, 0];
    }
  }
  for (const [f, s] of Object.entries(seconds).sort((a, b) => b[1] - a[1])) if (s >= 1) console.log(`  '${f}': ${s.toFixed(1)},`);
  process.exit(0);
}

function testFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...testFiles(p));
    else if (name.endsWith('.test.js')) out.push(relative(testDir, p));
  }
  return out;
}

const files = testFiles(testDir).sort();
if (files.length === 0) throw new Error(`test-groups: no *.test.js under ${testDir}: run npm run build first`);
const weight = (f) => WEIGHTS[f] ?? DEFAULT_SECONDS;
// Longest processing time first: each file, heaviest first, to the lightest group so far.
const heaviestFirst = [...files].sort((a, b) => weight(b) - weight(a) || a.localeCompare(b));
const groups = Array.from({ length: Math.min(GROUPS, files.length) }, () => ({ seconds: 0, files: [] }));
for (const f of heaviestFirst) {
  const g = groups.reduce((min, x) => (x.seconds < min.seconds ? x : min));
  g.files.push(f);
  g.seconds += weight(f);
}
groups.sort((a, b) => b.seconds - a.seconds);

const placed = groups.flatMap((g) => g.files).sort();
if (placed.length !== files.length || placed.some((f, i) => f !== files[i])) {
  throw new Error('test-groups: a test file is in no group or in two: this script is wrong');
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
groups.forEach((g, i) => {
  const list = g.files.map((f) => `  ${JSON.stringify(`../test/${f}`)},`).join('\n');
  writeFileSync(
    join(outDir, `${String(i).padStart(2, '0')}.test.js`),
    `// Written by scripts/test-groups.mjs (about ${g.seconds.toFixed(1)} s of tests): do not edit.
import { runTestFiles } from '../test/helpers/test-group.js';
await runTestFiles(import.meta.url, [
${list}
]);
`,
  );
});
// npm test hands the files out from one queue in this order instead (test/helpers/test-group.ts).
writeFileSync(join(outDir, 'queue.json'), `${JSON.stringify(heaviestFirst.map((f) => `../test/${f}`), null, 1)}\n`);
console.log(`test-groups: ${files.length} test files in ${groups.length} groups (dist/test-groups/)`);
