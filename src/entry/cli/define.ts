import type { Argv, Options } from 'yargs';
import { DEFAULT_SETTINGS, SETTING_DOCS, SETTING_KEYS } from '../../config/settings.js';
import { BadInputError } from '../../errors.js';
import { quoteInput } from '../../util/quote.js';

/**
 * One declaration per command, read by three consumers: the yargs parser (`--help` and the
 * arguments), the man page (man.ts) and shell completion (yargs' own, from the parser). A command
 * added here appears in all three; none of them lists commands of its own.
 */
export interface PositionalDef {
  describe: string;
}

export interface OptionDef {
  type: 'string' | 'number' | 'boolean';
  describe: string;
  default?: string | number | boolean;
  demandOption?: boolean;
  choices?: string[];
  alias?: string;
}

export interface CommandDef {
  name: string;
  /** Positionals in yargs' syntax after the name: `<pool>`, `[domain]`. */
  args?: string;
  describe: string;
  positionals?: Record<string, PositionalDef>;
  options?: Record<string, OptionDef>;
  /** `[command line after "vfpool", what it does]`; every command has at least one. */
  examples: Array<[string, string]>;
  // yargs' camel-case expansion ('dry-run' -> dryRun) is not in its inferred types, so each
  // handler states the arguments it reads.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  run(args: any): Promise<number>;
}

// Node fires a timer longer than this at once (TimeoutOverflowWarning), so a longer wait would
// not wait at all.
const LONGEST_TIMER_S = Math.floor(2 ** 31 / 1000) - 1;

/**
 * A duration option in seconds. Declared as a string, not a yargs number: yargs turns
 * `--timeout abc` into NaN, and the refusal must show what was typed.
 */
export function secondsOption(describe: string, defaultSeconds?: number): OptionDef {
  return defaultSeconds === undefined ? { type: 'string', describe } : { type: 'string', describe, default: defaultSeconds };
}

/** The value of a `secondsOption`, or a BadInputError naming the option and what it takes. */
export function parseSeconds(flag: string, raw: string | number, opts: { zeroAllowed: boolean }): number {
  const text = String(raw).trim();
  const seconds = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : NaN;
  const least = opts.zeroAllowed ? 'from 0' : 'above 0';
  if (Number.isNaN(seconds) || (!opts.zeroAllowed && seconds === 0) || seconds > LONGEST_TIMER_S) {
    throw new BadInputError(`--${flag} ${quoteInput(String(raw))} is not a number of seconds ${least} to ${LONGEST_TIMER_S}`, `give --${flag} a plain number of seconds, e.g. --${flag} 30`);
  }
  return seconds;
}

export const DRY_RUN: Record<string, OptionDef> = { 'dry-run': { type: 'boolean', default: false, describe: 'print what would be done, change nothing' } };
export const JSON_OUT: Record<string, OptionDef> = { json: { type: 'boolean', default: false, describe: 'machine-readable output (JSON)' } };

export const EXIT_CODES: Array<[number, string]> = [
  [0, 'success'],
  [1, 'the operation failed (nothing changed, or everything was rolled back); doctor: a check failed'],
  [2, 'bad input: XML, arguments, definitions or settings (the field and value are named)'],
  [3, 'conflict: a VF in use, a pool exhausted, a lock held too long'],
];

export function environmentDocs(): Array<[string, string]> {
  return (Object.keys(SETTING_KEYS) as Array<keyof typeof SETTING_KEYS>).map((k) => {
    const value = DEFAULT_SETTINGS[SETTING_KEYS[k]];
    return [k, `${SETTING_DOCS[k]} (${value === '' ? 'default: unset' : `default ${value}`})`];
  });
}

export function epilogue(): string {
  const env = environmentDocs().map(([k, d]) => `  ${k}: ${d}`);
  const codes = EXIT_CODES.map(([c, d]) => `  ${c}  ${d}`);
  return ['Environment (also KEY=value lines in /etc/vfpool/vfpool.conf; the environment wins):', ...env, '', 'Exit codes:', ...codes, '', 'Manual: man vfpool'].join('\n');
}

/** The positional names of a command, as `net-start <pool>` declares them. */
export function positionalNames(def: CommandDef): Array<{ name: string; required: boolean }> {
  return [...(def.args ?? '').matchAll(/([<[])([\w-]+)[>\]]/g)].map((m) => ({ name: m[2]!, required: m[1] === '<' }));
}

/** Registers every command on a yargs instance, with its positionals, options and examples. */
export function registerCommands(y: Argv, defs: CommandDef[], wrapHandler: (def: CommandDef) => (args: unknown) => Promise<void>): Argv {
  for (const def of defs) {
    y.command(
      def.args ? `${def.name} ${def.args}` : def.name,
      def.describe,
      (cy) => {
        for (const p of positionalNames(def)) cy.positional(p.name, { type: 'string', describe: def.positionals?.[p.name]?.describe ?? '' });
        for (const [name, o] of Object.entries(def.options ?? {})) cy.option(name, o as Options);
        for (const [cmd, desc] of def.examples) cy.example(`$0 ${cmd}`, desc);
        return cy;
      },
      wrapHandler(def),
    );
  }
  return y;
}
