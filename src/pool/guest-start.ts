import { join } from 'node:path';
import { HostError, asVfpoolError, prefixError } from '../errors.js';
import type { DomainSpec } from '../config/domain-xml.js';
import { modeUsesVfio } from '../config/pool-xml.js';
import type { Allocation } from '../state/schema.js';
import type { Context } from './context.js';
import { allocationsOf, whereOf, type GuestOptions, type StartResult } from './guest-model.js';
import { requestsOf } from './guest-plan.js';
import { readLibvirtPid, resolveDacLabel } from './libvirt-runtime.js';
import { applyVfSteps, type VfStep } from './vf-steps.js';
import { handPlanTo } from './guest-qemu-plan.js';
import { recordPid, type RecordedPid } from './owners.js';
import { processStartTicks } from '../util/process.js';

/**
 * `start begin`: libvirt has labelled what it knows and is about to let QEMU run. For each of the
 * domain's vfio VFs: check it is still on vfio-pci, and hand `/dev/vfio/GROUP` to the user QEMU
 * runs as (the domain's DAC label), recording the previous owner first so release gives it back.
 * Records QEMU's pid if libvirt's pid file already names it. Idempotent; nothing recorded, nothing done.
 */
export async function startGuest(ctx: Context, spec: DomainSpec, opts: GuestOptions): Promise<StartResult> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const result: StartResult = { domain: spec.name, handedOver: [], pid: null };
  const mine = allocationsOf(ctx.store.read(), spec.name);
  const planOwner = spec.dacLabel ? resolveDacLabel(spec.dacLabel, opts.etcDir, spec.name) : null;
  // The wrapper runs as QEMU's user and must read its plan (an emulated SR-IOV NIC has one too).
  if (planOwner && handPlanTo(ctx, spec.name, planOwner)) log.info(`handed the QEMU plan to uid ${planOwner.uid}`);
  if (!mine.length) return result;
  const pid = readLibvirtPid(opts, spec.name);
  result.pid = pid;
  const vfio = mine.filter((a) => modeUsesVfio(a.mode));
  const owner = planOwner;
  if (!owner && vfio.length) log.info('the domain XML has no DAC label: /dev/vfio groups keep their owner (QEMU runs as root?)');

  // Checks, before any change: each vfio VF still bound to vfio-pci.
  const steps: VfStep[] = [];
  for (const a of vfio) {
    const where = whereOf(spec.name, a.pool, a);
    const vf = (await ctx.host.listVfs(a.pf)).find((v) => v.address === a.vfAddr);
    if (!vf || vf.driver !== 'vfio-pci' || vf.iommuGroup === null) {
      throw new HostError(`${where}: expected it bound to vfio-pci, found ${vf ? `driver ${vf.driver ?? 'none'}` : 'no such VF'}`, {
        code: 'ENODEV',
        hint: `someone rebound it since prepare; \`vfpool release ${spec.name}\` and start again`,
      });
    }
    if (!owner) continue;
    const current = await ctx.host.getVfioGroupOwner(vf.iommuGroup);
    if (current && current.uid === owner.uid && current.gid === owner.gid) continue;
    steps.push({ kind: 'set-vfio-owner', vfAddr: a.vfAddr, group: vf.iommuGroup, owner, undo: current });
  }

  // Step 1: record the previous owners (and the pid), then hand the groups over. What each
  // record said before is kept, so a failed hand-over puts the state back as it was (the undo
  // puts the host back).
  const previous = new Map<string, Allocation['vfioOwner']>();
  await ctx.store.update((state) => {
    for (const a of allocationsOf(state, spec.name)) {
      if (pid !== null) recordPid(a.owner, pid);
      const s = steps.find((x) => x.vfAddr === a.vfAddr);
      if (s && s.kind === 'set-vfio-owner') {
        previous.set(a.vfAddr, a.vfioOwner ? structuredClone(a.vfioOwner) : a.vfioOwner);
        a.vfioOwner = { saved: a.vfioOwner?.saved ?? s.undo, granted: s.owner };
      }
    }
  });
  if (!steps.length) return result;
  try {
    const byAddr = new Map(vfio.map((a) => [a.vfAddr as string, whereOf(spec.name, a.pool, a)]));
    await applyVfSteps(ctx.host, steps, log, { undo: true, label: 'hand over', wrap: (cause, step) => prefixError(byAddr.get(step.vfAddr) ?? `domain '${spec.name}'`, cause) });
  } catch (err) {
    await ctx.store.update((state) => {
      for (const a of allocationsOf(state, spec.name)) if (previous.has(a.vfAddr)) a.vfioOwner = previous.get(a.vfAddr) ?? null;
    });
    throw err;
  }
  for (const s of steps) if (s.kind === 'set-vfio-owner') result.handedOver.push({ vfAddr: s.vfAddr, group: s.group, uid: s.owner.uid, gid: s.owner.gid });
  log.info(`handed ${steps.length} vfio group(s) to uid ${owner!.uid}`);
  return result;
}

