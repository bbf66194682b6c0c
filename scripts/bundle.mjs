// Bundles each entry point (dist/src/entry/*.js, compiled by tsc) into one file in dist/bin.
// Why: libvirt waits for every hook call, and Node spends ~200 ms resolving and loading the
// hundreds of small files behind execa, yargs, fast-xml-parser and friends; one bundled file
// per entry point loads in ~10 ms more than `node -e 0` (measured by `npm run bench`).
// The bundles carry their dependencies, so an install needs no node_modules.
import { build } from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entryDir = join(root, 'dist/src/entry');
// run.js, qemu-args-command.js, migrate-command.js and migrate-pool.js are helpers of the entry points, not entry points.
const entries = readdirSync(entryDir).filter((f) => f.endsWith('.js') && !['run.js', 'qemu-args-command.js', 'migrate-command.js', 'migrate-pool.js'].includes(f));

// A bundle left from an entry point that no longer exists must not be installed.
rmSync(join(root, 'dist/bin'), { recursive: true, force: true });

await build({
  entryPoints: entries.map((f) => join(entryDir, f)),
  outdir: join(root, 'dist/bin'),
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  minify: true,
  // Dynamic imports (execa, only needed when iproute2 runs) become chunks loaded on demand.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
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
