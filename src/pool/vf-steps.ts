import { HostError, type VfpoolError } from '../errors.js';
import type { Host } from '../host/host.js';
import type { NetdevName, PciAddress, VfIndex, VfLinkChange, VfLinkConfig } from '../types.js';
import type { Logger } from '../util/log.js';
import { executeSteps, type StepKind } from './executor.js';
import { describeLinkChange } from '../vf-settings.js';

/**
 * A VF's configuration for a guest, as plan-then-apply: a pure planner (vf-plan.ts) turns what
 * the VF looks like now (`VfFacts`) and what the guest wants into `VfStep`s that carry their
 * own inverse; `applyVfSteps` carries them out through the one executor (executor.ts) and, on
 * a failure, undoes the completed ones in reverse. Every check happens in the planner.
 *
 * Each `set-link` step changes one kernel attribute (IFLA_VF_MAC, _VLAN, _SPOOFCHK, _TRUST,
 * _LINK_STATE, _RATE): one `ip link set … vf N …` with several settings is several netlink
 * attributes, and the kernel stops at the first that fails with the earlier ones applied, so
 * one attribute per step is what makes "undo exactly what was done" possible.
 */
export type VfStep =
  | { kind: 'set-link'; pf: NetdevName; vfIndex: VfIndex; vfAddr: PciAddress; change: VfLinkChange; undo: VfLinkChange }
  | { kind: 'verify-link'; pf: NetdevName; vfIndex: VfIndex; vfAddr: PciAddress; expect: VfLinkChange }
  | { kind: 'set-mtu'; pf: NetdevName; vfAddr: PciAddress; mtu: number; undo: number | null }
  | { kind: 'bind-driver'; vfAddr: PciAddress; driver: string | null; undo: string | null; reason: string }
  | { kind: 'verify-driver'; pf: NetdevName; vfAddr: PciAddress; driver: string | null }
  | { kind: 'set-vfio-owner'; vfAddr: PciAddress; group: string; owner: Owner; undo: Owner | null };

export interface Owner {
  uid: number;
  gid: number;
}

export function describeVfStep(s: VfStep): string {
  const vf = 'vfIndex' in s ? `${s.pf} VF ${s.vfIndex} (${s.vfAddr})` : s.vfAddr;
  switch (s.kind) {
    case 'set-link':
      return `${vf}: set ${describeChange(s.change)}`;
    case 'verify-link':
      return `${vf}: read back ${describeChange(s.expect)}`;
    case 'set-mtu':
      return `${s.vfAddr}: set the VF netdev's MTU to ${s.mtu}`;
    case 'bind-driver':
      return `${s.vfAddr}: bind ${s.driver ?? 'no driver'} (${s.reason})`;
    case 'verify-driver':
      return `${s.vfAddr}: check it is bound to ${s.driver ?? 'no driver'}`;
    case 'set-vfio-owner':
      return `${s.vfAddr}: hand /dev/vfio/${s.group} to uid ${s.owner.uid} gid ${s.owner.gid}`;
  }
}

/** A link change in plan words (the wording of each setting is in src/vf-settings.ts). */
const describeChange = describeLinkChange;

/** Which requested settings the PF reports differently now (empty: all read back). */
export function compareLink(expect: VfLinkChange, got: VfLinkConfig): string[] {
  const bad: string[] = [];
  for (const [k, v] of Object.entries(expect) as Array<[keyof VfLinkConfig, unknown]>) {
    const now = got[k];
    if (now === null && v !== null) bad.push(`${k}: the PF driver does not report it, so it cannot be checked`);
    else if (now !== v) bad.push(`${k} is ${String(now)}, expected ${String(v)}`);
  }
  return bad;
}

async function runStep(host: Host, s: VfStep): Promise<void> {
  switch (s.kind) {
    case 'set-link':
      await host.setVfLink(s.pf, s.vfIndex, s.change);
      return;
    case 'verify-link': {
      const got = (await host.getVfLinks(s.pf)).get(s.vfIndex);
      if (!got) throw new HostError(`${s.pf} no longer reports VF ${s.vfIndex}`, { code: 'ENODEV' });
      const bad = compareLink(s.expect, got);
      if (bad.length) throw new HostError(`${s.pf} VF ${s.vfIndex}: read back after setting: ${bad.join('; ')}`, { code: 'EIO', hint: 'the PF driver did not apply the setting' });
      return;
    }
    case 'set-mtu': {
      const netdev = await vfNetdev(host, s.pf, s.vfAddr);
      if (!netdev) throw new HostError(`${s.vfAddr} has no netdev to set the MTU on`, { code: 'ENODEV' });
      await host.setMtu(netdev, s.mtu);
      return;
    }
    case 'bind-driver':
      await host.bindDriver(s.vfAddr, s.driver);
      return;
    case 'verify-driver': {
      const vf = (await host.listVfs(s.pf)).find((v) => v.address === s.vfAddr);
      if (!vf || vf.driver !== s.driver) {
        throw new HostError(`${s.vfAddr}: expected driver ${s.driver ?? 'none'}, the kernel shows ${vf?.driver ?? 'none'}`, { code: 'ENODEV' });
      }
      return;
    }
    case 'set-vfio-owner':
      await host.setVfioGroupOwner(s.group, s.owner.uid, s.owner.gid);
      return;
  }
}

async function vfNetdev(host: Host, pf: NetdevName, vfAddr: PciAddress): Promise<NetdevName | null> {
  return (await host.listVfs(pf)).find((v) => v.address === vfAddr)?.netdev ?? null;
}

/** The inverse of a completed step, or null for checks. */
function undoOf(s: VfStep): VfStep | null {
  switch (s.kind) {
    case 'set-link':
      return { ...s, change: s.undo, undo: s.change };
    case 'set-mtu':
      return s.undo === null ? null : { ...s, mtu: s.undo, undo: s.mtu };
    case 'bind-driver':
      return { ...s, driver: s.undo, undo: s.driver, reason: 'undo' };
    case 'set-vfio-owner':
      return s.undo === null ? null : { ...s, owner: s.undo, undo: s.owner };
    default:
      return null;
  }
}

/** How VF steps are carried out; a completed change reports its inverse step. */
export function vfStepKind(host: Host): StepKind<VfStep> {
  return {
    describe: describeVfStep,
    async run(s, did) {
      await runStep(host, s);
      const u = undoOf(s);
      if (u) did({ what: describeVfStep(u), run: () => runStep(host, u) });
    },
  };
}

/**
 * Applies steps in order, logging `LABEL N/M:` lines. With `undo` (prepare), a failure undoes the
 * completed steps in reverse, admin MAC last-set-first-restored, and rethrows the cause (or a
 * RollbackError naming both). Without it (restore), the first failure stops and is thrown:
 * the caller keeps the record so a later release or `vfpool reconcile` finishes the job.
 * `wrap` turns a failure into the one line the user sees (naming domain, pool and VF).
 */
export async function applyVfSteps(
  host: Host,
  steps: VfStep[],
  log: Logger,
  opts: { undo: boolean; label?: string; wrap?: (cause: VfpoolError, step: VfStep) => VfpoolError },
): Promise<void> {
  await executeSteps(steps, vfStepKind(host), log, { label: opts.label ?? 'Step', showTotal: true, undo: opts.undo, wrap: opts.wrap });
}
