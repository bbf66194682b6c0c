import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeSimEnv, SEED_000_POOL } from './helpers/env.js';
import { runCliInProcess } from './helpers/cli-in-process.js';
import { domainXml } from './helpers/libvirt-domains.js';
import { REPO, WITHOUT_TAP_LOADER } from './helpers/spawn.js';

// scripts/hook-loader.cjs compiles the CommonJS bundles (the hooks, the CLI) with vm.Script and
// their V8 code cache; an `import()` left in them fails there at run time ("A dynamic import
// callback was not specified"), and only on the path that reaches it (a QMP connection at a
// guest's `started`, found by the real-libvirt lab). The build must turn each into a require().
t.test('the CommonJS bundles hold no import(): vm.Script, which loads them, cannot run one', async (t) => {
  const dir = join(REPO, 'dist/bin');
  const bundles = readdirSync(dir).filter((f) => f.endsWith('.bundle.cjs'));
  t.same(bundles.sort(), ['cli.bundle.cjs', 'network-hook.bundle.cjs', 'qemu-hook.bundle.cjs'], 'the bundles the loader starts');
  for (const f of bundles) {
    const calls = readFileSync(join(dir, f), 'utf8').match(/\bimport\(\s*["'`][^"'`]*["'`]\s*\)/g) ?? [];
    t.same(calls, [], `${f}: no import() of a module`);
  }
});

// Built-ins that only some runs need cost every start that loads them (src/util/lazy-builtins.ts):
// node:crypto (OpenSSL's binding and some twenty modules) ~9 ms of CPU; node:child_process,
// which brings net, dgram and the stream machinery; node:fs/promises. A CLI command and a qemu
// hook call, a guest's prepare with a VF included, must not load them at their start.
t.test('the CLI and the qemu hook start without node:crypto, node:child_process, node:net or node:fs/promises', async (t) => {
  // node:net too, for a hook that prints nothing; the CLI's stdout on a pipe is a net.Socket.
  const LAZY = ['crypto', 'child_process', 'fs/promises', 'net'];
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
  ];
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  for (const [what, [entry, ...args], stdin] of starts) {
    const r = await execa(envBin, [...unset, process.execPath, '--require', join(dir, 'report.cjs'), join(REPO, entry!), ...args], {
      env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...w.env }, extendEnv: false, input: stdin, reject: false,
    });
    t.equal(r.exitCode, 0, `${what}: ${r.stderr}`);
    const loaded = /loaded: (.*)/.exec(r.stderr)?.[1];
    t.match(loaded, entry === 'dist/bin/cli.cjs' ? /^(none|net)$/ : /^none$/, `${what}: none of ${LAZY.join(', ')} loaded`);
  }
  t.same(w.ctx.store.read().allocations.map((a) => a.owner.domain), ['vm1'], 'the prepare with a VF did its work');
});
