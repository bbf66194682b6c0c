import { ConflictError, asVfpoolError } from '../errors.js';
import type { NetworkPort } from '../config/network-port.js';
import { isObjectName, parseObjectName, type MacAddress, type NetdevName, type PciAddress } from '../types.js';
import type { Context } from './context.js';
import type { PortRecord } from '../state/schema.js';
import { allocationPinsVf, ownerEnv } from './owners.js';
import { monotonicMs } from '../util/process.js';
import { libvirtStatusListsPort } from './libvirt-runtime.js';

/**
 * VFs that libvirt's own networks hand out: `port-created` records them so vfpool's in-use guard
 * sees them, and vetoes one that vfpool holds for another domain; `port-deleted` drops the record.
 */
/**
 * `port-created`: records a VF libvirt handed to a domain. A VF that vfpool holds for another
 * domain is refused (ConflictError, exit 3: libvirt then does not start the guest). Plugs that
 * are no VF (bridges, networks, macvtap on a plain NIC) need nothing: returns without the lock.
 */
export async function recordPort(ctx: Context, network: string, port: NetworkPort): Promise<PortRecord | null> {
  if (port.plug.type === 'other') return null;
  let vfAddr: PciAddress | null = null;
  let netdev: NetdevName | null = null;
  if (port.plug.type === 'hostdev-pci') vfAddr = port.plug.address;
  else {
    netdev = port.plug.dev;
    const dev = await ctx.host.netdevDevice(netdev);
    if (dev && (await ctx.host.physfnOf(dev))) vfAddr = dev;
    // macvtap on an ordinary NIC (bridge, vepa, or passthrough of a PF): no VF, nothing for
    // the in-use guard, and no vfpool allocation can be on a netdev that is not a VF.
    if (vfAddr === null) return null;
  }
  const record: PortRecord = {
    network: parseObjectName(network, `libvirt network handing out VF ${vfAddr}: its name`),
    portUuid: port.uuid,
    domain: parseObjectName(port.domain, `libvirt network '${network}' hands VF ${vfAddr} to a domain whose name`),
    domainUuid: port.domainUuid,
    vfAddr,
    netdev,
    plug: port.plug.type,
    mac: port.mac,
    createdAt: new Date().toISOString(),
    createdMonoMs: monotonicMs(),
    pid: null,
  };
  return ctx.store.update((state) => {
    const env = ownerEnv(ctx.settings);
    // A record whose owner is gone does not veto (owners.ts): libvirt skipped its release. The
    // same domain is no exception: libvirt's port-created comes after the prepare hook, and its
    // hostdev network picks by its own connection counts, so it can pick the very VF vfpool gave
    // that domain for another NIC; libvirt would set its own MAC on it and assign it a second time.
    const held = state.allocations.find(
      (a) => ((vfAddr !== null && a.vfAddr === vfAddr) || (netdev !== null && a.netdev === netdev)) && allocationPinsVf(a, env),
    );
    if (held && held.owner.domain === port.domain) {
      throw new ConflictError(
        `libvirt network '${network}' hands VF ${vfAddr ?? netdev} to domain '${port.domain}' for its <interface> with mac ${port.mac ?? '(none)'}, but vfpool already gave that VF to the same domain${held.pool ? ` from pool '${held.pool}'` : ''} with mac ${held.mac}: a VF reaches a guest once`,
        'give the libvirt network and the vfpool pool different VFs (the guest\'s two requests then cannot meet on one), or ask for both VFs one way',
      );
    }
    if (held) {
      throw new ConflictError(
        `libvirt network '${network}' hands VF ${vfAddr ?? netdev} to domain '${port.domain}', but vfpool holds it for domain '${held.owner.domain}'${held.pool ? ` (pool '${held.pool}')` : ''}`,
        'do not let a libvirt network and a vfpool pool share VFs, or stop that guest first',
      );
    }
    state.ports = state.ports.filter((p) => !(p.network === record.network && p.portUuid === record.portUuid));
    state.ports.push(record);
    ctx.log.info(`libvirt network '${network}': port ${port.uuid} gives ${vfAddr ?? netdev} to domain '${port.domain}'`);
    return record;
  });
}

