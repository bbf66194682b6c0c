import type { Context } from '../pool/context.js';
import { qemuArgvBySocket } from '../migrate/devices.js';
import type { MigrationQmp, PlanStore } from '../migrate/ports.js';
import { DEFAULT_TIMEOUTS } from '../migrate/qmp-steps.js';
import { connectQmp } from '../migrate/qmp-port.js';
import { fileRecordStore } from '../state/migration-record.js';
import type { StageDeps, StageResult } from '../migrate/stages.js';
import { domainQmpSocketPath, readDomainPlan, writeDomainPlan } from '../state/domain-plan.js';
import { removeDomainPlan } from '../state/plan-removal.js';
import { migrationPool } from '../migrate/pool-port.js';
import { writeStdout } from '../util/stdio.js';

/**
 * What `vfpool migrate`'s stages (migrate-command.ts) and `vfpool migrate DOMAIN URI`
 * (migrate-libvirt.ts) share: the stages' dependencies built from the settings, and how a
 * stage's outcome, or a dry run's plan, is printed.
 */

/** A simulated host's stand-in NIC model for a VF (VFPOOL_SIM_VF_DEVICE), else null (vfio-pci). */
function emulatedVfModel(ctx: Context): string | null {
  return ctx.host.kind === 'sim' && ctx.settings.simVfDevice !== '' ? ctx.settings.simVfDevice : null;
}

function planStore(ctx: Context): PlanStore {
  const s = ctx.settings.stateDir;
  return {
    read: (d) => readDomainPlan(s, d),
    write: async (p) => { await writeDomainPlan(s, p, { uid: 0, gid: 0 }); },
    remove: (d) => removeDomainPlan(s, d),
  };
}

export type ClosableQmp = MigrationQmp & { close(): void };

/** The stages' dependencies; `connected`: a QMP connection already open to the domain's QEMU (closed here). */
export async function withDeps<T>(ctx: Context, domain: string | null, fn: (deps: StageDeps) => Promise<T>, connected?: ClosableQmp): Promise<T> {
  const stateDir = ctx.settings.stateDir;
  let qmp: ClosableQmp | undefined = connected;
  if (domain !== null && qmp === undefined) qmp = await connectQmp(domainQmpSocketPath(stateDir, domain));
  try {
    return await fn({
      plans: planStore(ctx),
      records: fileRecordStore(stateDir),
      pool: migrationPool(ctx, emulatedVfModel(ctx)),
      qmp,
      readArgv: (d) => qemuArgvBySocket(domainQmpSocketPath(stateDir, d), ctx.settings.procRoot),
      timeouts: DEFAULT_TIMEOUTS,
    });
  } finally {
    qmp?.close();
  }
}

/**
 * The stage's steps on stdout, and in vfpool.log: the destination's confirm runs detached, stdout
 * nowhere. With --json, one document (`extra`: what else the command has to say goes in it).
 */
export function print(ctx: Context, r: StageResult, json: boolean, extra: Record<string, unknown> = {}): void {
  for (const s of r.steps) ctx.log.info(`migrate ${r.domain}: ${s}`);
  ctx.log.info(`migrate ${r.domain}: ${r.stage}`);
  if (json) writeStdout(JSON.stringify({ ...r, ...extra }) + '\n');
  else {
    for (const s of r.steps) writeStdout(`${r.domain}: ${s}\n`);
    writeStdout(`${r.domain}: ${r.stage}\n`);
  }
}

/** A line of `vfpool migrate DOMAIN DEST_URI`'s progress, on stdout and in vfpool.log. */
export function say(ctx: Context, line: string): void {
  ctx.log.info(`migrate ${line}`);
  writeStdout(`${line}\n`);
}

/**
 * A dry run's plan, as the other commands' dry runs print theirs (`plan for net-start POOL
 * (--dry-run, nothing changed):`, numbered steps), or with --json the one document. On stdout
 * only: a dry run writes nothing, vfpool.log included.
 */
export function printPlan(what: string, doc: { steps: string[] }, json: boolean, nothing: string, extra: Record<string, unknown> = {}): void {
  if (json) {
    writeStdout(JSON.stringify({ ...doc, ...extra, dryRun: true }) + '\n');
    return;
  }
  const lines = doc.steps.length ? doc.steps : [`nothing to do: ${nothing}`];
  writeStdout([`plan for ${what} (--dry-run, nothing changed):`, ...lines.map((l, i) => `  ${i + 1}. ${l}`)].join('\n') + '\n');
}
