// Bundles each entry point (dist/src/entry/*.js, compiled by tsc) into dist/bin.
// Why: libvirt waits for every hook call, and Node spends ~200 ms resolving and loading the
// hundreds of small files behind execa, yargs, fast-xml-parser and friends; one bundled file
// per entry point loads in a fraction of that (measured by `npm run bench`).
// The bundles carry their dependencies, so an install needs no node_modules.
//
// - The hooks (the hot path, run by libvirt for every guest) and the CLI (`virsh net-start`
//   waits for the hook, a person or a script for `vfpool net-start`): CommonJS bundles started
//   by scripts/hook-loader.cjs with a V8 code cache written here by a real operation (see
//   below). The CLI's loader is dist/bin/cli.cjs (what install.sh links as `vfpool`);
//   dist/bin/cli.mjs, which scripts name, starts the same bundle.
// - The QEMU wrapper's argv editor (qemu-args/vfpool-qemu runs it for every start of a guest
//   vfpool has a plan for, and libvirt waits for QEMU): a CommonJS bundle with its code cache,
//   as the hooks (dist/bin/qemu-wrapper.cjs). As an ES module without one, a planned guest's
//   QEMU took 109-113 ms to start through the wrapper here, against 88-93 ms now (QEMU's own
//   -version: 28-34 ms; `npm run bench`).
import { build } from 'esbuild';
import { execa } from 'execa';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entryDir = join(root, 'dist/src/entry');
const outdir = join(root, 'dist/bin');
// These are helpers of the entry points, not entry points.
const HELPERS = ['run.js', 'qemu-args-command.js', 'guest-devices-command.js', 'migrate-command.js', 'migrate-deps.js', 'migrate-libvirt.js'];
const entries = readdirSync(entryDir).filter((f) => f.endsWith('.js') && !HELPERS.includes(f));
const hooks = entries.filter((f) => f.endsWith('-hook.js'));
// Every entry point is a CommonJS bundle compiled with its code cache (each needs a training
// run, TRAINING below: the build fails without one). Each but the CLI is started by a copy of
// scripts/hook-loader.cjs named after it; the CLI's has a #! line.
const loaded = entries.filter((f) => f !== 'cli.js');

// A bundle left from an entry point that no longer exists must not be installed.
rmSync(outdir, { recursive: true, force: true });

// write-file-atomic requires worker_threads at load only to read threadId (0 on the main
// thread) for its temp file names; loading it brings Node's worker and stream machinery, ~20 ms
// of a hook call on a busy machine. vfpool never writes from a worker thread: the main thread's
// answer is given without the module.
const mainThreadOnly = {
  name: 'write-file-atomic-main-thread',
  setup(b) {
    b.onResolve({ filter: /^worker_threads$/ }, (args) =>
      /[\\/]write-file-atomic[\\/]/.test(args.importer) ? { path: 'worker_threads', namespace: 'main-thread' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'main-thread' }, () => ({ contents: 'module.exports = { threadId: 0, isMainThread: true };', loader: 'js' }));
  },
};

// yargs' node:assert, loaded when yargs calls it: scripts/assert-lazy.cjs.
const yargsAssertLazy = {
  name: 'yargs-assert-lazy',
  setup(b) {
    b.onResolve({ filter: /^(node:)?assert$/ }, (args) => (/[\\/]yargs[\\/]/.test(args.importer) ? { path: join(root, 'scripts/assert-lazy.cjs') } : undefined));
  },
};

