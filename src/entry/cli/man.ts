import { COMMANDS, COMPLETION, SUMMARY } from './commands.js';
import { EXIT_CODES, environmentDocs, positionalNames, type CommandDef } from './define.js';

/**
 * vfpool(1) in troff (man(7) macros), generated from the same command declarations as --help,
 * so the two cannot disagree. Written at build time to dist/man/vfpool.1 (scripts/bundle.mjs)
 * and installed by install.sh.
 */

/** Escapes text for troff: backslashes, and a leading dot or quote that would start a request. */
export function troff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1');
}

function synopsis(def: Pick<CommandDef, 'name' | 'args' | 'options'>): string {
  const opts = Object.entries(def.options ?? {}).map(([n, o]) => (o.demandOption ? `\\fB\\-\\-${troff(n)}\\fR \\fI${o.type.toUpperCase()}\\fR` : `[\\fB\\-\\-${troff(n)}\\fR${o.type === 'boolean' ? '' : ` \\fI${o.type.toUpperCase()}\\fR`}]`));
  return [`\\fBvfpool ${troff(def.name)}\\fR`, def.args ? troff(def.args) : '', ...opts].filter(Boolean).join(' ');
}

function commandSection(def: Pick<CommandDef, 'name' | 'args' | 'describe' | 'positionals' | 'options' | 'examples'>): string[] {
  const lines = ['.TP', synopsis(def), troff(def.describe) + '.'];
  for (const p of positionalNames(def as CommandDef)) {
    lines.push('.RS', '.TP', `\\fI${troff(p.name)}\\fR`, troff(def.positionals?.[p.name]?.describe ?? ''), '.RE');
  }
  for (const [name, o] of Object.entries(def.options ?? {})) {
    const extra = [o.choices ? `one of ${o.choices.join(', ')}` : '', o.default !== undefined && o.type !== 'boolean' ? `default ${o.default}` : ''].filter(Boolean).join('; ');
    lines.push('.RS', '.TP', `\\fB\\-\\-${troff(name)}\\fR`, troff(o.describe + (extra ? ` (${extra})` : '')), '.RE');
  }
  for (const [cmd, desc] of def.examples) {
    lines.push('.RS', '.PP', `\\fBvfpool ${troff(cmd)}\\fR`, '.br', troff(desc), '.RE');
  }
  return lines;
}

export function renderManPage(version: string, date: string, defs: CommandDef[] = COMMANDS): string {
  const lines = [
    `.TH VFPOOL 1 "${date}" "vfpool ${troff(version)}" "User Commands"`,
    // Left-aligned and unhyphenated: command lines and paths must read exactly as typed.
    '.ad l',
    '.nh',
    '.SH NAME',
    `vfpool \\- ${troff(SUMMARY.replace(/\.$/, ''))}`,
    '.SH SYNOPSIS',
    '\\fBvfpool\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]',
    '.br',
    '\\fBvfpool\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR',
    '.SH DESCRIPTION',
    troff('vfpool creates SR-IOV virtual functions when a pool (libvirt-style network XML) starts, hands each guest a free VF with a pinned MAC and VLAN, and puts the VF back exactly as it was when the guest stops. libvirt runs it through its hooks (/etc/libvirt/hooks/network.d/vfpool, /etc/libvirt/hooks/qemu.d/vfpool); this command manages pools and VFs by hand.'),
    '.SH COMMANDS',
    ...defs.flatMap(commandSection),
    ...commandSection(COMPLETION),
    '.SH ENVIRONMENT',
    troff('Each variable can also be set as a KEY=value line in /etc/vfpool/vfpool.conf; the environment wins.'),
    ...environmentDocs().flatMap(([k, d]) => ['.TP', `\\fB${troff(k)}\\fR`, troff(d)]),
    '.SH EXIT STATUS',
    ...EXIT_CODES.flatMap(([c, d]) => ['.TP', `\\fB${c}\\fR`, troff(d)]),
    '.SH FILES',
    '.TP', '\\fI/etc/vfpool/networks/NAME.xml\\fR', troff('pool definitions'),
    '.TP', '\\fI/run/vfpool/state.json\\fR', troff('allocations and running pools (gone at a reboot, like the VFs)'),
    '.TP', '\\fI/var/lib/vfpool/history.jsonl\\fR', troff('the VF history, rotated (history.jsonl.1 ...)'),
    '.SH SEE ALSO',
    '\\fBvirsh\\fR(1), \\fBqemu\\-system\\-x86_64\\fR(1)',
  ];
  return lines.join('\n') + '\n';
}
