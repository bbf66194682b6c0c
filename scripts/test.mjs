#!/usr/bin/env node
// `npm test`: build, node-tap, the per-file coverage gate. What it adds to the plain sequence
// (`npm run build && tap && node scripts/check-coverage.mjs`) is where the wall time went:
//
// - tsc took ~20 s of CPU before the first test could start, and nearly all of it is the type
//   check (`tsc --noEmit` costs the same). Here the JavaScript is written by esbuild, file by
//   file with source maps, as tsc lays it out (dist/src, dist/test, dist/bench: ~0.3 s), and
//   the full strict type check runs beside the tests (started once the build is done, see
//   below), at their CPU priority (niced, it got so little CPU beside the test groups that it
//   trailed them). npm test says when it ended, relative to the tests: it is on the run's
//   critical path when that is after them. `npm test` fails if it fails, as before.
//   The check is tsgo's (@typescript/native-preview, the TypeScript team's port of the same
//   checker to Go, TypeScript 7): from scratch, as on a fresh clone and in CI, 2.3 s of CPU
//   where tsc 5.9 took 17 s, the same diagnostics. `npm run build` (demo, libvirt, lab, bench,
//   install) still emits with tsc, which type-checks as it does, so CI checks with both.
//   tsconfig's `isolatedModules` makes the check reject what a file-by-file compiler could get
//   wrong.
// - the test files run in groups (scripts/test-groups.mjs), not one Node each, and the groups
//   run here, each a plain Node, not under tap's runner (see runGroups() below): tap's runner
//   started each under its coverage loader, which cost every group 3-4 s of wall time and the
//   run 6 s more around them. The tests are node-tap tests as before; `npx tap
//   dist/test/x.test.js` runs one file under tap's runner (.taprc).
// - a group's TAP is filtered for the terminal (passing test points, subtest headers and plans
//   left out; failures with their diagnostics, skips, todos, console output and the totals
//   kept), and kept whole in .tap/test-results. tap's `terse` reporter (.taprc, for `npx tap
//   FILE`) is an ink/React app that re-renders on every assertion: over npm test's ~3700
//   assertions it took 14.1 s of CPU, 7.8 s without it (two full runs).
// - the bundles (with their code-cache training runs), the man page and the test groups are
//   independent of each other: built at the same time.
import { build } from 'esbuild';
import { spawn } from 'node:child_process';
import { Report } from 'c8';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

