#!/usr/bin/env node
/**
 * What `npm test` of this tree costs against `npm test` of another commit (issue 7: at most a
 * quarter of 9e630d1's wall time, on the same machine), the two run one after the other, round
 * by round, so that a busy or a slow moment of the machine hits both alike: on the shared
 * 2-core machine the same tree's CPU moves by 20% between runs a few minutes apart, and only
 * ratios of runs taken side by side mean anything.
 *
 *   npm run bench:test-time [-- --base 9e630d1 --runs 3 --base-dir DIR --from-scratch --no-warm-up]
 *
 * The other commit is checked out in a git worktree of its own (removed after) with its own
 * `npm ci`, unless --base-dir names a checkout of it that is ready to test.
 *
 * A round of both, unmeasured, comes first (--no-warm-up leaves it out): the first `npm test`
 * of a checkout pays for what later ones find ready (its node_modules read from disk, this
 * tree's type-check cache; 9e630d1's first run in a new worktree took 177.7 s where its runs in
 * a used checkout took 145-154 s). --from-scratch removes this tree's type-check cache before
 * each of its runs, as on a fresh clone and in CI (its check then costs ~2.3 s of CPU instead
 * of 0.15 s); 9e630d1 keeps nothing between runs that its npm test reads (tsc runs whole).
 * A plain Node script, not a compiled bench/*.ts: `npm test` removes and rebuilds dist/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: opts } = parseArgs({
  options: {
    base: { type: 'string', default: '9e630d1' },
    runs: { type: 'string', default: '3' },
    'base-dir': { type: 'string' },
    'from-scratch': { type: 'boolean', default: false },
    'warm-up': { type: 'boolean', default: true },
  },
  allowNegative: true,
});
const runs = Number(opts.runs);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`bench test-time: --runs ${opts.runs} is not a whole number of rounds: give one, at least 1`);
  process.exit(2);
}

function git(args, cwd = REPO) {
  const r = spawnSync('git', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`bench test-time: git ${args.join(' ')}: ${r.stderr.trim()}`);
    process.exit(1);
  }
  return r.stdout.trim();
}

/**
 * CPU time (user + system, ms) of this process's waited-for children so far, from
 * /proc/self/stat (clock ticks, 100 a second): npm, the test runner and every process the
 * tests start are such children, each waited for by its parent.
 */
function childrenCpuMs() {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

let failed = false;
/** `npm test` of `what` in `dir`, its output to the log `name` in the work directory: wall and CPU seconds; a failure said, naming its log. */
async function npmTest(what, dir, name) {
  const cpu0 = childrenCpuMs();
  const t0 = process.hrtime.bigint();
  const log = join(work, name);
  const fd = openSync(log, 'w');
  const child = spawn('npm', ['test'], { cwd: dir, stdio: ['ignore', fd, fd] });
  const status = await new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? signal)));
  closeSync(fd);
  if (status !== 0) {
    failed = true;
    console.error(`bench test-time: npm test of ${what} failed (exit ${status}): see ${log}`);
  }
  return { wall: Number(process.hrtime.bigint() - t0) / 1e9, cpu: (childrenCpuMs() - cpu0) / 1000 };
}

const baseCommit = git(['rev-parse', `${opts.base}^{commit}`]);
const base = baseCommit.slice(0, 7);
// This tree as it is, uncommitted changes included: its label says so.
const head = `${git(['rev-parse', '--short=7', 'HEAD'])}${git(['status', '--porcelain', '--untracked-files=no']) ? '+changes' : ''}`;
if (opts['base-dir'] && git(['rev-parse', 'HEAD'], opts['base-dir']) !== baseCommit) {
  console.error(`bench test-time: ${opts['base-dir']} is not at ${base}: check out ${base} there, or leave --base-dir out`);
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'vfpool-test-time-'));
let baseDir = opts['base-dir'];
let worktree = null;
if (!baseDir) {
  worktree = join(work, `base-${base}`);
  git(['worktree', 'add', '--detach', worktree, baseCommit]);
  console.log(`bench test-time: ${base} checked out in ${worktree}; npm ci there`);
  const ci = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: worktree, stdio: ['ignore', 'ignore', 'inherit'] });
  if (ci.status !== 0) {
    git(['worktree', 'remove', '--force', worktree]);
    console.error(`bench test-time: npm ci of ${base} failed (exit ${ci.status})`);
    process.exit(1);
  }
  baseDir = worktree;
}

const typecheckCache = join(REPO, 'node_modules/.cache/vfpool/tsgo-check.tsbuildinfo');
const rows = [];
try {
  if (opts['warm-up']) {
    console.log('bench test-time: a round of both first, unmeasured (--no-warm-up leaves it out)');
    await npmTest(base, baseDir, 'base-warm-up.log');
    await npmTest(head, REPO, 'head-warm-up.log');
  }
  for (let round = 1; round <= runs && !failed; round++) {
    const b = await npmTest(base, baseDir, `base-${round}.log`);
    if (opts['from-scratch']) rmSync(typecheckCache, { force: true });
    const h = await npmTest(head, REPO, `head-${round}.log`);
    const load = loadavg()[0].toFixed(1);
    rows.push({ round, b, h, load });
    console.log(`round ${round}: ${base} ${b.wall.toFixed(1)} s (CPU ${b.cpu.toFixed(1)} s), ${head} ${h.wall.toFixed(1)} s (CPU ${h.cpu.toFixed(1)} s): ${(h.wall / b.wall).toFixed(3)}x, load ${load}`);
  }
} finally {
  if (worktree) git(['worktree', 'remove', '--force', worktree]);
}

if (!rows.length) {
  console.error(`bench test-time: no round measured (an npm test failed): logs in ${work}`);
  process.exit(1);
}
const sum = (f) => rows.reduce((s, r) => s + f(r), 0);
const ratios = rows.map((r) => r.h.wall / r.b.wall);
console.log(`npm test of ${head} against ${base}, ${runs} interleaved round(s), ${opts['from-scratch'] ? 'this tree\'s type check from scratch' : 'this tree\'s type check cache warm'} (${process.arch}, ${availableParallelism()} cores, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version})`);
console.log(`  wall: ${sum((r) => r.h.wall).toFixed(1)} s against ${sum((r) => r.b.wall).toFixed(1)} s: ${(sum((r) => r.h.wall) / sum((r) => r.b.wall)).toFixed(3)}x (rounds ${Math.min(...ratios).toFixed(3)}x to ${Math.max(...ratios).toFixed(3)}x)`);
console.log(`  CPU:  ${sum((r) => r.h.cpu).toFixed(1)} s against ${sum((r) => r.b.cpu).toFixed(1)} s: ${(sum((r) => r.h.cpu) / sum((r) => r.b.cpu)).toFixed(3)}x`);
console.log(`  logs: ${work}`);
process.exit(failed ? 1 : 0);
