import { BadInputError } from '../errors.js';
import { parseNetdevName, type NetdevName } from '../types.js';
import { attr, child, children, type XmlElement } from '../util/xml.js';
import type { Context } from './context.js';
import { isSriovPf } from './allocation.js';

/**
 * Refuses the start of a libvirt network that is a vfpool pool when libvirt would hand a PF
 * itself to guests. libvirt's passthrough network uses each `<interface dev>` of its `<forward>`
 * as it is (bridge_driver.c builds an interface pool from a PF's VFs only with a `<pf>` and no
 * `<interface>`), so seed 004's `<interface dev='eth2'/>`, which means "eth2's VFs" to vfpool,
 * means "eth2" to libvirt: the guest would get macvtap passthrough on the PF, whose MAC libvirt
 * replaces with the guest's, under the host and under every guest on eth2's VFs. Nothing is
 * changed before this check; the other forward modes (bridge, vepa, private: macvtap on a PF,
 * the standby of seed 002) share the PF and are fine.
 */
export async function refuseLibvirtPassthroughOfPf(ctx: Context, net: XmlElement, pool: string, where: string): Promise<void> {
  const forward = child(net, 'forward');
  if (attr(forward, 'mode') !== 'passthrough' || children(forward!, 'pf').length > 0) return;
  const listed = children(forward!, 'interface').map((i) => attr(i, 'dev'));
  // `<forward dev='eth2'/>` without `<interface>` children is libvirt's one-interface shorthand.
  if (listed.length === 0) listed.push(attr(forward, 'dev'));
  for (const raw of listed) {
    if (raw === undefined) continue;
    const dev: NetdevName = parseNetdevName(raw, `${where}: forward interface dev`);
    if (!(await isSriovPf(ctx.host, dev))) continue;
    throw new BadInputError(
      `pool '${pool}': libvirt network '${pool}' lists PF ${dev} as <interface dev='${dev}'/> in passthrough mode, and libvirt hands a listed interface to a guest as it is (macvtap on the PF itself, its MAC replaced by the guest's), not one of its VFs`,
      `in the libvirt network write <forward mode='passthrough'><pf dev='${dev}'/></forward> (libvirt then picks a free VF) and keep the VF count in <metadata> or the vfpool definition`,
    );
  }
}

/**
 * libvirt follows a refused `start begin` with `stopped end` (networkStartNetwork's cleanup runs
 * networkShutdownNetwork). When the pool was already running before that start (`vfpool
 * net-start`; `startedAt` as read before it), the refusal is marked so that this `stopped end`
 * leaves the pool running: it was not libvirt's start to undo.
 */
export async function markLibvirtStartRefused(ctx: Context, name: string, runningSince: string | undefined): Promise<void> {
  if (runningSince === undefined) return;
  await ctx.store.update((state) => {
    const p = state.pools[name];
    if (p && p.startedAt === runningSince && p.change === null) p.libvirtStartRefused = new Date().toISOString();
  });
}

/** Whether this `stopped end` follows a refused libvirt start of a running pool; clears the mark. */
export async function takeLibvirtStartRefused(ctx: Context, name: string): Promise<boolean> {
  if (!ctx.store.read().pools[name]?.libvirtStartRefused) return false;
  return ctx.store.update((state) => {
    const p = state.pools[name];
    if (!p?.libvirtStartRefused) return false;
    p.libvirtStartRefused = null;
    return true;
  });
}
