import { runEntry } from '../run.js';
import { COMMANDS } from './commands.js';
import { positionalNames, type CommandDef } from './define.js';
import { progress } from './output.js';

/**
 * The arguments yargs would hand a command's handler, for the plain shapes of a command line,
 * without loading yargs: `vfpool net-start sriov-pool`, `vfpool prepare --xml vm1.xml
 * --delivery hotplug`, `vfpool status --json`. yargs' module initialisation, the registration
 * of every command and its parse were ~17 ms of the ~48 ms a `vfpool net-start` costs beyond
 * `node -e 0` (and its code in the bundle's code cache half of the cache), which scripts and
 * the real-kernel lab, where TCG multiplies every millisecond, pay on every call.
 *
 * Anything else is left to yargs (null), which parses, checks and explains as before: help,
 * version and completion, no command or an unknown one, `--` and `-`, short options, an option
 * the command does not declare, given twice or without its value, `--no-…`, a value outside an
 * option's choices, numbers, a positional that starts with `-`, too many or too few
 * positionals, a missing required option. test/entry/cli/fast-path.test.ts checks that every
 * shape taken here gives the handler what yargs gives it.
 */
export function parsePlainCommand(argv: string[], defs: CommandDef[]): { def: CommandDef; args: Record<string, unknown> } | null {
  const def = defs.find((d) => d.name === argv[0]);
  if (!def) return null;
  const options = def.options ?? {};
  const positionals: string[] = [];
  const given = new Map<string, string | boolean>();
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-')) {
      positionals.push(arg);
      continue;
    }
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) return null;
    const [, name, inline] = m as unknown as [string, string, string | undefined];
    const o = options[name];
    if (!o || o.alias !== undefined || given.has(name)) return null;
    if (o.type === 'boolean') {
      if (inline !== undefined) return null;
      given.set(name, true);
      continue;
    }
    if (o.type !== 'string') return null;
    const value = inline ?? argv[++i];
    if (value === undefined || (inline === undefined && value.startsWith('-'))) return null;
    if (o.choices && !o.choices.includes(value)) return null;
    given.set(name, value);
  }
  const declared = positionalNames(def);
  if (positionals.length > declared.length || declared.some((p, i) => p.required && positionals[i] === undefined)) return null;
  const args: Record<string, unknown> = { _: [def.name], $0: 'vfpool' };
  declared.forEach((p, i) => {
    if (positionals[i] !== undefined) args[p.name] = positionals[i];
  });
  for (const [name, o] of Object.entries(options)) {
    const value = given.get(name) ?? o.default;
    if (value === undefined) {
      if (o.demandOption) return null;
      continue;
    }
    args[name] = value;
    args[name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())] = value;
  }
  return { def, args };
}

/** A command's run, as both ways of reading its line end in it: its handler inside the exit-code boundary, then the progress line cleared. */
export function runCommand(def: CommandDef, args: Record<string, unknown>): Promise<void> {
  return runEntry(() => def.run(args)).finally(() => progress.done());
}

/** Runs a plain command line (parsePlainCommand); null when the line is not one. */
export function runPlainCommand(argv: string[], defs: CommandDef[] = COMMANDS): Promise<void> | null {
  const plain = parsePlainCommand(argv, defs);
  return plain && runCommand(plain.def, plain.args);
}
