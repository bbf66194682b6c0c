// Bundles each entry point (dist/src/entry/*.js, compiled by tsc) into dist/bin.
// Why: libvirt waits for every hook call, and Node spends ~200 ms resolving and loading the
// hundreds of small files behind execa, yargs, fast-xml-parser and friends; one bundled file
// per entry point loads in a fraction of that (measured by `npm run bench`).
// The bundles carry their dependencies, so an install needs no node_modules.
//
// - The CLI: an ES module (cli.mjs), with execa split out as a chunk loaded on demand.
// - The hooks (the hot path, run by libvirt for every guest): CommonJS bundles started by
//   scripts/hook-loader.cjs with a V8 code cache written here (see that file for why).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entryDir = join(root, 'dist/src/entry');
const outdir = join(root, 'dist/bin');
// These are helpers of the entry points, not entry points.
const HELPERS = ['run.js', 'qemu-args-command.js', 'guest-devices-command.js', 'migrate-command.js'];
const entries = readdirSync(entryDir).filter((f) => f.endsWith('.js') && !HELPERS.includes(f));
const hooks = entries.filter((f) => f.endsWith('-hook.js'));
const others = entries.filter((f) => !hooks.includes(f));

// A bundle left from an entry point that no longer exists must not be installed.
rmSync(outdir, { recursive: true, force: true });

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  minify: true,
  logLevel: 'warning',
};

await build({
  ...common,
  entryPoints: others.map((f) => join(entryDir, f)),
  outdir,
  outExtension: { '.js': '.mjs' },
  format: 'esm',
  // Dynamic imports (execa, only needed when iproute2 runs) become chunks loaded on demand.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  // yargs' ESM build lays out --help with cliui's ESM build, whose wrap breaks lines at the
  // column width in the middle of words ("inacti-ve"); cliui's CommonJS build wraps at word
  // boundaries (wrap-ansi). Both have the same API.
  alias: { cliui: join(root, 'node_modules/cliui/build/index.cjs') },
  // CommonJS dependencies (proper-lockfile, graceful-fs, signal-exit) expect require, __filename
  // and __dirname; yargs declares its own __dirname, so the free ones are renamed, not redeclared.
  define: { __filename: '__vfpool_filename', __dirname: '__vfpool_dirname' },
  banner: {
    js: [
      "import { createRequire as __vfpoolCreateRequire } from 'node:module';",
      "import { fileURLToPath as __vfpoolFileURLToPath } from 'node:url';",
      "import { dirname as __vfpoolDirname } from 'node:path';",
      'const require = __vfpoolCreateRequire(import.meta.url);',
      'const __vfpool_filename = __vfpoolFileURLToPath(import.meta.url);',
      'const __vfpool_dirname = __vfpoolDirname(__vfpool_filename);',
    ].join('\n'),
  },
});

await build({
  ...common,
  entryPoints: hooks.map((f) => join(entryDir, f)),
  outdir,
  outExtension: { '.js': '.bundle.cjs' },
  format: 'cjs',
});

for (const f of hooks) {
  const name = f.replace(/\.js$/, '');
  copyFileSync(join(root, 'scripts/hook-loader.cjs'), join(outdir, `${name}.cjs`));
  // The code cache: compile the bundle and run its top level once (without arguments the hook
  // only prints its usage), so the functions that start-up compiles are in the cache too.
  const bundle = join(outdir, `${name}.bundle.cjs`);
  const writer = `const l = require(${JSON.stringify(join(outdir, `${name}.cjs`))});
const s = l.compile(${JSON.stringify(bundle)});
l.run(s, ${JSON.stringify(bundle)});
process.on('exit', () => { process.exitCode = 0; require('node:fs').writeFileSync(${JSON.stringify(`${bundle}.v8cache`)}, s.createCachedData()); });`;
  const r = spawnSync(process.execPath, ['-e', writer, '--', ''], {
    env: { PATH: process.env.PATH ?? '', VFPOOL_CONFIG_DIR: '/nonexistent', VFPOOL_STATE_DIR: '/nonexistent' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (r.status !== 0) throw new Error(`code cache for ${name}: ${r.stderr}`);
}