// What of a group's TAP stream is left out: passing test points, subtest headers, plans, blank
// lines. A skip or todo is a passing point too, and is kept.
const QUIET = /^\s*(ok \d+\b(?!.*#\s*(SKIP|TODO)\b)|# Subtest: |\d+\.\.\d+\s*$|# time=|TAP version |$)/i;

// What the tap runner (`npx tap`) would take from .taprc, read from there so both agree: the
// per-file timeout (test/helpers/test-group.ts restarts it for every file of a group), and
// which compiled files are left out of the coverage report.
const taprc = readFileSync(join(root, '.taprc'), 'utf8');
const perFileTimeout = /^timeout:\s*(\d+)\s*$/m.exec(taprc)?.[1];
const coverageExclude = /^coverage-exclude:\n((?:\s+(?:- .*|#.*)\n)+)/m.exec(taprc)?.[1].match(/(?<=- ")[^"]+(?=")/g);
if (!perFileTimeout || !coverageExclude) throw new Error('npm test: .taprc has no `timeout:` or no `coverage-exclude:` list: scripts/test.mjs reads both');

const GROUP_DIR = join(root, 'dist/test-groups');
const V8_COVERAGE = join(root, '.tap/v8-coverage');
// Where `node scripts/test-groups.mjs --measured` reads each group's TAP (tap's own layout).
const RESULTS = join(root, '.tap/test-results/dist/test-groups');

/**
 * One group (dist/test-groups/NN.test.js) in a Node of its own, V8 recording its coverage
 * (NODE_V8_COVERAGE; the group runner keeps it from the processes its tests start). Its TAP
 * is kept whole in RESULTS and filtered for the terminal, where it is printed once the group
 * has ended, so two groups' lines never interleave.
 */
async function runGroup(file, queue) {
  const started = Date.now();
  const child = spawn(node, [join(GROUP_DIR, file)], {
    cwd: root,
    env: { ...process.env, NODE_V8_COVERAGE: V8_COVERAGE, TAP_TIMEOUT: perFileTimeout, VFPOOL_TEST_QUEUE: 'ipc' },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  // The group asks for its next test file when it is done with one (test/helpers/test-group.ts).
  child.on('message', (m) => {
    if (m?.vfpoolNextTestFile === true) child.send({ vfpoolTestFile: queue.shift() ?? null });
  });
  // A group gone before its answer arrived needs none; any other error is shown (the group's
  // exit status then fails it).
  child.on('error', (err) => {
    if (err.code !== 'ERR_IPC_CHANNEL_CLOSED' && err.code !== 'EPIPE') console.error(`npm test: dist/test-groups/${file}: ${err.message}`);
  });
  const closed = new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? signal)));
  // What tap's runner did with its per-file timeout, for the whole process: a group that
  // prints nothing for that long (a hang outside any test, or a handle that keeps it from
  // exiting after its last test) is killed, and fails.
  let silent = null;
  const watchdog = () => {
    clearTimeout(silent);
    silent = setTimeout(() => {
      console.error(`npm test: dist/test-groups/${file} printed nothing for ${perFileTimeout} s: killed`);
      child.kill('SIGKILL');
    }, perFileTimeout * 1000);
  };
  watchdog();
  const lines = [];
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    lines.push(line);
    watchdog();
  }
  const status = await closed;
  clearTimeout(silent);
  writeFileSync(join(RESULTS, `${file}.tap`), `${lines.join('\n')}\n`);
  // tap's last words in a group: `# { total: 1635, pass: 1635 }` (fail, skip, todo when any).
  const counts = Object.fromEntries([...(lines.findLast((l) => l.startsWith('# { total: ')) ?? '').matchAll(/(\w+): (\d+)/g)].map((m) => [m[1], Number(m[2])]));
  for (const line of lines) if (!QUIET.test(line)) process.stdout.write(`${line}\n`);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const ok = status === 0 && counts.total !== undefined && !counts.fail;
  console.log(`${ok ? 'ok' : 'not ok'} - dist/test-groups/${file}: ${counts.pass ?? 0} of ${counts.total ?? '?'} assertions passed in ${seconds} s${status === 0 ? '' : ` (exit ${status})`}`);
  return { ok, counts };
}

/**
 * The groups at once (three on 2 cores: scripts/test-groups.mjs), taking the test files from one
 * queue, heaviest first, then their coverage of src/:
 * c8's report (tap's own coverage engine) of what V8 recorded, mapped back to src/*.ts through
 * the build's source maps, a file no test loaded counted at 0%. This is `tap` without its
 * runner: the runner started every group under @tapjs/processinfo's module loader, a thread of
 * its own in Node 20 through which each group loaded tap, src/ and the helpers: 3-4 s more
 * of a group's wall time, and 6 s more around the groups (tap's start-up and its report).
 */
async function runGroups() {
  rmSync(V8_COVERAGE, { recursive: true, force: true });
  rmSync(RESULTS, { recursive: true, force: true });
  mkdirSync(RESULTS, { recursive: true });
  const queue = JSON.parse(readFileSync(join(GROUP_DIR, 'queue.json'), 'utf8'));
  const results = await Promise.all(readdirSync(GROUP_DIR).filter((f) => f.endsWith('.test.js')).sort().map((f) => runGroup(f, queue)));
  // Every group gone and files left: they never ran.
  if (queue.length) console.log(`not ok - ${queue.length} test files never ran, from ${queue[0]} on: every group ended before taking them`);
  const total = {};
  for (const { counts } of results) for (const [k, v] of Object.entries(counts)) total[k] = (total[k] ?? 0) + v;
  await new Report({
    reporter: ['text', 'json-summary'],
    // check-coverage.mjs reads the json-summary here.
    reportsDirectory: join(root, '.tap/report'),
    tempDirectory: V8_COVERAGE,
    include: ['dist/src/**'],
    exclude: coverageExclude,
    excludeNodeModules: true,
    all: true,
    src: [join(root, 'dist/src')],
  }).run();
  console.log(`# { ${Object.entries(total).map(([k, v]) => `${k}: ${v}`).join(', ')} }`);
  return results.every((r) => r.ok) && queue.length === 0 ? 0 : 1;
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
// tsconfig.check.json: tsconfig.json's program, no output, the checker's record of the last
// check in node_modules/.cache (gone with `npm ci`, so CI checks from scratch). In build mode
// (-b) a run on inputs unchanged since a clean check ends after reading that record (0.15 s).
typecheck = spawn(bin('tsgo'), ['-b', 'tsconfig.check.json'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
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

const testStatus = await runGroups();
const testsEnded = Date.now();

const tc = await typecheckDone;
const lag = (typecheckEnded - testsEnded) / 1000;
// Whether the type check is on the run's critical path: it is when it ends after the tests.
const when = lag > 0 ? `${lag.toFixed(1)} s after the tests` : `${(-lag).toFixed(1)} s before the tests ended`;
if (tc !== 0) {
  process.stderr.write(typecheckOutput);
  console.error(`npm test: the type check (tsgo -b tsconfig.check.json) failed (exit ${tc}, ended ${when})`);
} else {
  console.log(`npm test: type check (tsgo -b tsconfig.check.json, strict) clean, ended ${when}`);
}
if (testStatus !== 0) console.error("npm test: tests failed (see the groups' `not ok` lines above)");
if (tc !== 0 || testStatus !== 0) process.exit(1);
await run(node, [join(root, 'scripts/check-coverage.mjs')]);
console.log(`npm test: ${((Date.now() - t0) / 1000).toFixed(1)} s in all`);
