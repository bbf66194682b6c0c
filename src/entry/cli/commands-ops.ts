import { fsError } from '../../util/fs-errors.js';
import { BadInputError, errnoOf } from '../../errors.js';
import { quoteInput } from '../../util/quote.js';
import { loadSettings, settingsFrom } from '../../config/settings.js';
import { createContext } from '../../pool/context.js';
import { DEFAULT_RECONCILE_GRACE_MS } from '../../pool/reconcile.js';
import { Journal, filterHistory, formatHistory } from '../../state/journal.js';
import { parseObjectName, parsePciAddress } from '../../types.js';
import { JSON_OUT, type CommandDef } from './define.js';
import { cliContext, out, warn } from './output.js';
import { installRoot } from './install-root.js';
import { untrustedJournalDir } from '../../util/state-dir-owner.js';

export const OPS_COMMANDS: CommandDef[] = [
  {
    name: 'doctor',
    describe: 'check every prerequisite on this host (IOMMU, vfio, PFs, pools, hooks, libvirt, QEMU); read-only',
    options: JSON_OUT,
    examples: [['doctor', 'one row per check, with the fix for each failed one'], ['doctor --json', '{"checks":[{"id","ok","found","fix"}]}']],
    async run(a: { json: boolean }) {
      // A broken vfpool.conf is one of the things doctor reports, so it must not stop doctor:
      // then the environment and the defaults apply.
      let settings;
      try {
        settings = loadSettings();
      } catch (err) {
        if (!(err instanceof BadInputError)) throw err;
        settings = settingsFrom(process.env, {});
      }
      const ctx = createContext(settings, 'cli doctor');
      // Loaded when the command runs: every other `vfpool` call starts without evaluating it.
      const { formatDoctor, runDoctor } = await import('../../ops/doctor.js');
      const checks = await runDoctor(ctx, { installDir: installRoot(), env: process.env, graceMs: DEFAULT_RECONCILE_GRACE_MS });
      if (a.json) out(JSON.stringify({ checks }));
      else formatDoctor(checks).forEach((l) => out(l));
      return checks.every((c) => c.ok) ? 0 : 1;
    },
  },
  {
    name: 'history',
    args: '[domain]',
    describe: 'the VF history: who had which VF, when, and what it was set to (oldest first)',
    positionals: { domain: { describe: 'only this domain\'s entries' } },
    options: {
      pool: { type: 'string', describe: 'only this pool\'s entries' },
      vf: { type: 'string', describe: 'only this VF\'s entries (PCI address, 0000:3b:02.0)' },
      since: { type: 'string', describe: 'only entries at or after this time (ISO 8601, e.g. 2026-11-30T04:00:00Z)' },
      ...JSON_OUT,
    },
    examples: [
      ['history vm1', 'everything domain vm1 did with VFs'],
      ['history --vf 0000:3b:02.0', 'who had this VF, and what MAC/VLAN it was given'],
      ['history --pool sriov-pool --since 2026-11-30 --json', 'one JSON object per line'],
    ],
    async run(a: { domain?: string; pool?: string; vf?: string; since?: string; json: boolean }) {
      const filter = {
        domain: a.domain !== undefined ? parseObjectName(a.domain, 'domain') : undefined,
        pool: a.pool !== undefined ? parseObjectName(a.pool, 'pool') : undefined,
        vf: a.vf !== undefined ? parsePciAddress(a.vf, '--vf') : undefined,
        since: a.since !== undefined ? parseSince(a.since) : undefined,
      };
      const ctx = cliContext('history');
      const journal = new Journal(ctx.settings.journalDir);
      // Entries another user could have planted are not shown as what root recorded.
      const untrusted = untrustedJournalDir(journal.dir);
      if (untrusted) throw new BadInputError(untrusted.message, untrusted.hint);
      let read;
      try {
        read = journal.readAll();
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') read = { entries: [], unreadable: 0 };
        else throw fsError(err, journal.file, 'the VF history', 'VFPOOL_JOURNAL_DIR');
      }
      if (read.unreadable) warn(`${read.unreadable} line(s) of ${journal.file}* are not history entries (JSON objects with a time and an op) and were skipped`);
      const entries = filterHistory(read.entries, filter);
      for (const line of a.json ? entries.map((e) => JSON.stringify(e)) : formatHistory(entries)) out(line);
      if (!a.json && entries.length === 0) out(`no history entries${read.entries.length ? ' match' : ` in ${journal.file}`}`);
      return 0;
    },
  },
];

/**
 * `--since`: an ISO 8601 date or date-time (`2026-11-30`, `2026-11-30T04:00`, `…:00Z`,
 * `…+01:00`; a space may stand for the T). Date.parse alone also takes V8's legacy forms, in
 * which `5` is May 2001, `99` is 1999 and `2026-02-30` is March 2nd: a typo there silently
 * showed the whole history, so anything else is refused.
 */
export function parseSince(text: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i.exec(text);
  const ms = m ? Date.parse(text) : NaN;
  const day = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (Number.isNaN(ms) || !day || day.getUTCMonth() !== Number(m![2]) - 1 || day.getUTCDate() !== Number(m![3])) {
    throw new BadInputError(`--since ${quoteInput(text)} is not a time`, 'give an ISO 8601 date or time such as 2026-11-30 or 2026-11-30T04:00:00Z');
  }
  return ms;
}