// yargs renders the whole help of a command after running it (usage.cacheHelpMessage), to
// show it should the command's handler ask for help later or fail asynchronously. vfpool's
// handlers never ask (no showHelp or getHelp in src/) and its .fail() handler prints one line,
// never the help, so the text was laid out by cliui for nothing on every `vfpool` call: ~5% of
// a `vfpool net-start`. `--help` itself renders on demand, as before.
//
// And yargs' factory guesses a version for every instance (yargs.version() with no argument)
// by walking up from the working directory to the first package.json, reading each directory
// on the way: from a hook's `/` or a user's home there is none (or someone else's), the check
// that one was found fails, and node:assert with its AssertionError (util.inspect and the rest)
// is loaded to throw it, caught by yargs: ~10% of a `vfpool net-start`. vfpool gives its own
// version right after (buildProgram's .version()), so the guess is left out.
function replaceOnce(path, source, from, to) {
  const at = source.indexOf(from);
  if (at < 0 || source.indexOf(from, at + 1) >= 0) throw new Error(`${path}: expected "${from}" once: check scripts/bundle.mjs against this yargs`);
  return source.replace(from, to);
}
const yargsLeaner = {
  name: 'yargs-leaner',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]usage\.js$/ }, (args) => ({
      contents: replaceOnce(args.path, readFileSync(args.path, 'utf8'), 'cachedHelpMessage = this.help();', 'cachedHelpMessage = undefined;'),
      loader: 'js',
    }));
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]yargs-factory\.js$/ }, (args) => ({
      contents: replaceOnce(args.path, readFileSync(args.path, 'utf8'), 'yargs.version();', 'yargs.version(false);'),
      loader: 'js',
    }));
  },
};

const common = {
  plugins: [mainThreadOnly, yargsAssertLazy, yargsLeaner],
  bundle: true,
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  minify: true,
  logLevel: 'warning',
  alias: {
    // Two dependencies of proper-lockfile swapped for what costs a hook call less: see each file.
    'graceful-fs': join(root, 'scripts/node-fs.cjs'),
    'signal-exit': join(root, 'scripts/signal-exit-v3.cjs'),
    // yargs' ESM build (what esbuild takes for vfpool's `import yargs`) lays out --help with
    // cliui's ESM build, whose wrap breaks lines at the column width in the middle of words
    // ("inacti-ve"); cliui's CommonJS build wraps at word boundaries (wrap-ansi). Same API.
    cliui: join(root, 'node_modules/cliui/build/index.cjs'),
  },
};

// execa (and the twenty packages under it) is ~45% of a hook's bundle, and a hook call on the
// simulated host, or one that changes no link, never runs it: only LinuxHost's `ip` and the
// QEMU/QMP helpers do, each through `await import('execa')`. In the CommonJS bundles it is a
// file of its own (dist/bin/execa.cjs), required on that first use, so the bundles a hook
// call reads, and the code cache V8 deserializes for it, are about half the size.
const execaOnDemand = {
  name: 'execa-on-demand',
  setup(b) {
    b.onResolve({ filter: /^execa$/ }, () => ({ path: './execa.cjs', external: true }));
  },
};

// yargs (with cliui, y18n and the rest: half of the CLI's code cache when it was in the CLI's
// bundle) is for the command lines the CLI's plain path leaves to it (src/entry/cli/fast-path.ts):
// help, version, completion, errors. A file of its own too, dist/bin/yargs.bundle.cjs with a code
// cache of its own (started by dist/bin/yargs.cjs, below), so that a plain `vfpool net-start`
// deserializes only its own code: V8 deserializes a cache whole, used or not.
const yargsOnDemand = {
  name: 'yargs-on-demand',
  setup(b) {
    b.onResolve({ filter: /^yargs$/ }, () => ({ path: './yargs.cjs', external: true }));
  },
};

const cjsBuild = build({
  ...common,
  plugins: [...common.plugins, execaOnDemand, yargsOnDemand],
  entryPoints: entries.map((f) => join(entryDir, f)),
  outdir,
  outExtension: { '.js': '.bundle.cjs' },
  format: 'cjs',
  // The loader compiles the bundles with vm.Script, where an `import()` left in the code (of a
  // Node built-in such as node:net, loaded when first used) fails: "A dynamic import callback
  // was not specified". esbuild turns each into a require() behind a promise instead.
  supported: { 'dynamic-import': false },
});
/** A dependency bundled alone into dist/bin/FILE, where the loaders' require() finds it (relative to dist/bin/*.cjs). */
const dependencyBuild = (contents, file) =>
  build({
    ...common,
    stdin: { contents, resolveDir: root, loader: 'js' },
    outfile: join(outdir, file),
    format: 'cjs',
    supported: { 'dynamic-import': false },
  });
