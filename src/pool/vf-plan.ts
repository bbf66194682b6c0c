import { BadInputError, ConflictError, HostError } from '../errors.js';
import type { PfInfo, VfInfo } from '../host/host.js';
import type { PciAddress, VfLinkChange, VfLinkConfig } from '../types.js';
import type { Allocation, AppliedVfConfig, SavedVfConfig } from '../state/schema.js';
import type { VfStep } from './vf-steps.js';
import { linkChangeOf, type VfSettings } from '../vf-settings.js';

/**
 * The VF planners: pure functions from what a VF looks like now (`VfFacts`, read by
 * vf-facts.ts) and what the guest wants to the `VfStep`s that get it there, every check first.
 */

const VFIO = 'vfio-pci';

/** What the planners know about one VF, read from the host just before planning. */
export interface VfFacts {
  pf: PfInfo;
  pfMtu: number;
  vf: VfInfo;
  link: VfLinkConfig;
  /** The VF netdev's MTU, if it has a netdev. */
  mtu: number | null;
  /** The devices of the VF's IOMMU group (itself included), with their drivers. */
  group: Array<{ address: PciAddress; driver: string | null }>;
}

/** What a guest wants of its VF. `null` settings stay as they are. */
export interface VfWant extends VfSettings {
  mac: VfLinkConfig['mac'];
  /** Hand the VF to the guest through vfio-pci (hostdev, hybrid), or keep its host netdev (passthrough). */
  vfio: boolean;
}

/** The one-attribute changes that turn `from` into `to` for the keys `to` names (no-ops dropped). */
export function linkSteps(facts: VfFacts, from: VfLinkConfig, to: VfLinkChange): VfStep[] {
  const { pf, vf } = facts;
  const base = { pf: pf.name, vfIndex: vf.index, vfAddr: vf.address };
  const steps: VfStep[] = [];
  const add = (change: VfLinkChange, undo: VfLinkChange) => steps.push({ kind: 'set-link', ...base, change, undo });
  if (to.mac !== undefined && to.mac !== from.mac) add({ mac: to.mac }, { mac: from.mac });
  if (to.vlan !== undefined) {
    const qos = to.qos ?? 0;
    if (to.vlan !== from.vlan || qos !== from.qos) add({ vlan: to.vlan, qos }, { vlan: from.vlan, qos: from.qos });
  }
  if (to.spoofchk != null && to.spoofchk !== from.spoofchk) add({ spoofchk: to.spoofchk }, { spoofchk: from.spoofchk ?? !to.spoofchk });
  if (to.trust != null && to.trust !== from.trust) add({ trust: to.trust }, { trust: from.trust ?? !to.trust });
  if (to.linkState != null && to.linkState !== from.linkState) add({ linkState: to.linkState }, { linkState: from.linkState ?? 'auto' });
  if (to.minTxRate !== undefined || to.maxTxRate !== undefined) {
    const min = to.minTxRate ?? from.minTxRate;
    const max = to.maxTxRate ?? from.maxTxRate;
    if (min !== from.minTxRate || max !== from.maxTxRate) {
      add({ minTxRate: min, maxTxRate: max }, { minTxRate: from.minTxRate, maxTxRate: from.maxTxRate });
    }
  }
  return steps;
}

/** The link change a want asks for: only the settings the guest named. */
export function wantedLink(want: VfWant): VfLinkChange {
  return { mac: want.mac, ...linkChangeOf(want) };
}

/**
 * Plans a VF's configuration for a guest. Checks first (all of them, before any step runs):
 * the PF is up (some drivers lose VF settings made through a down PF); a passthrough VF has a
 * host netdev to hand out; for vfio, no other device of the IOMMU group is bound to a host
 * driver; an MTU fits under the PF's. Then, in order: the admin MAC (through the PF, before any
 * driver (re)bind: a bound VF driver only reads it at probe), the other link settings one
 * attribute at a time, a read-back of all of them, the VF netdev's MTU (passthrough), and the
 * driver: vfio-pci for vfio modes, a reload of the host driver for passthrough so its netdev
 * takes the new MAC. `where` prefixes error messages ("domain 'vm1', pool 'p', VF …").
 */
