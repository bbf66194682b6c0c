import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './helpers/spawn.js';

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
