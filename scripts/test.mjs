#!/usr/bin/env node
// `npm test`: build, node-tap, the per-file coverage gate. What it adds to the plain sequence
// (`npm run build && tap && node scripts/check-coverage.mjs`) is where the wall time went:
//
// - tsc took ~20 s of CPU before the first test could start, and nearly all of it is the type
//   check (`tsc --noEmit` costs the same). Here the JavaScript is written by esbuild, file by
//   file with source maps, as tsc lays it out (dist/src, dist/test, dist/bench: ~0.3 s), and
//   the full strict type check runs beside the tests (started once the build is done, see
//   below), at their CPU priority: when it was niced (10) it got so little CPU beside the test
//   groups on a busy machine that it ended after the tests (1.5 s and 9.9 s after them in two
//   runs on 2 shared cores), one core checking types while the other idled; at the tests'
//   priority it takes its share from the start (the same CPU in all) instead of trailing. npm
//   test says when it ended, relative to the tests: it is on the run's critical path when that
//   is after them.
//   `npm test` fails if it fails, as before. tsconfig's
//   `isolatedModules` makes tsc reject what a file-by-file compiler could get wrong.
//   `npm run build` (demo, libvirt, lab, bench, install) still emits with tsc.
// - the test files run in groups (scripts/test-groups.mjs), not one Node each.
// - tap reports with its plain `tap` reporter, filtered here (passing test points, subtest
//   headers and plans left out; failures with their diagnostics, skips, todos, console output,
//   the totals and the coverage report kept). .taprc's `terse` reporter (for `npx tap FILE`) is
//   an ink/React app that re-renders on every assertion: over npm test's ~3700 assertions tap's
//   own process took 14.1 s of CPU with it, 7.8 s with this (two full runs).
// - the bundles (with their code-cache training runs), the man page and the test groups are
//   independent of each other: built at the same time.
import { build } from 'esbuild';
import { spawn } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules/.bin', name);
const node = process.execPath;

// What tsconfig.json compiles: src/, test/ and bench/ but test/lab and test/libvirt (shell
// suites with their own helpers), declaration files excluded.
function sources(dir) {
  const out = [];
  for (const name of readdirSync(join(root, dir))) {
    const rel = join(dir, name);
    if (rel === 'test/lab' || rel === 'test/libvirt') continue;
    if (statSync(join(root, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

let typecheck = null;
/** Runs a command to its end (stdio shared); a failure ends npm test. */
async function run(cmd, args) {
  const child = spawn(cmd, args, { cwd: root, stdio: 'inherit' });
  const status = await new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? signal)));
  if (status !== 0) {
    console.error(`npm test: ${[relative(root, cmd) || cmd, ...args].join(' ')} failed (exit ${status})`);
    typecheck?.kill();
    process.exit(1);
  }
}

// What of tap's TAP stream is left out: passing test points, subtest headers, plans, blank
// lines. A skip or todo is a passing point too, and is kept.
const QUIET = /^\s*(ok \d+\b(?!.*#\s*(SKIP|TODO)\b)|# Subtest: |\d+\.\.\d+\s*$|# time=|TAP version |$)/i;

/** tap with the plain TAP reporter, its stdout filtered to what a person reads (see above). */
async function tap() {
  const child = spawn(bin('tap'), ['--reporter', 'tap'], { cwd: root, stdio: ['inherit', 'pipe', 'inherit'] });
  const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? signal)));
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    // A group's own result line (not indented) says which group ended, and when.
    if (!QUIET.test(line) || /^ok \d+ - dist\/test-groups\//.test(line)) process.stdout.write(`${line}\n`);
  }
  return closed;
}

const t0 = Date.now();
rmSync(join(root, 'dist'), { recursive: true, force: true });

await build({
  entryPoints: [...sources('src'), ...sources('test'), ...sources('bench')].map((f) => join(root, f)),
  outdir: join(root, 'dist'),
  outbase: root,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  tsconfig: join(root, 'tsconfig.json'),
  logLevel: 'warning',
});
await Promise.all(['bundle.mjs', 'man.mjs', 'test-groups.mjs'].map((script) => run(node, [join(root, 'scripts', script)])));
console.log(`npm test: built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// The type check, alongside the tests; its output is kept and shown at the end. Started once
// the build is done: beside a check from scratch (CI's) the build took 3.6-3.9 s instead of
// 1.7-1.8 s, and the build is on the run's critical path (the tests wait for it), the check
// is not (it ended over a minute before the tests).
// tsconfig.check.json: tsconfig.json's program, no output, tsc's record of the last check in
// node_modules/.cache (gone with `npm ci`, so CI checks from scratch). In build mode (-b) a
// run on inputs unchanged since a clean check ends after reading that record: 0.4 s of CPU,
// against ~6 s for `tsc --noEmit --incremental`, which parsed every file again to find out.
typecheck = spawn(bin('tsc'), ['-b', 'tsconfig.check.json'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
let typecheckOutput = '';
typecheck.stdout.on('data', (d) => (typecheckOutput += d));
typecheck.stderr.on('data', (d) => (typecheckOutput += d));
let typecheckEnded = null;
const typecheckDone = new Promise((resolve) =>
  typecheck.on('close', (code, signal) => {
    typecheckEnded = Date.now();
    resolve(code ?? signal);
  }),
);

const tapStatus = await tap();
const tapEnded = Date.now();

const tc = await typecheckDone;
const lag = (typecheckEnded - tapEnded) / 1000;
// Whether the type check is on the run's critical path: it is when it ends after the tests.
const when = lag > 0 ? `${lag.toFixed(1)} s after the tests` : `${(-lag).toFixed(1)} s before the tests ended`;
if (tc !== 0) {
  process.stderr.write(typecheckOutput);
  console.error(`npm test: the type check (tsc -b tsconfig.check.json) failed (exit ${tc}, ended ${when})`);
} else {
  console.log(`npm test: type check (tsc -b tsconfig.check.json, strict) clean, ended ${when}`);
}
if (tapStatus !== 0) console.error(`npm test: tap failed (exit ${tapStatus})`);
if (tc !== 0 || tapStatus !== 0) process.exit(1);
await run(node, [join(root, 'scripts/check-coverage.mjs')]);
console.log(`npm test: ${((Date.now() - t0) / 1000).toFixed(1)} s in all`);
