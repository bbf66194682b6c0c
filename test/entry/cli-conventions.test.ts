import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { SETTING_KEYS } from '../../src/config/settings.js';
import { COMMANDS } from '../../src/entry/cli/commands.js';
import { positionalNames } from '../../src/entry/cli/define.js';
import { renderManPage } from '../../src/entry/cli/man.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { REPO, spawnEntry, vfpoolCli, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';

/** The CLI as a new user meets it: --help, errors of usage, the man page and completion. */
const env = { VFPOOL_HOST: 'sim:/nonexistent.json', VFPOOL_STATE_DIR: '/nonexistent/run', VFPOOL_JOURNAL_DIR: '/nonexistent/journal' };
const words = (s: string) => s.split(/[\s(),;:]+/).filter((w) => /^[A-Za-z][A-Za-z'-]{5,}$/.test(w));

/**
 * Help runs in the installed bundle: it lays it out with cliui's CommonJS build, which wraps at
 * word boundaries (scripts/bundle.mjs); run in-process from dist/src, yargs takes cliui's ESM
 * build, whose wrap breaks words. `dist/bin/cli.cjs` is what an installed `vfpool` links to.
 * Every command's --help is the bundle run once per command in ONE Node (bundleHelps: the
 * loader's own compile and run, argv set as `vfpool CMD --help`, process.exit caught), not one
 * Node start per command; the first command's --help also runs as a real process, and its
 * output must be the same.
 */
const installedCli = (args: string[]) => spawnEntry('dist/bin/cli.cjs', args, { env });

/** `vfpool CMD --help` for each of `cmds`, each through dist/bin/cli.cjs's loader, all in one Node. */
async function bundleHelps(cmds: string[]): Promise<Array<{ exitCode: number; stdout: string }>> {
  // Each help's stdout, then NUL, its exit code, NUL: help text never holds a NUL.
  const driver = `'use strict';
const loader = require(process.argv[1]);
const script = loader.compile(loader.bundle);
const realExit = process.exit;
process.on('unhandledRejection', (e) => { if (!e || !e.helpExit) { console.error(e); realExit(70); } });
(async () => {
  for (const cmd of JSON.parse(process.argv[2])) {
    const code = await new Promise((resolve) => {
      // yargs ends a --help with process.exit(0): here the run ends there, the process goes on.
      process.exit = (c) => { resolve(c ?? 0); throw Object.assign(new Error('exit'), { helpExit: true }); };
      process.argv = [process.argv[0], 'vfpool', cmd, '--help'];
      // yargs is a bundle of its own (dist/bin/yargs.cjs), which require() would hand every run
      // as the first left it: a fresh one for each, as each real \`vfpool\` process gets.
      delete require.cache[require.resolve(require('node:path').join(require('node:path').dirname(loader.bundle), 'yargs.cjs'))];
      loader.run(script, loader.bundle);
    });
    process.stdout.write('\\0' + code + '\\0');
  }
  process.exit = realExit;
})();
`;
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const r = await execa(envBin, [...unset, process.execPath, '-e', driver, join(REPO, 'dist/bin/cli.cjs'), JSON.stringify(cmds)], {
    env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, extendEnv: false, reject: false, stripFinalNewline: false, cwd: '/',
  });
  if (r.exitCode !== 0) throw new Error(`the help driver failed (exit ${r.exitCode}): ${String(r.stderr)}`);
  const parts = String(r.stdout).split('\0');
  return cmds.map((_, i) => ({ stdout: parts[2 * i]!, exitCode: Number(parts[2 * i + 1]) }));
}

t.test('an example that writes node_exporter\'s textfile replaces it in one rename, as the README says it must', async (t) => {
  // The textfile collector reads whatever *.prom file is there when it is scraped: a file the
  // shell is still writing (`> vfpool.prom`) is read half-written.
  const writes = COMMANDS.flatMap((d) => d.examples.map(([cmd]) => cmd)).filter((cmd) => /prometheus/.test(cmd) && />/.test(cmd));
  t.ok(writes.length > 0, 'an example for node_exporter');
  for (const cmd of writes) t.match(cmd, /> (\S+) && mv \1 \S+\.prom$/, cmd);
  for (const cmd of writes) t.notMatch(cmd.split(' && ')[0], /\.prom$/, `${cmd}: the file being written is not a .prom the collector reads`);
});

t.test('--help of every command: whole words, described positionals, examples, no seed citation', async (t) => {
  const helps = await bundleHelps(COMMANDS.map((d) => d.name));
  const first = await installedCli([COMMANDS[0]!.name, '--help']);
  t.same([first.exitCode, first.stdout], [helps[0]!.exitCode, helps[0]!.stdout], `${COMMANDS[0]!.name} --help as a process of its own prints the same`);
  for (const [i, def] of COMMANDS.entries()) {
    const r = helps[i]!;
    t.equal(r.exitCode, 0, `${def.name} --help`);
    const flat = r.stdout.replace(/\s+/g, ' ');
    const texts = [def.describe, ...Object.values(def.options ?? {}).map((o) => o.describe), ...Object.values(def.positionals ?? {}).map((p) => p.describe)];
    const broken = texts.flatMap(words).filter((w) => !new RegExp(`(^|[^A-Za-z'-])${w}([^A-Za-z'-]|$)`).test(flat));
    t.same(broken, [], `${def.name}: no word is wrapped in the middle`);
    for (const p of positionalNames(def)) {
      t.match(r.stdout, new RegExp(`\\n  ${p.name} +\\S.*\\S`), `${def.name}: positional ${p.name} is described`);
    }
    t.match(r.stdout, /\nExamples:\n  vfpool /, `${def.name}: has examples`);
    t.notMatch(r.stdout, /seed/i, `${def.name}: cites no seed document`);
  }
});

t.test('--help names every environment variable and exit code; -h and --version work', async (t) => {
  const r = await vfpoolCli(['--help'], { env });
  t.equal(r.exitCode, 0);
  for (const k of Object.keys(SETTING_KEYS)) t.match(r.stdout, new RegExp(`\\n  ${k}: `), k);
  t.match(r.stdout, /\nExit codes:\n  0  success\n  1  .*\n  2  bad input.*\n  3  conflict/);
  // In-process (same program; compared with its own --help, as the wrapping differs: above).
  const h = await cli(['-h'], { env });
  t.same([h.exitCode, h.stdout], [0, (await cli(['--help'], { env })).stdout], '-h is --help');
  const v = await cli(['--version'], { env });
  t.same([v.exitCode, v.stdout], [0, readFileSync(join(REPO, 'dist/bin/version'), 'utf8')], 'the version the build stamped');
});

t.test('usage errors: one line each, exit 2, naming what is wrong', async (t) => {
  const cases: Array<[string[], string]> = [
    [[], 'vfpool: name a command: `vfpool --help` lists them\n'],
    [['frobnicate'], "vfpool: unknown command 'frobnicate': `vfpool --help` lists the commands\n"],
    [['net-start'], "vfpool: net-start: missing <pool>, the pool's name (its <name> in the network XML): e.g. `vfpool net-start sriov-pool`\n"],
    [['net-define'], "vfpool: net-define: missing <file>, the pool's network XML file (- for stdin): e.g. `vfpool net-define sriov-pool.xml`\n"],
    [['status', '--bogus'], 'vfpool: status: Unknown argument: bogus: see `vfpool status --help`\n'],
  ];
  // All in-process; the first two as processes too (yargs' exit(2) on the way out of the bundle).
  for (const [i, [args, stderr]] of cases.entries()) {
    for (const run of i < 2 ? [cli, vfpoolCli] : [cli]) {
      const r = await run(args, { env });
      t.same([r.exitCode, r.stderr, r.stdout], [2, stderr, ''], `vfpool ${args.join(' ')} (${run === cli ? 'in-process' : 'process'})`);
    }
  }
});

t.test('net-define --dry-run says what it did: checked the XML, wrote nothing', async (t) => {
  const w = makeSimEnv(t);
  const file = join(w.dir, 'p.xml');
  writeFileSync(file, `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const r = await cli(['net-define', '--dry-run', file], { env: w.env });
  t.same([r.exitCode, r.stdout], [0, `pool 'p' is valid; would write ${join(w.settings.configDir, 'networks/p.xml')} (--dry-run, nothing written)\n`]);
  t.notOk(existsSync(join(w.settings.configDir, 'networks/p.xml')));
  t.notMatch((await cli(['net-define', '--help'], { env })).stdout, /plan/, 'its --help promises no plan');
});

t.test('release --json reports freed VFs as released', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  t.equal((await cli(['prepare', '--xml', file], { env: w.env })).exitCode, 0);
  const r = await cli(['release', 'vm1', '--json'], { env: w.env });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { domain: 'vm1', dryRun: false, released: [{ vfAddr: '0000:3b:02.0', phase: 'released' }] });
});

t.test('net-list warns about a definition that does not parse, and lists the others', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('good', `<network><name>good</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  w.definePool('broken', `<network><name>broken</name><forward mode='bogus'/></network>`);
  const r = await cli(['net-list', '--json'], { env: w.env });
  t.equal(r.exitCode, 0);
  t.same(JSON.parse(r.stdout).map((p: { name: string }) => p.name), ['good']);
  t.match(r.stderr, /^vfpool: warning: pool 'broken' is not listed: .*broken\.xml: .*\(fix the file, or `vfpool net-undefine broken`\)\n$/);
});

t.test('a progress line on a terminal while VFs are created and removed, none on a pipe', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf></forward></network>`);
  const cli = join(REPO, 'dist/bin/cli.mjs');
  // script(1) gives the command a pseudo-terminal, as an administrator's shell would.
  const tty = async (args: string) =>
    execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'script', '-qec', `${process.execPath} ${cli} ${args}`, '/dev/null'], { env: { ...w.env, PATH: process.env.PATH! }, extendEnv: false, reject: false });
  const start = await tty('net-start p');
  t.equal(start.exitCode, 0, start.stderr);
  t.match(start.stdout, /\r\x1b\[Kvfpool: Step 1: eth1: write 2 to sriov_numvfs/);
  t.match(start.stdout, /\r\x1b\[KPool p started\r?\n?$/, 'the line is cleared before the result');
  const stop = await tty('net-destroy p');
  t.match(stop.stdout, /\r\x1b\[Kvfpool: Step 1: eth1: write 0 to sriov_numvfs/);
  const piped = await vfpoolCli(['net-start', 'p'], { env: w.env });
  t.same([piped.exitCode, piped.stdout, piped.stderr], [0, 'Pool p started\n', ''], 'on a pipe: the result only');
});

t.test('the man page comes from the same declarations and renders with man -l', async (t) => {
  const page = join(REPO, 'dist/man/vfpool.1');
  const r = await execa('man', ['-l', page], { env: { MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat', LC_ALL: 'C.UTF-8', PATH: process.env.PATH!, MANROFFOPT: '-ww' }, reject: false });
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.stderr, '', 'groff has no warning');
  t.match(r.stdout, /^VFPOOL\(1\) +User Commands +VFPOOL\(1\)/);
  for (const def of COMMANDS) {
    t.match(r.stdout, new RegExp(`\\n {7}vfpool ${def.name}\\b`), `${def.name} is in the man page`);
    for (const o of Object.keys(def.options ?? {})) t.match(r.stdout, new RegExp(`--${o}\\b`), `${def.name} --${o}`);
    for (const [cmd] of def.examples) t.ok(r.stdout.replace(/\s+/g, ' ').includes(`vfpool ${cmd}`), `example: vfpool ${cmd}`);
  }
  t.match(r.stdout, /\nENVIRONMENT\n[\s\S]*VFPOOL_JOURNAL_DIR[\s\S]*\nEXIT STATUS\n {7}0 +success/);
  // The installed page is what the declarations render, byte for byte (scripts/man.mjs wrote
  // it at build time, in a process of its own).
  const source = readFileSync(page, 'utf8');
  const [, date = '', troffVersion = ''] = /^\.TH VFPOOL 1 "([^"]+)" "vfpool ([^"]+)"/.exec(source) ?? [];
  const version = troffVersion.replace(/\\-/g, '-');
  t.equal(version, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version);
  t.equal(renderManPage(version, date), source);
});

t.test('completion: a bash script, and completions from the same declarations', async (t) => {
  const script = await cli(['completion'], { env: { ...env, SHELL: '/bin/bash' } });
  t.equal(script.exitCode, 0);
  t.match(script.stdout, /complete -o bashdefault -o default -F _vfpool_yargs_completions vfpool/);
  const cmds = await cli(['--get-yargs-completions', 'vfpool', ''], { env });
  t.same(cmds.stdout.trim().split('\n'), [...COMMANDS.map((c) => c.name), 'completion']);
  const opts = await cli(['--get-yargs-completions', 'vfpool', 'history', '--'], { env });
  for (const o of ['--pool', '--vf', '--since', '--json']) t.ok(opts.stdout.split('\n').includes(o), `history ${o}`);
});
