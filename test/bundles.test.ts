import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeSimEnv, SEED_000_POOL } from './helpers/env.js';
import { runCliInProcess } from './helpers/cli-in-process.js';
import { domainXml } from './helpers/libvirt-domains.js';
import { writeDomainPlan } from '../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../src/types.js';
import { REPO, WITHOUT_TAP_LOADER } from './helpers/spawn.js';

// scripts/hook-loader.cjs compiles the CommonJS bundles (the hooks, the CLI) with vm.Script and
// their V8 code cache; an `import()` left in them fails there at run time ("A dynamic import
// callback was not specified"), and only on the path that reaches it (a QMP connection at a
// guest's `started`, found by the real-libvirt lab). The build must turn each into a require().
t.test('the CommonJS bundles hold no import(): vm.Script, which loads them, cannot run one', async (t) => {
  const dir = join(REPO, 'dist/bin');
  const bundles = readdirSync(dir).filter((f) => f.endsWith('.bundle.cjs'));
  t.same(bundles.sort(), ['cli.bundle.cjs', 'network-hook.bundle.cjs', 'qemu-hook.bundle.cjs', 'qemu-wrapper.bundle.cjs', 'yargs.bundle.cjs'], 'the bundles the loader starts');
  for (const f of bundles) {
    const calls = readFileSync(join(dir, f), 'utf8').match(/\bimport\(\s*["'`][^"'`]*["'`]\s*\)/g) ?? [];
    t.same(calls, [], `${f}: no import() of a module`);
  }
});

// Each bundle's start is paid for by a code cache the build wrote (scripts/bundle.mjs): V8
// takes it (the same Node built it) instead of compiling the bundle from source.
t.test('each bundle has a code cache, and V8 accepts it', async (t) => {
  const dir = join(REPO, 'dist/bin');
  const loader = createRequire(import.meta.url)(join(dir, 'network-hook.cjs')) as { compile: (bundle: string) => { cachedDataRejected?: boolean } };
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.bundle.cjs'))) {
    t.equal(loader.compile(join(dir, f)).cachedDataRejected, false, `${f}: its .v8cache is used`);
  }
});

// V8 deserializes a code cache whole, whatever the run uses of it: yargs, for the command lines
// the CLI's plain path leaves to it, is a bundle of its own with its own cache
// (scripts/bundle.mjs), so a plain `vfpool net-start` reads and deserializes only the CLI's.
t.test('a plain CLI command line compiles only the CLI bundle; one left to yargs compiles yargs\' bundle too, from its cache', async (t) => {
  const dir = t.testdir({
    'report.cjs': `process.on('exit', () => { const l = require(${JSON.stringify(join(REPO, 'dist/bin/cli.cjs'))}); require('node:fs').writeSync(2, 'compiled: ' + [...l.compiled].map(([b, s]) => require('node:path').basename(b) + (s.cachedDataRejected === false ? '+cache' : '')).join(' ') + '\\n'); });\n`,
  });
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const cli = (...args: string[]) =>
    execa(envBin, [...unset, process.execPath, '--require', join(dir, 'report.cjs'), join(REPO, 'dist/bin/cli.cjs'), ...args], {
      env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...w.env }, extendEnv: false, reject: false,
    });
  const plain = await cli('net-start', 'sriov-pool');
  t.equal(plain.exitCode, 0, plain.stderr);
  t.match(plain.stderr, /^compiled: cli\.bundle\.cjs\+cache$/m, 'net-start POOL: the CLI bundle alone');
  t.ok(w.ctx.store.read().pools['sriov-pool'], 'and the pool started');
  for (const args of [['--version'], ['net-destroy', '--dry-run=true', 'sriov-pool'], ['no-such-command']]) {
    const r = await cli(...args);
    t.match(r.stderr, /^compiled: cli\.bundle\.cjs\+cache yargs\.bundle\.cjs\+cache$/m, `${args.join(' ')}: yargs' bundle too, its cache accepted`);
  }
});

// Built-ins that only some runs need cost every start that loads them (src/util/lazy-builtins.ts):
// node:crypto (OpenSSL's binding and some twenty modules) ~9 ms of CPU; node:child_process,
// which brings net, dgram and the stream machinery; node:fs/promises; node:net and node:stream,
// which process.stdout and process.stderr load when they are pipes (src/util/stdio.ts). A CLI
// command, a qemu hook call (a guest's prepare with a VF included) and the QEMU wrapper, their
// output read through pipes, must not load them.
t.test('the CLI, the qemu hook and the QEMU wrapper run without node:crypto, node:child_process, node:fs/promises, node:net or node:stream', async (t) => {
  const LAZY = ['crypto', 'child_process', 'fs/promises', 'net', 'stream'];
  const dir = t.testdir({
    // fs.writeSync, not process.stderr: stderr on a pipe is a net.Socket, and would load node:net.
    'report.cjs': `process.on('exit', () => require('node:fs').writeSync(2, \`loaded: \${${JSON.stringify(LAZY)}.filter((m) => process.moduleLoadList.includes('NativeModule ' + m)).join(' ') || 'none'}\\n\`));\n`,
  });
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  t.equal((await runCliInProcess(['net-start', 'sriov-pool'], w.env)).exitCode, 0);
  const starts: Array<[string, string[], string]> = [
    ['vfpool --version', ['dist/bin/cli.cjs', '--version'], ''],
    ['vfpool status', ['dist/bin/cli.cjs', 'status'], ''],
    ['the qemu hook, prepare of a guest without vfpool', ['dist/bin/qemu-hook.cjs', 'plain', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'plain' })],
    [
      'the qemu hook, prepare of a guest with a VF',
      ['dist/bin/qemu-hook.cjs', 'vm1', 'prepare', 'begin', '-'],
      domainXml('prepare', { name: 'vm1', vfpool: "<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>" }),
    ],
    // As the wrapper's shim runs it for a guest with a plan, its stdout read by the shell's `$(…)`.
    ['the QEMU wrapper, a guest with a VF on the command line', ['dist/bin/qemu-wrapper.cjs', '-name', 'guest=wrapped', '-machine', 'q35', '-nodefaults'], ''],
  ];
  await writeDomainPlan(w.env.VFPOOL_STATE_DIR!, {
    version: 1, domain: 'wrapped', uuid: null, delivery: 'cmdline', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: '52:54:00:11:22:44' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
  }, { uid: process.getuid!(), gid: process.getgid!() });
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  for (const [what, [entry, ...args], stdin] of starts) {
    const r = await execa(envBin, [...unset, process.execPath, '--require', join(dir, 'report.cjs'), join(REPO, entry!), ...args], {
      env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...w.env }, extendEnv: false, input: stdin, reject: false,
    });
    t.equal(r.exitCode, 0, `${what}: ${r.stderr}`);
    const loaded = /loaded: (.*)/.exec(r.stderr)?.[1];
    // --version is yargs' to print (src/entry/cli/fast-path.ts), through process.stdout.
    if (what === 'vfpool --version') t.match(loaded, /^(none|net stream)$/, `${what}: none of ${LAZY.slice(0, 3).join(', ')} loaded`);
    else t.equal(loaded, 'none', `${what}: none of ${LAZY.join(', ')} loaded`);
    if (what === 'vfpool status') t.match(r.stdout, /0000:3b:02\.0/, `${what}: printed, through the pipe`);
    if (entry === 'dist/bin/qemu-wrapper.cjs') t.match(r.stdout, /^\+vfio-pci,id=vfpool-vf0,.*,host=0000:3b:02\.0$/m, `${what}: printed the edited argv, through the pipe`);
  }
  t.same(w.ctx.store.read().allocations.map((a) => a.owner.domain), ['vm1'], 'the prepare with a VF did its work');
});
