import t from 'tap';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { helpWidth } from '../../../src/entry/cli/program.js';
import { installRoot, vfpoolVersion } from '../../../src/entry/cli/install-root.js';
import { spawnSync } from 'node:child_process';
import { Progress } from '../../../src/entry/cli/output.js';
import { readInputFile } from '../../../src/entry/run.js';
import { environmentDocs, positionalNames } from '../../../src/entry/cli/define.js';
import { COMMANDS } from '../../../src/entry/cli/commands.js';
import { BadInputError } from '../../../src/errors.js';
import { runCliInProcess } from '../../helpers/cli-in-process.js';
import { scratchDir } from '../../helpers/scratch.js';
import { REPO } from '../../helpers/spawn.js';

t.test('help width: the terminal\'s, between 60 and 100 columns; 100 off a terminal', async (t) => {
  t.same([helpWidth(undefined), helpWidth(0), helpWidth(40), helpWidth(80), helpWidth(200)], [100, 100, 60, 80, 100]);
});

t.test('--help lists every command and the epilogue; usage errors name the command and its help', async (t) => {
  const env = { VFPOOL_CONFIG_DIR: scratchDir(t) };
  const help = await runCliInProcess(['--help'], env);
  t.equal(help.exitCode, 0);
  for (const def of COMMANDS) t.match(help.stdout, new RegExp(`vfpool ${def.name}\\b`), def.name);
  t.match(help.stdout, /^Environment \(also KEY=value lines in \/etc\/vfpool\/vfpool\.conf; the environment wins\):$/m);
  for (const [key] of environmentDocs()) t.match(help.stdout, new RegExp(`^  ${key}: `, 'm'), key);
  // Every default said once, and an empty one as such, not as "(default )".
  for (const [key, doc] of environmentDocs()) t.match(doc, /\((default \S.*|default: unset)\)$/, key);
  for (const [key, doc] of environmentDocs()) t.equal(doc.match(/default/g)!.length, 1, `${key}: its default said once`);
  t.match(environmentDocs().find(([k]) => k === 'VFPOOL_SIM_VF_DEVICE')![1], /\(default: unset\)$/);
  t.match(help.stdout, /\nManual: man vfpool\n$/);
  t.match(help.stdout, /^ {2}3 {2}conflict: a VF in use/m);

  const unknownOption = await runCliInProcess(['net-list', '--bogus'], env);
  t.same(unknownOption, { exitCode: 2, stdout: '', stderr: 'vfpool: net-list: Unknown argument: bogus: see `vfpool net-list --help`\n' });
  // An unknown option that took the pool as its value is named, not the "missing" pool.
  t.same(await runCliInProcess(['net-start', '--bogus', 'p'], env), { exitCode: 2, stdout: '', stderr: 'vfpool: net-start: unknown option --bogus: see `vfpool net-start --help`\n' });
  // yargs lists an unknown --dry-run as `dry-run, dryRun`: once is enough.
  t.same(await runCliInProcess(['status', '--dry-run'], env), { exitCode: 2, stdout: '', stderr: 'vfpool: status: Unknown argument: dry-run: see `vfpool status --help`\n' });
  const badChoice = await runCliInProcess(['status', '--format', 'xml'], env);
  t.equal(badChoice.exitCode, 2);
  t.match(badChoice.stderr, /^vfpool: status: Invalid values: Argument: format, Given: "xml", Choices: "table", "json", "prometheus": see `vfpool status --help`\n$/);
  t.same(await runCliInProcess([], env), { exitCode: 2, stdout: '', stderr: 'vfpool: name a command: `vfpool --help` lists them\n' });
  // Like every command's: the completion script itself is `vfpool completion` without --help.
  for (const flag of ['--help', '-h']) {
    const completionHelp = await runCliInProcess(['completion', flag], env);
    t.equal(completionHelp.exitCode, 0);
    t.match(completionHelp.stdout, /^vfpool completion\n\nprint a shell completion script for bash \(or zsh\)\n[\s\S]*Examples:\n {2}vfpool completion > \/etc\/bash_completion\.d\/vfpool /, `completion ${flag}`);
    t.notMatch(completionHelp.stdout, /complete -o/, `completion ${flag}: no script`);
  }
  t.match((await runCliInProcess(['completion'], env)).stdout, /complete -o bashdefault -o default -F _vfpool_yargs_completions vfpool\n/, 'the script');
});

