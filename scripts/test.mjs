#!/usr/bin/env node
// `npm test`: build, node-tap, the per-file coverage gate. What it adds to the plain sequence
// (`npm run build && tap && node scripts/check-coverage.mjs`) is where the wall time went:
//
// - tsc took ~20 s of CPU before the first test could start, and nearly all of it is the type
//   check (`tsc --noEmit` costs the same). Here the JavaScript is written by esbuild, file by
//   file with source maps, as tsc lays it out (dist/src, dist/test, dist/bench: ~0.3 s), and
//   the full strict type check runs at the same time as the tests at a lower CPU priority,
//   using what the tests leave idle. `npm test` fails if it fails, as before. tsconfig's
//   `isolatedModules` makes tsc reject what a file-by-file compiler could get wrong.
//   `npm run build` (demo, libvirt, lab, bench, install) still emits with tsc.
// - the test files run in groups (scripts/test-groups.mjs), not one Node each.
import { build } from 'esbuild';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join, relative } from 'node:path';
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
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`npm test: ${[relative(root, cmd) || cmd, ...args].join(' ')} failed (exit ${r.status ?? r.signal})`);
    typecheck?.kill();
    process.exit(1);
  }
}

const t0 = Date.now();
rmSync(join(root, 'dist'), { recursive: true, force: true });

// The type check, alongside everything else; its output is kept and shown at the end.
// --incremental keeps what it learnt in node_modules/.cache (gone with `npm ci`, so CI checks
// from scratch): a second npm test on unchanged types checks in a few seconds.
typecheck = spawn(
  bin('tsc'),
  ['--noEmit', '-p', 'tsconfig.json', '--incremental', '--tsBuildInfoFile', join(root, 'node_modules/.cache/vfpool/tsc-noemit.tsbuildinfo')],
  { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
);
try {
  setPriority(typecheck.pid, 10);
} catch {
  // Not allowed to lower it (a container without CAP_SYS_NICE may refuse): it then competes.
}
let typecheckOutput = '';
typecheck.stdout.on('data', (d) => (typecheckOutput += d));
typecheck.stderr.on('data', (d) => (typecheckOutput += d));
const typecheckDone = new Promise((resolve) => typecheck.on('close', (code, signal) => resolve(code ?? signal)));

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
run(node, [join(root, 'scripts/bundle.mjs')]);
run(node, [join(root, 'scripts/man.mjs')]);
run(node, [join(root, 'scripts/test-groups.mjs')]);
console.log(`npm test: built in ${((Date.now() - t0) / 1000).toFixed(1)} s (type check still running)`);

const tap = spawnSync(bin('tap'), [], { cwd: root, stdio: 'inherit' });

const tc = await typecheckDone;
if (tc !== 0) {
  process.stderr.write(typecheckOutput);
  console.error(`npm test: the type check (tsc --noEmit) failed (exit ${tc})`);
} else {
  console.log('npm test: type check (tsc --noEmit, strict) clean');
}
if (tap.status !== 0) console.error(`npm test: tap failed (exit ${tap.status ?? tap.signal})`);
if (tc !== 0 || tap.status !== 0) process.exit(1);
run(node, [join(root, 'scripts/check-coverage.mjs')]);
console.log(`npm test: ${((Date.now() - t0) / 1000).toFixed(1)} s in all`);