/**
 * `port-created` of the virtio-net NIC of an `<interface>` on a pci-passthrough-hybrid pool's
 * network: its VF partner is chosen, configured and given to QEMU from the qemu hook (`prepare`
 * .. `started`), and libvirt runs no qemu hook when an interface is hotplugged (`virsh
 * attach-device`/`attach-interface --live`), only this one. Such an interface would come up
 * virtio-only, silently; it is refused (ConflictError: libvirt fails the attach with this line).
 * A start (prepare paired a VF with this MAC) and a daemon restart (libvirt's status XML lists
 * the port: refusing would make libvirt drop a running guest's NIC) are let through, and so is
 * a port this cannot judge (a state or definition it cannot read): only a sure hotplug is refused.
 */
export function refuseHybridHotplug(ctx: Context, network: string, port: NetworkPort): void {
  if (port.plug.type !== 'other' || port.mac === null) return;
  let unpaired: boolean;
  try {
    unpaired = isUnpairedHybridPort(ctx, network, port, port.mac);
  } catch (err) {
    // Not knowing must not fail the port: at a daemon restart that would cost a running guest its NIC.
    ctx.log.warn(`libvirt network '${network}': port ${port.uuid} of domain '${port.domain}' let through unchecked: ${asVfpoolError(err).toLine()}`);
    return;
  }
  if (!unpaired) return;
  throw new ConflictError(
    `domain '${port.domain}': <interface> ${port.mac} on pci-passthrough-hybrid pool '${network}' would get no VF: vfpool pairs one when the domain starts, and libvirt runs no qemu hook for an interface attached to a running domain`,
    `attach it with --config only and restart the domain`,
  );
}

function isUnpairedHybridPort(ctx: Context, network: string, port: NetworkPort, mac: MacAddress): boolean {
  // No pool has a name vfpool cannot use: libvirt's own network, whatever its guests are called.
  if (!isObjectName(network)) return false;
  const state = ctx.store.read();
  if (!state.pools[network] && ctx.registry.readDefinition(network) === undefined) return false;
  if (ctx.registry.get(network, state).mode !== 'pci-passthrough-hybrid') return false;
  // prepare refuses a domain of such a name on a vfpool pool: it never had a VF paired here.
  if (!isObjectName(port.domain)) return true;
  if (libvirtStatusListsPort(ctx.settings.libvirtRunDir, port.domain, port.uuid)) return false;
  return !state.allocations.some((a) => a.owner.domain === port.domain && a.pool === network && a.pairedMac === mac);
}

/**
 * `release end` of a domain: its QEMU is gone, so are its ports. libvirt sends `port-deleted`
 * only while the network is active: after `net-destroy` under a running guest it never comes,
 * and the record would pin the VF. Idempotent, without the lock when there is nothing.
 */
export async function dropPortsOfDomain(ctx: Context, domain: string): Promise<number> {
  if (!ctx.store.read().ports.some((p) => p.domain === domain)) return 0;
  return ctx.store.update((state) => {
    const gone = state.ports.filter((p) => p.domain === domain);
    state.ports = state.ports.filter((p) => p.domain !== domain);
    for (const p of gone) ctx.log.info(`released: dropped libvirt network '${p.network}' port ${p.portUuid} (${p.vfAddr ?? p.netdev}) of domain '${domain}'`);
    return gone.length;
  });
}

/** `port-deleted`: forgets the port. Idempotent: an unknown port is success, without the lock. */
export async function removePort(ctx: Context, network: string, portUuid: string): Promise<boolean> {
  if (!ctx.store.read().ports.some((p) => p.network === network && p.portUuid === portUuid)) return false;
  return ctx.store.update((state) => {
    const before = state.ports.length;
    state.ports = state.ports.filter((p) => !(p.network === network && p.portUuid === portUuid));
    return state.ports.length !== before;
  });
}