// Independent of each other: esbuild runs them at once.
await Promise.all([cjsBuild, dependencyBuild("export * from 'execa';", 'execa.cjs'), dependencyBuild("export { default } from 'yargs';", 'yargs.bundle.cjs')]);
// What the CLI bundle requires as ./yargs.cjs: yargs' bundle compiled with its code cache by the
// CLI's loader (dist/bin/cli.cjs, already loaded: the process is the CLI). Its exports are
// yargs' factory itself, as Node gives a CommonJS module's exports to an ES `import yargs`,
// which is how the CLI bundle reads them.
writeFileSync(
  join(outdir, 'yargs.cjs'),
  `'use strict';
// yargs for vfpool's CLI bundle: dist/bin/yargs.bundle.cjs with its V8 code cache (scripts/bundle.mjs).
const loader = require('./cli.cjs');
const bundle = require('node:path').join(__dirname, 'yargs.bundle.cjs');
module.exports = loader.run(loader.compile(bundle), bundle).default;
`,
);

// Which build this is, for `vfpool --version` (src/entry/cli/install-root.ts) and install.sh's
// last line: an admin filing a bug must be able to say what runs, and package.json's version
// alone is the same for every build of a release. From a git checkout the commit is added (a
// tag when there is one, -dirty for uncommitted changes); from a tarball the version alone.
// A file beside the bundles, so install.sh copies it with them and nothing at run time but
// --version reads it.
const { version: packageVersion } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const described = await execa('git', ['describe', '--tags', '--always', '--dirty', '--abbrev=12'], { cwd: root, reject: false });
const commit = described.exitCode === 0 ? described.stdout.trim() : '';
writeFileSync(join(outdir, 'version'), `${packageVersion}${commit ? ` (git ${commit})` : ''}\n`);

// The CLI's loader is executable (`vfpool` links to it); cli.mjs stays a path that starts the
// CLI, for the scripts and habits that name it. It pays for Node's ES-module loader (an ES
// module entry), not for compiling the CLI without its cache.
const loaderSource = readFileSync(join(root, 'scripts/hook-loader.cjs'), 'utf8');
writeFileSync(join(outdir, 'cli.cjs'), `#!/usr/bin/env node\n${loaderSource}`, { mode: 0o755 });
writeFileSync(
  join(outdir, 'cli.mjs'),
  `#!/usr/bin/env node
// vfpool's CLI is dist/bin/cli.cjs (a CommonJS bundle compiled with its V8 code cache, see
// scripts/hook-loader.cjs); this ES-module path runs the same bundle.
import { createRequire } from 'node:module';
const loader = createRequire(import.meta.url)('./cli.cjs');
loader.run(loader.compile(loader.bundle), loader.bundle);
`,
);
chmodSync(join(outdir, 'cli.mjs'), 0o755);

