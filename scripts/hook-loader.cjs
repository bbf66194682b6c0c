// vfpool's loader of its CommonJS bundles, copied by scripts/bundle.mjs to
// dist/bin/{network,qemu}-hook.cjs, dist/bin/qemu-wrapper.cjs and (with a #! line)
// dist/bin/cli.cjs. libvirt waits for every hook call, and on a cold process most of a hook's
// own time is V8 compiling the bundle's functions. Node 20 has no module.enableCompileCache (Node >= 22.1),
// so the bundle (HOOK.bundle.cjs) is compiled here through vm.Script with the V8 code cache
// the build wrote next to it (HOOK.bundle.cjs.v8cache). A cache from another Node or V8 is
// rejected by V8 itself, and the bundle is then compiled from source as usual: same result.
// CommonJS on purpose: an ES module would start Node's ESM loader, itself a good part of the cost.
'use strict';
const { readFileSync } = require('node:fs');
const { wrap } = require('node:module');
const { basename, dirname, join } = require('node:path');
const { Script } = require('node:vm');

// Every bundle compiled in this process, for the build's training run to write each one's code
// cache (the CLI's yargs is a bundle of its own, dist/bin/yargs.bundle.cjs, compiled here too).
const compiled = new Map();

function compile(bundle) {
  // The bundle starts with a #! line, which is not JavaScript inside the module wrapper.
  const source = readFileSync(bundle, 'utf8').replace(/^#!.*/, '');
  let cachedData;
  try {
    cachedData = readFileSync(`${bundle}.v8cache`);
  } catch {
    // No cache (a build that could not write one): compile from source.
  }
  const script = new Script(wrap(source), { filename: bundle, cachedData });
  compiled.set(bundle, script);
  return script;
}

function run(script, bundle) {
  const module = { exports: {}, filename: bundle, id: bundle, loaded: false };
  script.runInThisContext().call(module.exports, module.exports, require, module, bundle, dirname(bundle));
  return module.exports;
}

const bundle = join(__dirname, basename(__filename, '.cjs') + '.bundle.cjs');
if (require.main === module) run(compile(bundle), bundle);
module.exports = { bundle, compile, run, compiled };
