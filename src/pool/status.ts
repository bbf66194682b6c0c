import { BadInputError, HostError, errnoOf } from '../errors.js';
import type { VfLinkConfig } from '../types.js';
import type { Context } from './context.js';
import type { PoolSpec } from '../config/pool-xml.js';
import { knownVfNetdevs, resolvePoolMembers } from './allocation.js';
import { findVfUses, portHoldsVf, stackedDevicesOnce, vfioHoldersOnce } from './in-use.js';
import { interruptedChange } from './pool-changes.js';
import { activeSpec } from './pf-identity.js';
import type { ActivePool } from '../state/schema.js';

export interface VfStatus {
  index: number;
  address: string;
  netdev: string | null;
  driver: string | null;
  iommuGroup: string | null;
  mac: string | null;
  vlan: number | null;
  qos: number | null;
  spoofchk: boolean | null;
  trust: boolean | null;
  /**
   * Who holds the VF, null when it is free. `via: 'vfio'` is a process holding its
   * `/dev/vfio/GROUP` open that neither vfpool nor libvirt's network handed it to (a QEMU started
   * by hand): no domain is known, its pid is. `via: 'stacked'`: devices stacked on its netdev
   * (`stacked`: a macvtap of a guest's `<interface type='direct'>`, a bridge, a bond).
   */
  owner: { domain: string | null; uuid: string | null; pool: string | null; pid?: number | null; stacked?: string[]; via: 'vfpool' | 'libvirt' | 'vfio' | 'stacked' } | null;
}

export interface PfStatus {
  name: string;
  address: string;
  driver: string | null;
  up: boolean;
  totalVfs: number;
  numVfs: number;
  vfs: VfStatus[];
}

export interface Status {
  host: string;
  pfs: PfStatus[];
  pools: PoolListEntry[];
}

export interface PoolListEntry {
  name: string;
  mode: string;
  active: boolean;
  /**
   * What `net-list` shows: `active`/`inactive`, or a start or stop under way (`starting`,
   * `stopping`: a live vfpool changes its VF counts) or killed half-way (`start-interrupted`,
   * `stop-interrupted`: guests are refused until `vfpool reconcile` mends it).
   */
  state: PoolState;
  persistent: boolean;
  vfs: number;
  inUse: number;
}

/** `vfpool status --json`: every SR-IOV PF on the host, each VF with its owner. */
export async function readStatus(ctx: Context): Promise<Status> {
  const state = ctx.store.read();
  const pfs: PfStatus[] = [];
  const vfioHolders = vfioHoldersOnce(ctx.host);
  const uppersOf = stackedDevicesOnce(ctx.host);
  for (const name of await ctx.host.listPfs()) {
    const info = await ctx.host.getPf(name);
    const vfs = await ctx.host.listVfs(name);
    // A PF that went away between listing and reading has no links to show; any other failure
    // to read them (ip missing, a driver error) is reported, not shown as VFs without settings.
    const none = new Map<number, VfLinkConfig>();
    const links = vfs.length ? await ctx.host.getVfLinks(name).catch((err) => (vanished(err) ? none : Promise.reject(err))) : none;
    pfs.push({
      name,
      address: info.address,
      driver: info.driver,
      up: info.up,
      totalVfs: info.totalVfs,
      numVfs: info.numVfs,
      vfs: await Promise.all(vfs.map(async (vf) => {
        const link = links.get(vf.index);
        const alloc = state.allocations.find((a) => a.vfAddr === vf.address);
        const port = state.ports.find((p) => portHoldsVf(p, vf));
        // The in-use guard counts an open /dev/vfio group too (net-list, net-destroy): so does status.
        const holder = !alloc && !port && vf.driver === 'vfio-pci' && vf.iommuGroup !== null ? (await vfioHolders(vf.iommuGroup))[0] : undefined;
        const uppers = !alloc && !port && vf.netdev !== null ? await uppersOf(vf.netdev) : [];
        return {
          index: vf.index,
          address: vf.address,
          netdev: vf.netdev,
          driver: vf.driver,
          iommuGroup: vf.iommuGroup,
          mac: link?.mac ?? null,
          vlan: link?.vlan ?? null,
          qos: link?.qos ?? null,
          spoofchk: link?.spoofchk ?? null,
          trust: link?.trust ?? null,
          owner: alloc
            ? { domain: alloc.owner.domain, uuid: alloc.owner.uuid, pool: alloc.pool, pid: alloc.owner.pid, via: 'vfpool' }
            : port
              ? { domain: port.domain, uuid: port.domainUuid, pool: port.network, via: 'libvirt' }
              : holder !== undefined
                ? { domain: null, uuid: null, pool: null, pid: holder, via: 'vfio' }
                : uppers.length > 0
                  ? { domain: null, uuid: null, pool: null, stacked: uppers, via: 'stacked' }
                  : null,
        };
      })),
    });
  }
  return { host: ctx.settings.host, pfs, pools: await listPools(ctx) };
}

export type PoolState = 'active' | 'inactive' | 'starting' | 'stopping' | 'start-interrupted' | 'stop-interrupted';

function poolState(p: ActivePool | undefined): PoolState {
  if (!p) return 'inactive';
  if (!p.change) return 'active';
  const kind = p.change.kind === 'starting' ? 'start' : 'stop';
  return interruptedChange(p) ? `${kind}-interrupted` : p.change.kind;
}

/** `vfpool net-list --json`. */
export async function listPools(ctx: Context): Promise<PoolListEntry[]> {
  const state = ctx.store.read();
  const out: PoolListEntry[] = [];
  const known = knownVfNetdevs(state);
  for (const name of ctx.registry.names(state)) {
    let pool: PoolSpec;
    try {
      pool = ctx.registry.get(name, state);
    } catch (err) {
      // A broken definition file must not hide the others (net-dumpxml names its error); a
      // failure to read one at all is no broken definition, and is reported.
      if (err instanceof BadInputError && !(err.cause && errnoOf(err.cause))) continue;
      throw err;
    }
    // The members the allocator sees; a pool whose PF is missing has none to offer (start says why).
    const vfs = await resolvePoolMembers(ctx.host, await activeSpec(ctx.host, state, pool), known).then(
      (members) => members.map((m) => m.vf),
      (err) => (err instanceof HostError ? [] : Promise.reject(err)),
    );
    const uses = await findVfUses(ctx.host, state, vfs);
    out.push({
      name,
      mode: pool.mode,
      active: Boolean(state.pools[name]),
      state: poolState(state.pools[name]),
      persistent: ctx.registry.readDefinition(name) !== undefined,
      vfs: vfs.length,
      inUse: vfs.filter((vf) => uses.has(vf.address)).length,
    });
  }
  return out;
}

function vanished(err: unknown): boolean {
  return err instanceof HostError && (err.code === 'ENOENT' || err.code === 'ENODEV');
}
