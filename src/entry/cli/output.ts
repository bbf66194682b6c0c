import Table from 'cli-table3';
import { loadSettings } from '../../config/settings.js';
import { createContext, type Context } from '../../pool/context.js';
import type { Status, VfStatus } from '../../pool/status.js';
import { isTerminal, writeStderr, writeStdout } from '../../util/stdio.js';

export function out(line = ''): void {
  progress.done();
  writeStdout(line + '\n');
}

export function warn(line: string): void {
  progress.done();
  writeStderr(`vfpool: warning: ${line}\n`);
}

/**
 * A progress line on a terminal: each step of a long operation (creating or removing VFs can
 * take seconds per PF while drivers probe) replaces the previous one on stderr, and the line is
 * cleared when the command ends. Not on a pipe or a file, where it would be noise.
 */
export class Progress {
  private shown = false;
  /** `stream`: stderr unless given, asked for (and so built: src/util/stdio.ts) only on a terminal. */
  constructor(private readonly given?: NodeJS.WriteStream) {}
  private get stream(): NodeJS.WriteStream {
    return this.given ?? process.stderr;
  }
  get enabled(): boolean {
    return this.given ? Boolean(this.given.isTTY) : isTerminal(2);
  }
  show = (line: string): void => {
    if (!this.enabled) return;
    if (line.startsWith('warning: ')) {
      // A warning must stay on screen: it is printed as a line of its own, not overwritten.
      this.done();
      this.stream.write(`vfpool: ${line}\n`);
      return;
    }
    const width = Math.max(20, (this.stream.columns || 80) - 1); // a pty without a size says 0
    this.stream.write(`\r\x1b[K${`vfpool: ${line}`.slice(0, width)}`);
    this.shown = true;
  };
  done(): void {
    if (this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
  }
}
export const progress = new Progress();

/** The context of one CLI command; `withProgress` echoes its log steps on a terminal. */
export function cliContext(what: string, withProgress = false): Context {
  return createContext(loadSettings(), `cli ${what}`, withProgress && progress.enabled ? progress.show : null);
}

/** A table without lines between rows: status lists up to hundreds of VFs. */
export function compactTable(head: string[]): InstanceType<typeof Table> {
  return new Table({
    head,
    style: { head: [], border: [], compact: true },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}

export function printStatusTable(s: Status): void {
  if (s.pfs.length === 0) out(`no SR-IOV physical functions on host '${s.host}'`);
  for (const pf of s.pfs) {
    out(`${pf.name} ${pf.address} driver ${pf.driver ?? '-'} ${pf.up ? 'up' : 'DOWN'}: ${pf.numVfs} of ${pf.totalVfs} VFs`);
    if (pf.vfs.length === 0) continue;
    const t = compactTable(['VF', 'address', 'netdev', 'driver', 'MAC', 'VLAN', 'owner']);
    for (const v of pf.vfs) {
      t.push([
        v.index,
        v.address,
        v.netdev ?? '-',
        v.driver ?? '-',
        v.mac ?? '-',
        v.vlan ? String(v.vlan) : '-',
        ownerCell(v),
      ]);
    }
    out(t.toString());
  }
}

function ownerCell(v: VfStatus): string {
  if (!v.owner) return 'free';
  if (v.owner.domain !== null) return `${v.owner.domain}${v.owner.pool ? ` (${v.owner.pool})` : ''}`;
  return v.owner.via === 'stacked' ? `${v.owner.stacked!.join(', ')} (stacked)` : `pid ${v.owner.pid} (/dev/vfio/${v.iommuGroup})`;
}
