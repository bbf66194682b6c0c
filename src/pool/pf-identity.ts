import type { Host } from '../host/host.js';
import type { PoolSpec } from '../config/pool-xml.js';
import type { NetdevName, PciAddress } from '../types.js';
import type { ActivePool, VfpoolState } from '../state/schema.js';
import type { Context } from './context.js';

// A running pool owns its PFs by PCI address, not by netdev name: `ip link set eth1 name lan0`
// (or udev) renames the netdev under a running pool and keeps the device and its VFs, and a
// NIC plugged in later may take the freed name. libvirt does the same for a running hostdev
// network: it lists the VFs' PCI addresses at the network's start and uses those.

/**
 * The name the PF recorded as `pf` (with PCI address `address`) has now, or null when no netdev
 * is that device any more (unplugged; its name perhaps taken by another NIC, which is not it).
 * Without an address (recorded before addresses were kept), the name is all there is.
 */
export async function pfNameNow(host: Host, pf: NetdevName, address: PciAddress | undefined): Promise<NetdevName | null> {
  if (address === undefined) return pf;
  if ((await host.netdevDevice(pf)) === address) return pf;
  for (const other of await host.listPfs()) if (other !== pf && (await host.netdevDevice(other)) === address) return other;
  return null;
}

/** For one pass over a running pool's record: its recorded PF names as they are called now (memoised). */
export function pfLocator(host: Host, record: Pick<ActivePool, 'pfAddresses'>): (pf: NetdevName) => Promise<NetdevName | null> {
  const memo = new Map<NetdevName, Promise<NetdevName | null>>();
  return (pf) => {
    let now = memo.get(pf);
    if (!now) memo.set(pf, (now = pfNameNow(host, pf, record.pfAddresses?.find((p) => p.pf === pf)?.address)));
    return now;
  };
}

/**
 * A running pool's spec with each `<pf dev>` and `<interface dev>` naming a PF it started on
 * renamed to that PF's name now, so its guests, its stop and the other pools' checks find the
 * PF it started with. A PF that is gone keeps its old name (which names nothing, or the device
 * that took the name: the start's error, as before addresses were kept).
 */
export async function activeSpec(host: Host, state: VfpoolState, spec: PoolSpec): Promise<PoolSpec> {
  const record = state.pools[spec.name];
  if (!record?.pfAddresses?.length) return spec;
  const locate = pfLocator(host, record);
  const now = async (dev: NetdevName) => (record.pfAddresses!.some((p) => p.pf === dev) ? ((await locate(dev)) ?? dev) : dev);
  const pfs = await Promise.all(spec.pfs.map(async (p) => ({ ...p, dev: await now(p.dev) })));
  const interfaces = await Promise.all(spec.interfaces.map(now));
  return pfs.every((p, i) => p.dev === spec.pfs[i]!.dev) && interfaces.every((d, i) => d === spec.interfaces[i]) ? spec : { ...spec, pfs, interfaces };
}

/**
 * A running pool's record, its PF names translated to what those PFs are called now (by the
 * PCI addresses recorded at its start): `now` maps a list of entries,
 * dropping those whose PF is gone, which `gone` lists under their recorded names.
 */
export async function recordedPfsNow(ctx: Context, name: string, record: ActivePool): Promise<{ now: <T extends { pf: NetdevName }>(xs: T[]) => T[]; gone: NetdevName[] }> {
  const locate = pfLocator(ctx.host, record);
  const names = new Map<NetdevName, NetdevName | null>();
  for (const pf of [...record.activated, ...record.bound, ...(record.change?.from ?? [])].map((x) => x.pf)) {
    if (names.has(pf)) continue;
    const found = await locate(pf);
    names.set(pf, found);
    if (found !== null && found !== pf) ctx.log.info(`pool '${name}': PF ${pf} is called ${found} now (the same PCI device): its VFs are there`);
  }
  return {
    now: (xs) => xs.flatMap((x) => {
      const pf = names.get(x.pf);
      return pf ? [{ ...x, pf }] : [];
    }),
    gone: [...names].filter(([, found]) => found === null).map(([pf]) => pf),
  };
}
