import { ConflictError } from '../errors.js';
import { modeUsesVfio, type PoolSpec } from '../config/pool-xml.js';
import type { NetdevName, PciAddress } from '../types.js';
import type { VfpoolState } from '../state/schema.js';
import { interfaceMember, knownVfNetdevs } from './allocation.js';
import type { PoolUse, Sharers } from './activation.js';
import type { Context } from './context.js';
import { activeSpec, pfLocator } from './pf-identity.js';

// Which VFs the active pools draw from, and what one pool's start or stop may do to the VFs
// another active pool draws from.

/**
 * Which VFs of which PFs a pool draws from (see PoolUse): a member that does not resolve now (an
 * unplugged NIC, a typo) draws from nothing; a `<pf>` that does not exist is the start's error.
 */
export async function poolUse(ctx: Context, pool: PoolSpec, known: Map<NetdevName, PciAddress>, unresolved: string[] = []): Promise<PoolUse> {
  const use: PoolUse = new Map();
  const some = (pf: NetdevName, vf: PciAddress) => {
    const now = use.get(pf) ?? [];
    if (now !== 'all' && !now.includes(vf)) use.set(pf, [...now, vf]);
  };
  for (const p of pool.pfs) use.set(p.dev, 'all');
  for (const dev of pool.interfaces) {
    const what = await interfaceMember(ctx.host, dev, known);
    if (what === 'pf') {
      use.set(dev, 'all');
      continue;
    }
    const pf = what ? await ctx.host.physfnOf(what.addr) : null;
    if (what && pf) some(pf, what.addr);
    else unresolved.push(`<interface dev='${dev}'> is ${what ? `${what.addr}, not a VF of an SR-IOV PF` : 'no netdev on this host (nor a VF vfpool knows by that name)'}: the pool has no VF from it`);
  }
  for (const addr of pool.addresses) {
    const pf = await ctx.host.physfnOf(addr);
    if (pf) some(pf, addr);
    else unresolved.push(`<address> ${addr} is not a VF of an SR-IOV PF on this host: the pool has no VF from it`);
  }
  return use;
}

/** The active pools drawing from each PF, but `except`: a PF's count is theirs too. */
export async function activeDrawers(ctx: Context, state: VfpoolState, except?: string, known = knownVfNetdevs(state)): Promise<Sharers> {
  const sharers: Sharers = new Map();
  for (const [other, p] of Object.entries(state.pools)) {
    if (other === except) continue;
    const spec = await activeSpec(ctx.host, state, ctx.registry.get(other, state));
    const locate = pfLocator(ctx.host, p);
    const activated = await Promise.all(p.activated.map(async (a) => (await locate(a.pf)) ?? a.pf));
    const pfs = new Set([...(await poolUse(ctx, spec, known)).keys(), ...activated]);
    for (const pf of pfs) sharers.set(pf, [...(sharers.get(pf) ?? []), other]);
  }
  return sharers;
}

/** Whether a pool's start binds its VFs to vfio-pci (and its stop gives them their driver back). */
export function bindsAtStart(pool: PoolSpec): boolean {
  return pool.managed && modeUsesVfio(pool.mode);
}

/** The other active pools that bind their VFs to vfio-pci, each with the VFs it draws from: a stop leaves those there. */
export async function vfioKeepers(ctx: Context, state: VfpoolState, except: string): Promise<Array<{ pool: string; use: PoolUse }>> {
  const out: Array<{ pool: string; use: PoolUse }> = [];
  const known = knownVfNetdevs(state);
  for (const other of Object.keys(state.pools).filter((o) => o !== except)) {
    const spec = ctx.registry.get(other, state);
    if (bindsAtStart(spec)) out.push({ pool: other, use: await poolUse(ctx, await activeSpec(ctx.host, state, spec), known) });
  }
  return out;
}

/** The union of several pools' uses. */
export function unionUse(uses: PoolUse[]): PoolUse {
  const all: PoolUse = new Map();
  for (const use of uses) {
    for (const [pf, vfs] of use) {
      const now = all.get(pf) ?? [];
      all.set(pf, now === 'all' || vfs === 'all' ? 'all' : [...now, ...vfs]);
    }
  }
  return all;
}

export function usesVf(use: PoolUse, pf: NetdevName, vf: PciAddress): boolean {
  const which = use.get(pf);
  return which === 'all' || (which !== undefined && which.includes(vf));
}

/**
 * The first VF (or a whole PF) that a binding pool (`binder`) would keep on vfio-pci from under
 * a passthrough pool (`host`), or null. A binder of listed VFs beside a passthrough pool of the
 * whole PF is no clash: the passthrough pool hands out the PF's VFs that have a netdev, and the
 * binder's stop gives its listed VFs their driver back (they are recorded as it binds them).
 */
function clashOn(binder: PoolUse, host: PoolUse): { pf: NetdevName; vf: PciAddress | null } | null {
  for (const [pf, binds] of binder) {
    const needs = host.get(pf);
    if (needs === undefined) continue;
    if (binds === 'all') return { pf, vf: needs === 'all' ? null : needs[0] ?? null };
    if (needs === 'all') continue;
    const vf = binds.find((v) => needs.includes(v));
    if (vf !== undefined) return { pf, vf };
  }
  return null;
}

/**
 * A managed pool of a vfio mode binds its VFs to vfio-pci for as long as it runs; a passthrough
 * pool's guests get macvtap on a VF's host netdev, which vfio-pci takes away. So a start is
 * refused (exit 3, before anything changes) while an active pool of the other kind clashes with
 * it (clashOn): a binder of a whole PF (`<pf>`, an `<interface>` PF; the VFs a count creates
 * are bound as they come, and recorded nowhere to give back) beside a passthrough pool on that
 * PF, or both naming one VF. (libvirt binds a hostdev network's VF per guest, at the guest's
 * start, so overlapping libvirt networks never meet this.)
 */
export async function refuseDriverClash(ctx: Context, state: VfpoolState, pool: PoolSpec, use: PoolUse, known: Map<NetdevName, PciAddress>): Promise<void> {
  const binds = bindsAtStart(pool);
  if (!binds && pool.mode !== 'passthrough') return;
  for (const other of Object.keys(state.pools).filter((o) => o !== pool.name)) {
    const spec = ctx.registry.get(other, state);
    const clash = binds ? spec.mode === 'passthrough' : bindsAtStart(spec);
    if (!clash) continue;
    const theirs = await poolUse(ctx, await activeSpec(ctx.host, state, spec), known);
    const shared = binds ? clashOn(use, theirs) : clashOn(theirs, use);
    if (!shared) continue;
    const [what, them] = shared.vf ? [`VF ${shared.vf} of ${shared.pf}`, 'it'] : [`the VFs of ${shared.pf}`, 'them'];
    throw new ConflictError(
      binds
        ? `pool '${pool.name}': cannot bind ${what} to vfio-pci (managed='yes'): active passthrough pool '${other}' draws from ${them}, and its guests need a VF's host netdev`
        : `pool '${pool.name}': cannot draw from ${what}: active pool '${other}' keeps ${them} on vfio-pci (managed='yes'), where a passthrough pool's guests need a VF's host netdev`,
      `stop pool '${other}' first, or give the two pools different VFs`,
    );
  }
}
