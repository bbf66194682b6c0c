import { join } from 'node:path';
import type { Context } from '../pool/context.js';
import { reconcile } from '../pool/reconcile.js';
import { asVfpoolError, type VfpoolError } from '../errors.js';
import { emptyState, type VfpoolState } from '../state/schema.js';
import { interruptedChange } from '../pool/pool-changes.js';
import { pfLocator } from '../pool/pf-identity.js';
import type { NetdevName } from '../types.js';
import type { PoolSpec } from '../config/pool-xml.js';
import { readDomainPlan } from '../state/domain-plan.js';
import { fail, listDir, pass, type Check } from './doctor-check.js';
import { checkIommu, checkPfs, checkPools, checkVfio } from './doctor-kernel.js';
import { checkConf, checkDaemon, checkHooks, checkHotplug, checkQemu, checkStateDirs } from './doctor-install.js';
import { checkSecurityDriver } from './doctor-security.js';
import { defaultDeliveryHostFacts, emulatedVfModel, type DeliveryHostFacts } from '../pool/guest-qemu-plan.js';

export type { Check } from './doctor-check.js';

export interface DoctorOptions {
  /** The vfpool install the running CLI belongs to (its hooks are what libvirt should run); null: unknown. */
  installDir: string | null;
  /** The environment the CLI was started with (vfpool.conf is looked for where it says). */
  env: NodeJS.ProcessEnv;
  /** Seconds a guest may take from prepare to its QEMU pid (as `vfpool reconcile --grace`). */
  graceMs: number;
  /** What hot-plugging VFs at `started` reads of this host (tests inject it). */
  deliveryFacts?: DeliveryHostFacts;
}

/**
 * `vfpool doctor`: every prerequisite, read-only. The first row says whether this host has
 * SR-IOV at all, because every other failure matters less than that one.
 */
export async function runDoctor(ctx: Context, opts: DoctorOptions): Promise<Check[]> {
  const s = ctx.settings;
  const { checks: pfChecks, pfs } = await checkPfs(ctx.host);
  const checks: Check[] = [
    pfs.size
      ? pass('sr-iov', `${pfs.size} SR-IOV PF(s): ${[...pfs.keys()].join(', ')}`)
      : fail('sr-iov', `no SR-IOV physical function on this host (${ctx.host.kind === 'sim' ? `simulated host ${s.host.slice(4)}` : `no sriov_totalvfs under ${s.sysfsRoot}/class/net`})`, 'use a NIC with SR-IOV (e.g. Intel 82576/X710, Mellanox ConnectX) and enable SR-IOV in the firmware'),
  ];
  checks.push(...checkIommu(s), ...checkVfio(s), ...pfChecks);

  // A state file vfpool cannot read is one of the things doctor reports (as it reports a broken
  // vfpool.conf), not a reason to stop before the other checks: then the definitions alone.
  let state: VfpoolState;
  let stateError: VfpoolError | null = null;
  try {
    state = ctx.store.read();
  } catch (err) {
    stateError = asVfpoolError(err);
    state = emptyState();
  }
  const pools = ctx.registry.names(state).map((name) => {
    const running = state.pools[name];
    const activated = running && running.change === null ? running.activated : null;
    // A start or stop whose vfpool is gone: guests of the pool are refused until reconcile mends it.
    const interrupted = running ? interruptedChange(running) : null;
    try {
      return { name, spec: ctx.registry.get(name, state) as PoolSpec | null, error: null, running: running !== undefined && interrupted === null, activated, interrupted };
    } catch (err) {
      return { name, spec: null, error: asVfpoolError(err).message, running: running !== undefined && interrupted === null, activated, interrupted };
    }
  });
  // A running pool's PF renamed since its start is still its PF (found by PCI address): said as
  // such, not as a PF missing from the host, with what its next start needs.
  const withRenames = await Promise.all(pools.map(async (p) => {
    const running = state.pools[p.name];
    if (!p.spec || !running?.pfAddresses?.length) return p;
    const locate = pfLocator(ctx.host, running);
    const renamed = new Map<NetdevName, NetdevName>();
    for (const dev of [...p.spec.pfs.map((x) => x.dev), ...(p.activated ?? []).map((a) => a.pf)]) {
      const now = await locate(dev);
      if (now !== null && now !== dev) renamed.set(dev, now);
    }
    return { ...p, renamed };
  }));
  checks.push(...checkPools(withRenames, pfs));

  const hooks = checkHooks(s, opts.installDir);
  checks.push(...hooks.checks, checkDaemon(s, hooks.newest), checkConf(s, opts.env), ...checkStateDirs(s, stateError));
  checks.push(...(await checkQemu(s, sriovNicDomains(s.stateDir))), checkHotplug(opts.deliveryFacts ?? defaultDeliveryHostFacts(s.procRoot, s.libvirtConfDir), emulatedVfModel(ctx)), checkSecurityDriver(s));

  try {
    const r = await reconcile(ctx, { libvirtRunDir: s.libvirtRunDir, graceMs: opts.graceMs, dryRun: true });
    checks.push(r.freed.length
      ? fail('stale-allocations', `${r.freed.length} VF(s) held for guests that are gone: ${r.freed.map((e) => `${e.vfAddr} (domain ${e.domain}: ${e.reason})`).join('; ')}`, 'vfpool reconcile')
      : pass('stale-allocations', `${r.kept.length} allocation(s), all of running guests`));
  } catch (err) {
    checks.push(fail('stale-allocations', `cannot judge the allocations: ${asVfpoolError(err).message}`, 'vfpool reconcile --dry-run'));
  }
  return checks;
}

/** Domains whose QEMU plan on this host has an emulated SR-IOV NIC (a plan doctor cannot read counts as none). */
function sriovNicDomains(stateDir: string): string[] {
  return listDir(join(stateDir, 'qemu')).filter((d) => {
    try {
      return (readDomainPlan(stateDir, d)?.sriovNics.length ?? 0) > 0;
    } catch {
      return false;
    }
  });
}

/** The text form: one row per check, the fix under each failed one. */
export function formatDoctor(checks: Check[]): string[] {
  const width = Math.max(...checks.map((c) => c.id.length));
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`${c.ok ? 'ok  ' : 'FAIL'} ${c.id.padEnd(width)}  ${c.found}`);
    if (c.fix) lines.push(`     ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  const failed = checks.filter((c) => !c.ok).length;
  lines.push(failed ? `${failed} of ${checks.length} checks failed` : `all ${checks.length} checks passed`);
  return lines;
}
