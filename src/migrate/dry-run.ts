import type { MigrationDescriptionV1 } from './begin.js';
import type { PlannedMigrationVf } from './ports.js';
import { checkPrepare, describePlanWrite, planConfirm, planPerform, planWithReserved, type StageDeps, type StageResult } from './stages.js';
import type { MigrationStep } from './steps.js';

/**
 * The stages' dry runs (`--dry-run`). Each goes through its stage's own checks (checkPrepare,
 * planPerform, planConfirm: the code the real run starts with), so it refuses what the stage
 * refuses, and stops before the first write: no migration record, no reservation, no VF set,
 * no plan file, and QEMU only asked what reads. It answers the steps the stage would take.
 */
export interface DryRunResult {
  domain: string;
  /** The stage the migration record would reach. */
  stage: StageResult['stage'];
  steps: string[];
  dryRun: true;
}

/** Each step's line, then (with `detail`) the lines that say what it would change. */
async function stepLines(steps: MigrationStep[], detail = true): Promise<string[]> {
  const lines: string[] = [];
  for (const s of steps) {
    lines.push(s.describe);
    if (detail && s.explain) lines.push(...(await s.explain()));
  }
  return lines;
}

/** `, vlan 12, spoofchk false`: the settings a VF would get beyond its MAC, as a description carries them. */
function settingsText(settings: PlannedMigrationVf['settings']): string {
  return Object.entries(settings).map(([k, v]) => `, ${k} ${String(v)}`).join('');
}

/** Prepare (destination): which VF each of the domain's VFs would get, with MAC and settings, and how it would be configured. */
export async function dryRunPrepare(deps: StageDeps, desc: MigrationDescriptionV1): Promise<DryRunResult & { vfs: Array<Omit<PlannedMigrationVf, 'steps' | 'vf'>> }> {
  const domain = desc.domain;
  const { skeleton, requests } = checkPrepare(deps, desc);
  const planned = await deps.pool.plan(domain, requests, desc.uuid);
  // The real run's check of what the pool answered (each id served, the source's MAC kept).
  planWithReserved(skeleton, planned.map((p) => p.vf));
  const steps = planned.flatMap((p) => [
    p.reserved === 'kept'
      ? `${p.id}: keep VF ${p.vfAddr} (${p.pf} VF ${p.vfIndex}), reserved for '${domain}' by an earlier prepare of this migration`
      : `${p.id}: reserve VF ${p.vfAddr} (${p.pf} VF ${p.vfIndex}) of pool ${p.pool}, mac ${p.mac ?? '-'}${settingsText(p.settings)}`,
    ...p.steps,
  ]);
  steps.push(describePlanWrite(domain));
  return { domain, stage: 'prepared', steps, vfs: planned.map(({ steps: _steps, vf: _vf, ...vf }) => vf), dryRun: true };
}

/** Perform (source): what vfpool would unplug, and which failover primaries QEMU unplugs itself. */
export async function dryRunPerform(deps: StageDeps, domain: string): Promise<DryRunResult & { unplug: string[]; qemuUnplugs: string[] }> {
  const p = await planPerform(deps, domain);
  const steps = await stepLines(p.steps);
  // QEMU's own unplug of a primary the guest negotiated is no step of vfpool's: said before the last line.
  const byQemu = p.failoverPrimaries.map((id) => `${id}: a failover primary the guest negotiated: QEMU unplugs it itself when the migration starts (UNPLUG_PRIMARY)`);
  steps.splice(steps.length - 1, 0, ...byQemu);
  return { domain, stage: 'performed', steps, unplug: p.unplug, qemuUnplugs: p.failoverPrimaries, dryRun: true };
}

/**
 * Confirm (either side): what it would free, restore or plug back, from the migration record
 * and the state; `detail` false: each step's line only.
 */
export async function dryRunConfirm(deps: StageDeps, domain: string, role: 'source' | 'destination', outcome: 'success' | 'failure', detail = true): Promise<DryRunResult> {
  const p = planConfirm(deps, domain, role, outcome);
  if (!p) return { domain, stage: 'nothing-to-do', steps: [], dryRun: true };
  return { domain, stage: outcome === 'success' ? 'confirmed-success' : 'confirmed-failure', steps: await stepLines(p.steps, detail), dryRun: true };
}
