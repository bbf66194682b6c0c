import yargs, { type Argv } from 'yargs';
import { STDIN_ARG } from '../run.js';
import { COMMANDS, COMPLETION, SUMMARY } from './commands.js';
import { epilogue, positionalNames, registerCommands, type CommandDef } from './define.js';
import { runCommand } from './fast-path.js';
import { vfpoolVersion } from './install-root.js';
import { writeStderr } from '../../util/stdio.js';

/**
 * Help text wraps at the terminal's width, 100 columns at most (long lines are hard to read)
 * and 100 when not on a terminal; never narrower than 60, below which cliui has to break
 * words inside the description column.
 */
export function helpWidth(columns = process.stdout.columns): number {
  return Math.max(60, Math.min(columns || 100, 100));
}

function usageError(line: string): never {
  writeStderr(`vfpool: ${line}\n`);
  process.exit(2);
}

/** yargs' messages, made into vfpool's one-line errors that name what is missing or unknown. */
function explain(yargsMsg: string, argv: string[], defs: CommandDef[]): string {
  const msg = yargsMsg.replace(/\s*\n\s*/g, ' ').trim(); // one line, as every vfpool error
  const first = argv.find((x) => !x.startsWith('-'));
  const def = defs.find((d) => d.name === first);
  if (/^Unknown arguments?:/.test(msg) && first !== undefined && !def && first !== COMPLETION.name) {
    return `unknown command '${first}': \`vfpool --help\` lists the commands`;
  }
  // yargs reads `--bogus x` as an option with a value, so an unknown option before the
  // positional shows as "missing <pool>": name the unknown option instead, it is the mistake.
  const known = new Set(['help', 'h', 'version', ...Object.keys(def?.options ?? {})]);
  const unknown = argv.filter((x) => x.startsWith('--') && x !== '--' && !known.has(x.slice(2).split('=')[0]!.replace(/^no-/, '')));
  if (/^Not enough non-option arguments/.test(msg) && def && unknown.length) {
    return `${def.name}: unknown option ${unknown.map((x) => x.split('=')[0]).join(', ')}: see \`vfpool ${def.name} --help\``;
  }
  if (/^Not enough non-option arguments/.test(msg) && def) {
    const missing = positionalNames(def).filter((p) => p.required).map((p) => `<${p.name}>, ${def.positionals?.[p.name]?.describe ?? p.name}`);
    return `${def.name}: missing ${missing.join('; ')}: e.g. \`vfpool ${def.examples[0]![0]}\``;
  }
  // yargs names an unknown `--dry-run` twice, as itself and camelCased (`dry-run, dryRun`).
  const once = msg.replace(/^(Unknown arguments?): (.*)$/, (_, head: string, list: string) => {
    const names = list.split(', ');
    const kept = names.filter((n) => !names.some((o) => o !== n && o.includes('-') && o.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase()) === n));
    return `${kept.length === 1 ? 'Unknown argument' : head}: ${kept.join(', ')}`;
  });
  return `${def ? `${def.name}: ` : ''}${once.replace(/\.$/, '')}: see \`vfpool ${def ? `${def.name} ` : ''}--help\``;
}

export function buildProgram(argv: string[], defs: CommandDef[] = COMMANDS): Argv {
  const end = argv.indexOf('--');
  const args = argv.map((x, i) => (x === '-' && (end === -1 || i < end) ? STDIN_ARG : x));
  const y = yargs(args)
    .scriptName('vfpool')
    // `vfpool migrate DOMAIN URI -- OPTIONS`: what follows -- goes to virsh, kept apart from vfpool's own.
    .parserConfiguration({ 'populate--': true })
    .usage(`$0 <command> [options]\n\n${SUMMARY}`)
    .wrap(helpWidth())
    .epilogue(epilogue());
  registerCommands(y, defs, (def) => (args) => runCommand(def, args as Record<string, unknown>));
  // yargs prints the completion script for `completion --help` too: that help is asked for
  // by declaring completion as a plain command, whose help yargs then shows.
  if (args[0] === COMPLETION.name && args.some((x) => x === '--help' || x === '-h')) {
    y.command(COMPLETION.name, COMPLETION.describe, (c) => COMPLETION.examples.reduce((e, [cmd, what]) => e.example(`$0 ${cmd}`, what), c));
  } else {
    y.completion(COMPLETION.name, COMPLETION.describe);
  }
  return y
    .example(`$0 ${COMPLETION.examples[0]![0]}`, COMPLETION.examples[0]![1])
    .demandCommand(1, 'name a command: `vfpool --help` lists them')
    .strict()
    .fail((msg, err) => {
      if (err) throw err;
      if (argv.length === 0 || /^name a command/.test(msg)) usageError('name a command: `vfpool --help` lists them');
      usageError(explain(msg, argv, defs));
    })
    .help('help', 'show help (also: vfpool COMMAND --help)')
    .alias('help', 'h')
    .version('version', 'print vfpool\'s version', vfpoolVersion());
}