/**
 * `started begin`, `reconnect begin`, `attach begin`: the domain runs; keep its VFs and record
 * QEMU's pid from libvirt's pid file (so `vfpool reconcile` can tell a live guest from a dead
 * one). Never fails for a missing pid: a failing reconnect hook makes libvirt kill the guest.
 */
export async function adoptGuest(ctx: Context, spec: DomainSpec, opts: GuestOptions, op: string): Promise<{ domain: string; vfs: number; pid: number | null }> {
  const log = ctx.log.child(`domain '${spec.name}'`);
  const snapshot = ctx.store.read();
  const before = allocationsOf(snapshot, spec.name);
  const ports = snapshot.ports.filter((p) => p.domain === spec.name);
  if (!before.length && !ports.length) {
    if (op !== 'started' && requestsOf(ctx, spec).length) {
      log.warn(`${op}: the domain asks for VFs but vfpool has no record of it (state lost?); it keeps running without vfpool's bookkeeping`);
    }
    return { domain: spec.name, vfs: 0, pid: null };
  }
  let pid: number | null;
  try {
    pid = readLibvirtPid(opts, spec.name);
  } catch (err) {
    // A failing reconnect hook makes libvirt kill the guest: report, keep the VFs, go on.
    log.warn(`${op}: ${asVfpoolError(err).toLine()}; keeping ${before.length} VF(s) without a pid`);
    return { domain: spec.name, vfs: before.length, pid: null };
  }
  if (pid === null) {
    log.info(`${op}: no live pid in ${join(opts.libvirtRunDir, `${spec.name}.pid`)}; keeping ${before.length} VF(s) without one`);
    return { domain: spec.name, vfs: before.length, pid: null };
  }
  // The hot path: `start begin` usually recorded this pid already, and then there is nothing to
  // write (no lock taken, state untouched).
  // The same pid with another start time is a record of an earlier process that had it.
  const start = processStartTicks(pid);
  const samePid = (r: RecordedPid) => r.pid === pid && (r.pidStart ?? start) === start;
  const recorded = (a: Allocation) => samePid(a.owner) && (!spec.uuid || a.owner.uuid === spec.uuid);
  if (before.every(recorded) && ports.every(samePid)) {
    log.info(`${op}: keeps ${before.length} VF(s), QEMU pid ${pid}`);
    return { domain: spec.name, vfs: before.length, pid };
  }
  await ctx.store.update((state) => {
    for (const a of allocationsOf(state, spec.name)) {
      recordPid(a.owner, pid);
      if (spec.uuid) a.owner.uuid = spec.uuid;
    }
    // Its libvirt network ports too: then they pin their VFs exactly while this QEMU lives.
    for (const p of state.ports) if (p.domain === spec.name) recordPid(p, pid);
  });
  log.info(`${op}: keeps ${before.length} VF(s), QEMU pid ${pid}`);
  return { domain: spec.name, vfs: before.length, pid };
}

