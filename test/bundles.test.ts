import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeSimEnv } from './helpers/env.js';
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

// node:crypto (OpenSSL's binding and some twenty modules) costs ~9 ms of CPU to load, and only
// an emulated SR-IOV NIC's MACs need it (src/state/domain-plan.ts requires it then): a CLI
// command and a qemu hook call must not load it at their start.
t.test('the CLI and the qemu hook start without loading node:crypto', async (t) => {
  const dir = t.testdir({
    'report.cjs': "process.on('exit', () => process.stderr.write(`crypto loaded: ${process.moduleLoadList.includes('NativeModule crypto')}\\n`));\n",
  });
  const w = makeSimEnv(t);
  const starts: Array<[string, string[], string]> = [
    ['vfpool --version', ['dist/bin/cli.cjs', '--version'], ''],
    ['vfpool status', ['dist/bin/cli.cjs', 'status'], ''],
    ['the qemu hook, prepare of a guest without vfpool', ['dist/bin/qemu-hook.cjs', 'plain', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'plain' })],
  ];
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  for (const [what, [entry, ...args], stdin] of starts) {
    const r = await execa(envBin, [...unset, process.execPath, '--require', join(dir, 'report.cjs'), join(REPO, entry!), ...args], {
      env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...w.env }, extendEnv: false, input: stdin, reject: false,
    });
    t.equal(r.exitCode, 0, `${what}: ${r.stderr}`);
    t.match(r.stderr, /crypto loaded: false$/, `${what}: node:crypto not loaded`);
  }
});