t.test('--version: the build the install the script belongs to was made from', async (t) => {
  // Reproduced: every build of a release printed package.json's 0.1.0, so a bug report could
  // not say which one ran. The build stamps dist/bin/version (scripts/bundle.mjs).
  const saved = process.argv[1];
  t.teardown(() => void (process.argv[1] = saved!));
  process.argv[1] = join(REPO, 'dist/bin/cli.mjs');
  const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  const r = await runCliInProcess(['--version'], {});
  t.same([r.exitCode, r.stderr], [0, '']);
  if (spawnSync('git', ['rev-parse', '--git-dir'], { cwd: REPO }).status !== 0) {
    t.equal(r.stdout, `${version}\n`, 'built outside git: the release alone');
    return;
  }
  const m = /^(\S+) \(git (\S+?)(-dirty)?\)\n$/.exec(r.stdout);
  t.ok(m, `the release and the commit: ${r.stdout}`);
  t.equal(m?.[1], version, 'package.json\'s version first');
  // git describe: a tag, TAG-N-gHASH, or HASH alone; each names a commit of this repository.
  const commit = m?.[2]?.replace(/^.*-g(?=[0-9a-f]{12}$)/, '') ?? '';
  t.equal(spawnSync('git', ['rev-parse', '--verify', '--quiet', `${commit}^{commit}`], { cwd: REPO }).status, 0, `${commit} is a commit here`);

  // An install whose build was not stamped (tsc alone): package.json's version.
  const dir = scratchDir(t);
  mkdirSync(join(dir, 'hooks'));
  mkdirSync(join(dir, 'dist/bin'), { recursive: true });
  writeFileSync(join(dir, 'hooks/vfpool-hook'), '');
  writeFileSync(join(dir, 'package.json'), '{"version":"9.9.9"}');
  process.argv[1] = join(dir, 'dist/bin/cli.mjs');
  writeFileSync(process.argv[1], '');
  t.equal(vfpoolVersion(), '9.9.9');
  writeFileSync(join(dir, 'dist/bin/version'), '9.9.9 (git abcdef012345)\n');
  t.equal(vfpoolVersion(), '9.9.9 (git abcdef012345)', 'stamped: the stamp');
});

t.test('installRoot: follows the bin link to the install, null when there is none', async (t) => {
  const dir = scratchDir(t);
  t.equal(installRoot(join(REPO, 'dist/bin/cli.mjs')), REPO);
  // PREFIX/bin/vfpool -> PREFIX/lib/vfpool/dist/bin/cli.mjs, as install.sh links it.
  const lib = join(dir, 'lib/vfpool');
  mkdirSync(join(lib, 'dist/bin'), { recursive: true });
  mkdirSync(join(lib, 'hooks'));
  writeFileSync(join(lib, 'hooks/vfpool-hook'), '');
  writeFileSync(join(lib, 'package.json'), '{"version":"9.9.9"}');
  writeFileSync(join(lib, 'dist/bin/cli.mjs'), '');
  mkdirSync(join(dir, 'bin'));
  symlinkSync(join(lib, 'dist/bin/cli.mjs'), join(dir, 'bin/vfpool'));
  t.equal(installRoot(join(dir, 'bin/vfpool')), lib);
  t.equal(installRoot(join(dir, 'bin/missing')), null, 'a script that does not exist');
  t.equal(installRoot(''), null);
  writeFileSync(join(dir, 'loose.mjs'), '');
  t.equal(installRoot(join(dir, 'loose.mjs')), null, 'no package.json and hooks above it');
});

t.test('progress on a terminal: one line replaced in place, warnings kept, cleared at the end', async (t) => {
  const written: string[] = [];
  const tty = { isTTY: true, columns: 30, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  const p = new Progress(tty);
  t.equal(p.enabled, true);
  p.show('eth1: write 4 to sriov_numvfs and wait for the VFs');
  p.show('warning: eth1 is down');
  p.done();
  p.show('step 2');
  p.done();
  p.done();
  t.same(written, [
    '\r\x1b[Kvfpool: eth1: write 4 to srio', // cut at the terminal's width less one
    '\r\x1b[K', 'vfpool: warning: eth1 is down\n',
    '\r\x1b[Kvfpool: step 2', '\r\x1b[K',
  ]);
  const sized0 = { isTTY: true, columns: 0, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  written.length = 0;
  new Progress(sized0).show('x'.repeat(100));
  t.equal(written[0]!.length, '\r\x1b[K'.length + 79, 'a pty without a size: 80 columns');
  const pipe = { isTTY: false, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  written.length = 0;
  const quiet = new Progress(pipe);
  quiet.show('anything');
  quiet.show('warning: anything');
  quiet.done();
  t.same(written, [], 'not on a pipe');
});

t.test('readInputFile: a directory is bad input with the errno', async (t) => {
  const dir = scratchDir(t);
  await t.rejects(readInputFile(dir), new BadInputError(`cannot read ${dir}: EISDIR`, 'give the path of an XML file'));
});

t.test('positional names and whether they are required', async (t) => {
  t.same(positionalNames({ name: 'x', args: '<pool> [domain]', describe: '', examples: [], run: async () => 0 }), [{ name: 'pool', required: true }, { name: 'domain', required: false }]);
  t.same(positionalNames({ name: 'x', describe: '', examples: [], run: async () => 0 }), []);
});