export function planVfConfigure(facts: VfFacts, want: VfWant, where: string): { steps: VfStep[]; applied: AppliedVfConfig } {
  const { pf, vf } = facts;
  // Checks.
  if (!pf.up) {
    throw new HostError(`${where}: PF ${pf.name} is down, and VF settings made through a down PF are lost by some drivers`, {
      code: 'ENETDOWN',
      hint: `bring it up first: ip link set ${pf.name} up`,
    });
  }
  if (want.vfio) {
    const blockers = facts.group.filter((d) => d.address !== vf.address && d.driver !== null && d.driver !== VFIO);
    if (blockers.length) {
      const b = blockers.map((d) => `${d.address} (driver ${d.driver})`).join(', ');
      // A conflict with another user of the group (exit 3), not a failure of the machine.
      throw new ConflictError(
        `${where}: IOMMU group ${vf.iommuGroup} also holds ${b}, bound to a host driver: vfio can only hand a whole group to a guest`,
        'bind every device of the group to vfio-pci (or unbind it), or use a VF in a group of its own',
      );
    }
    if (vf.iommuGroup === null) {
      throw new HostError(`${where}: the VF has no IOMMU group, so vfio cannot pass it to a guest`, {
        code: 'ENODEV',
        hint: 'enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)',
      });
    }
    if (want.mtu !== null && want.mtu > facts.pfMtu) {
      // The request asks for what this PF cannot carry: bad input (exit 2), nothing was changed.
      throw new BadInputError(
        `${where}: mtu ${want.mtu} is above PF ${pf.name}'s MTU ${facts.pfMtu}; the guest could not use it`,
        `raise the PF's MTU (ip link set ${pf.name} mtu ${want.mtu}) or ask for less`,
      );
    }
  } else if (vf.netdev === null) {
    throw new HostError(`${where}: the VF has no host netdev (driver ${vf.driver ?? 'none'}), and a passthrough pool hands out the VF's netdev`, {
      code: 'ENODEV',
      hint: 'bind it back to its host VF driver, or use a hostdev pool',
    });
  }

  const link = wantedLink(want);
  const steps: VfStep[] = linkSteps(facts, facts.link, link);
  steps.push({ kind: 'verify-link', pf: pf.name, vfIndex: vf.index, vfAddr: vf.address, expect: link });
  let mtu: number | null = null;
  if (!want.vfio && want.mtu !== null && want.mtu !== facts.mtu) {
    mtu = want.mtu;
    steps.push({ kind: 'set-mtu', pf: pf.name, vfAddr: vf.address, mtu, undo: facts.mtu });
  }
  let driver: string | null = null;
  if (want.vfio && vf.driver !== VFIO) {
    driver = VFIO;
    steps.push({ kind: 'bind-driver', vfAddr: vf.address, driver: VFIO, undo: vf.driver, reason: 'the guest gets the VF through vfio' });
    steps.push({ kind: 'verify-driver', pf: pf.name, vfAddr: vf.address, driver: VFIO });
  } else if (!want.vfio && link.mac !== facts.link.mac && vf.driver !== null) {
    driver = vf.driver;
    steps.push({ kind: 'bind-driver', vfAddr: vf.address, driver: vf.driver, undo: vf.driver, reason: 'a bound VF driver reads the admin MAC only at probe' });
    steps.push({ kind: 'verify-driver', pf: pf.name, vfAddr: vf.address, driver: vf.driver });
  }
  return { steps, applied: { link, mtu, driver } };
}

/**
 * Plans putting a VF back as it was before vfpool took it. Order (libvirt's, virhostdev.c):
 * `/dev/vfio/GROUP` back to its owner; the admin MAC BEFORE the host driver is bound again (the
 * driver reads it at probe); the original driver; then the other link settings and the netdev's
 * MTU; a read-back last. Only what vfpool changed (`applied`) and still differs now (`facts`) is
 * touched, so a restore after a half-done prepare, or a second restore, does only what is left.
 */
export function planVfRestore(alloc: Allocation, facts: VfFacts): VfStep[] {
  const { saved, applied } = alloc;
  if (!saved || !applied) return [];
  const { pf, vf } = facts;
  const steps: VfStep[] = [];
  const g = alloc.vfioOwner;
  if (g && g.saved && vf.driver === VFIO && vf.iommuGroup !== null) {
    steps.push({ kind: 'set-vfio-owner', vfAddr: vf.address, group: vf.iommuGroup, owner: g.saved, undo: g.granted });
  }
  const back: VfLinkChange = {};
  for (const k of Object.keys(applied.link) as Array<keyof VfLinkChange>) {
    if (k === 'qos') continue;
    if (k === 'vlan') {
      back.vlan = saved.link.vlan;
      back.qos = saved.link.qos;
    } else (back as Record<string, unknown>)[k] = saved.link[k];
  }
  for (const k of Object.keys(back) as Array<keyof VfLinkChange>) if (back[k] === null) delete back[k];
  const { mac, ...rest } = back;
  const macSteps = mac !== undefined ? linkSteps(facts, facts.link, { mac }) : [];
  steps.push(...macSteps);
  if (macSteps.length) steps.push({ kind: 'verify-link', pf: pf.name, vfIndex: vf.index, vfAddr: vf.address, expect: { mac } });
  const driverChanged = vf.driver !== saved.driver;
  const reload = alloc.mode === 'passthrough' && macSteps.length > 0 && saved.driver !== null;
  if (driverChanged || reload) {
    steps.push({ kind: 'bind-driver', vfAddr: vf.address, driver: saved.driver, undo: vf.driver, reason: driverChanged ? 'its driver before vfpool' : 'reload so the netdev takes the MAC back' });
    steps.push({ kind: 'verify-driver', pf: pf.name, vfAddr: vf.address, driver: saved.driver });
  }
  const restSteps = linkSteps(facts, facts.link, rest);
  steps.push(...restSteps);
  if (applied.mtu !== null && saved.mtu !== null) {
    steps.push({ kind: 'set-mtu', pf: pf.name, vfAddr: vf.address, mtu: saved.mtu, undo: null });
  }
  if (restSteps.length) steps.push({ kind: 'verify-link', pf: pf.name, vfIndex: vf.index, vfAddr: vf.address, expect: rest });
  return steps;
}

/** A VF's saved configuration, from its facts. */
export function savedFromFacts(f: VfFacts): SavedVfConfig {
  return { link: f.link, driver: f.vf.driver, mtu: f.mtu, netdev: f.vf.netdev };
}