// The code cache holds the functions V8 compiled in the run that wrote it. A run without
// arguments (the usage line) compiles only the top level; the work of a real call (XML parsing,
// the lock, the state file, the host) would then be compiled from source on every hook call,
// which measured ~20 ms of CPU per call. So each hook's cache is written by a real operation on
// a throw-away simulated host: the network hook starts a pool, then the qemu hook prepares a
// guest with a VF of it. Nothing outside the temporary directory is touched.
const training = mkdtempSync(join(tmpdir(), 'vfpool-code-cache-'));
const trainingEnv = {
  PATH: process.env.PATH ?? '',
  LC_ALL: 'C',
  VFPOOL_CONFIG_DIR: join(training, 'etc'),
  VFPOOL_STATE_DIR: join(training, 'run'),
  VFPOOL_JOURNAL_DIR: join(training, 'journal'),
  VFPOOL_LIBVIRT_RUN_DIR: join(training, 'libvirt'),
  VFPOOL_HOST: `sim:${join(training, 'host.json')}`,
};
mkdirSync(join(training, 'etc/networks'), { recursive: true });
writeFileSync(join(training, 'host.json'), JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 8 }, { name: 'eth2', totalVfs: 8 }] }));
writeFileSync(join(training, 'etc/networks/train.xml'), "<network><name>train</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>\n");
writeFileSync(join(training, 'etc/networks/train-cli.xml'), "<network><name>train-cli</name><forward mode='hostdev' managed='yes'><pf dev='eth2'><vf num='4'/></pf></forward></network>\n");
const TRAINING = {
  // Two runs, one after the other, each writing the caches of the bundles it compiled. First a
  // line that goes through yargs (`--dry-run=true`: a boolean given inline is not a plain command
  // line, src/entry/cli/fast-path.ts), which writes yargs' cache: trained on no yargs run at all,
  // `vfpool --version` cost 95 ms instead of 79. Then what `vfpool net-start` does as scripts and
  // the lab's bench run it, on a PF of its own, which writes the CLI bundle's cache again with
  // the plain path only.
  cli: [
    { args: ['net-start', '--dry-run=true', 'train-cli'], stdin: '' },
    { args: ['net-start', 'train-cli'], stdin: '' },
  ],
  'network-hook': {
    args: ['train', 'start', 'begin', '-'],
    stdin: "<hookData><network><name>train</name><forward mode='hostdev'/></network></hookData>",
  },
  // libvirt's start of a guest that holds a VF on QEMU's command line: the wrapper reads the
  // guest's plan (written here as the qemu hook's prepare writes one) and prints the edited argv.
  'qemu-wrapper': {
    args: ['-name', 'guest=train-wrapper,debug-threads=on', '-machine', 'pc-q35-10.0,usb=off,acpi=on', '-nodefaults', '-netdev', '{"type":"user","id":"hostnet0"}', '-device', '{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"52:54:00:00:00:03"}'],
    stdin: '',
    plan: { version: 1, domain: 'train-wrapper', uuid: null, delivery: 'cmdline', sriovNics: [], vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0', emulatedModel: null, mac: '52:54:00:00:00:02', failoverStandbyMac: null, guestAddress: null }] },
  },
  'qemu-hook': {
    args: ['train-guest', 'prepare', 'begin', '-'],
    stdin: `<domain type='kvm'><name>train-guest</name><uuid>614dee8d-7799-4751-9066-5ae47f427da5</uuid>
<metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='train' mac='52:54:00:00:00:01'/></vfpool:domain></metadata>
<devices/></domain>`,
  },
};

/** One entry's training runs, in order, each writing the code cache of every bundle it compiled; resolves when they have. */
async function train(f) {
  const name = f.replace(/\.js$/, '');
  if (loaded.includes(f)) copyFileSync(join(root, 'scripts/hook-loader.cjs'), join(outdir, `${name}.cjs`));
  const bundle = join(outdir, `${name}.bundle.cjs`);
  const writer = `const l = require(${JSON.stringify(join(outdir, `${name}.cjs`))});
l.run(l.compile(${JSON.stringify(bundle)}), ${JSON.stringify(bundle)}); // argv[1] stands for the script, as when Node runs a file
process.on('exit', (code) => { if (code === 0) for (const [b, s] of l.compiled) require('node:fs').writeFileSync(b + '.v8cache', s.createCachedData()); });`;
  const runs = TRAINING[name];
  if (!runs) throw new Error(`code cache for ${name}: no training run defined in scripts/bundle.mjs`);
  for (const run of [runs].flat()) {
    if (run.plan) {
      const dir = join(trainingEnv.VFPOOL_STATE_DIR, 'qemu', run.plan.domain);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dir, 'plan.json'), JSON.stringify(run.plan), { mode: 0o600 });
    }
    const r = await execa(process.execPath, ['-e', writer, '--', bundle, ...run.args], { env: trainingEnv, extendEnv: false, input: run.stdin, stdout: 'ignore', reject: false });
    if (r.exitCode !== 0) throw new Error(`code cache for ${name}: its training run (${run.args.join(' ')}) failed: ${r.stderr}`);
  }
}

try {
  // The network hook before the qemu hook: the qemu hook's guest takes a VF of the pool it
  // starts. The CLI's run has a PF of its own, the wrapper's a plan of its own: they train at
  // the same time.
  await Promise.all([
    hooks.sort().reduce((before, f) => before.then(() => train(f)), Promise.resolve()),
    ...entries.filter((f) => !hooks.includes(f)).map(train),
  ]);
} finally {
  rmSync(training, { recursive: true, force: true });
}
