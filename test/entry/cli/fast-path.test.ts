import t from 'tap';
import { COMMANDS } from '../../../src/entry/cli/commands.js';
import { positionalNames, type CommandDef } from '../../../src/entry/cli/define.js';
import { parsePlainCommand } from '../../../src/entry/cli/fast-path.js';
import { buildProgram } from '../../../src/entry/cli/program.js';
import { runInProcess } from '../../../src/entry/run.js';

/** What yargs hands the command's handler for `vfpool ARGV` (the handler replaced by a recorder). */
async function yargsArgs(argv: string[]): Promise<{ exitCode: number; args: Record<string, unknown> | null; stderr: string }> {
  let args: Record<string, unknown> | null = null;
  const recording = COMMANDS.map((d): CommandDef => ({ ...d, run: async (a: Record<string, unknown>) => ((args = a), 0) }));
  const r = await runInProcess(async () => {
    await buildProgram(argv, recording).exitProcess(false).parseAsync();
  }, { env: {} });
  return { exitCode: r.exitCode, args, stderr: r.stderr };
}

/** The keys a handler reads: positionals by name, options by name and in camel case. */
function handlerView(def: CommandDef, args: Record<string, unknown>): Record<string, unknown> {
  const keys = [...positionalNames(def).map((p) => p.name), ...Object.keys(def.options ?? {}).flatMap((o) => [o, o.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())])];
  return Object.fromEntries(keys.filter((k) => args[k] !== undefined).map((k) => [k, args[k]]));
}

/** Command lines of every shape the fast path takes, for every command. */
function plainLines(): string[][] {
  const lines: string[][] = [];
  for (const def of COMMANDS) {
    // Its examples, as the --help and the man page show them (those without shell syntax).
    for (const [cmd] of def.examples) if (!/[|<>'"$;&]/.test(cmd)) lines.push(cmd.split(/\s+/));
    const pos = positionalNames(def).map((p, i) => `arg${i}`);
    const required = pos.slice(0, positionalNames(def).filter((p) => p.required).length);
    const opts = Object.entries(def.options ?? {});
    const value = (o: (typeof opts)[number][1]) => o.choices?.at(-1) ?? 'value.xml';
    const demanded = opts.filter(([, o]) => o.demandOption).flatMap(([n, o]) => [`--${n}`, value(o)]);
    lines.push([def.name, ...required, ...demanded]);
    lines.push([def.name, ...pos, ...demanded]);
    // Every option given, separate and inline, before and after the positionals.
    const all = opts.flatMap(([n, o]) => (o.type === 'boolean' ? [`--${n}`] : o.type === 'string' ? [`--${n}`, value(o)] : []));
    const inline = opts.flatMap(([n, o]) => (o.type === 'boolean' ? [`--${n}`] : o.type === 'string' ? [`--${n}=${value(o)}`] : []));
    lines.push([def.name, ...pos, ...all], [def.name, ...inline, ...pos]);
  }
  return lines;
}

t.test('every plain command line gives the handler what yargs gives it', async (t) => {
  let taken = 0;
  for (const argv of plainLines()) {
    const plain = parsePlainCommand(argv, COMMANDS);
    if (!plain) continue; // left to yargs (the next test lists what and why)
    const y = await yargsArgs(argv);
    taken++;
    t.equal(y.exitCode, 0, `vfpool ${argv.join(' ')}: yargs takes it too (${y.stderr.trim()})`);
    t.same(handlerView(plain.def, plain.args), handlerView(plain.def, y.args ?? {}), `vfpool ${argv.join(' ')}: the same arguments`);
    t.same(plain.args._, [plain.def.name], `vfpool ${argv.join(' ')}: _ names the command`);
  }
  t.ok(taken >= COMMANDS.length * 3, `the fast path took ${taken} lines, at least three shapes per command`);
});

t.test('what the fast path leaves to yargs', async (t) => {
  const left: string[][] = [
    [],
    ['--help'],
    ['--version'],
    ['nope'],
    ['net-start'],
    ['net-start', '--help'],
    ['net-start', '-h'],
    ['net-start', 'p', '--version'],
    ['net-start', 'a', 'b'],
    ['net-start', '--bogus', 'p'],
    ['net-start', '--dry-run=false', 'p'],
    ['net-start', '--no-dry-run', 'p'],
    ['net-start', '-x', 'p'],
    ['net-start', '-'],
    ['net-start', '--', 'p'],
    ['net-start', '--dry-run', '--dry-run', 'p'],
    ['status', '--format'],
    ['status', '--format', 'yaml'],
    ['status', '--format=yaml'],
    ['status', '--format', '--json'],
    ['prepare'],
    ['prepare', '--xml'],
    ['prepare', '--xml', '-'],
    ['prepare', '--xml', 'vm1.xml', '--delivery', 'bogus'],
    ['migrate', 'vm1', 'qemu+ssh://dst/system', '--', '--live'],
    ['completion'],
    ['--get-yargs-completions', 'vfpool', ''],
  ];
  for (const argv of left) t.equal(parsePlainCommand(argv, COMMANDS), null, `vfpool ${argv.join(' ')}: left to yargs`);
});
