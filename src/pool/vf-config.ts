import { HostError, asVfpoolError, type VfpoolError } from '../errors.js';
import type { Host, PfInfo, VfInfo, VfLinkChange, VfLinkConfig } from '../host/host.js';
import type { NetdevName, PciAddress, VfIndex } from '../types.js';
import type { Logger } from '../util/log.js';
import type { Allocation, AppliedVfConfig, SavedVfConfig } from './state-store.js';
import { undoInReverse } from './plan.js';

/**
 * A VF's configuration for a guest, as plan-then-apply (the pattern of plan.ts): a pure planner
 * turns what the VF looks like now (`VfFacts`) and what the guest wants into `VfStep`s that carry
 * their own inverse; `applyVfSteps` carries them out and, on a failure, undoes the completed
 * ones in reverse. Every check happens in the planner, before the first change.
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

/** What a guest wants of its VF. `null` fields stay as they are. */
export interface VfWant {
  mac: VfLinkConfig['mac'];
  vlan: number | null;
  qos: number | null;
  spoofchk: boolean | null;
  trust: boolean | null;
  linkState: VfLinkConfig['linkState'];
  minTxRate: number | null;
  maxTxRate: number | null;
  mtu: number | null;
  /** Hand the VF to the guest through vfio-pci (hostdev, hybrid), or keep its host netdev (passthrough). */
  vfio: boolean;
}

const VFIO = 'vfio-pci';

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

export function describeChange(c: VfLinkChange): string {
  const parts: string[] = [];
  if (c.mac !== undefined) parts.push(`admin MAC ${c.mac}`);
  if (c.vlan !== undefined) parts.push(`VLAN ${c.vlan}${c.qos !== undefined ? ` qos ${c.qos}` : ''}`);
  if (c.spoofchk != null) parts.push(`spoofchk ${c.spoofchk ? 'on' : 'off'}`);
  if (c.trust != null) parts.push(`trust ${c.trust ? 'on' : 'off'}`);
  if (c.linkState != null) parts.push(`link-state ${c.linkState}`);
  if (c.minTxRate !== undefined) parts.push(`min_tx_rate ${c.minTxRate}`);
  if (c.maxTxRate !== undefined) parts.push(`max_tx_rate ${c.maxTxRate}`);
  return parts.join(', ') || 'nothing';
}

/** The one-attribute changes that turn `from` into `to` for the keys `to` names (no-ops dropped). */
function linkSteps(facts: VfFacts, from: VfLinkConfig, to: VfLinkChange): VfStep[] {
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
  const c: VfLinkChange = { mac: want.mac };
  if (want.vlan !== null) {
    c.vlan = want.vlan;
    c.qos = want.qos ?? 0;
  }
  if (want.spoofchk !== null) c.spoofchk = want.spoofchk;
  if (want.trust !== null) c.trust = want.trust;
  if (want.linkState !== null) c.linkState = want.linkState;
  if (want.minTxRate !== null) c.minTxRate = want.minTxRate;
  if (want.maxTxRate !== null) c.maxTxRate = want.maxTxRate;
  return c;
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
      throw new HostError(`${where}: IOMMU group ${vf.iommuGroup} also holds ${b}, bound to a host driver: vfio can only hand a whole group to a guest`, {
        code: 'EBUSY',
        hint: 'bind every device of the group to vfio-pci (or unbind it), or use a VF in a group of its own',
      });
    }
    if (vf.iommuGroup === null) {
      throw new HostError(`${where}: the VF has no IOMMU group, so vfio cannot pass it to a guest`, {
        code: 'ENODEV',
        hint: 'enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)',
      });
    }
    if (want.mtu !== null && want.mtu > facts.pfMtu) {
      throw new HostError(`${where}: mtu ${want.mtu} is above PF ${pf.name}'s MTU ${facts.pfMtu}; the guest could not use it`, {
        code: 'EINVAL',
        hint: `raise the PF's MTU (ip link set ${pf.name} mtu ${want.mtu}) or ask for less`,
      });
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
  const saved: SavedVfConfig | null = alloc.saved;
  if (!saved) return [];
  const applied: AppliedVfConfig = alloc.applied ?? { link: { mac: saved.link.mac }, mtu: null, driver: null };
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

/** The per-PF host reads a planning pass repeats: a Host, or a `HostReads` memo over one. */
export type PfReader = Pick<Host, 'getPf' | 'listVfs' | 'getVfLinks' | 'getMtu'>;

/**
 * Host reads memoised for ONE planning pass (planPrepare, under the state lock, where nothing
 * changes the host): `getPf`, `listVfs` and `getVfLinks` of a PF and the MTU of a netdev are read
 * once however many of its VFs are planned (on Linux each `getVfLinks` is an `ip` process).
 * A failed read fails the same way for every caller. Never keep one past the pass.
 */
export class HostReads implements PfReader {
  private readonly memo = new Map<string, Promise<unknown>>();
  constructor(private readonly host: Host) {}

  private once<T>(key: string, read: () => Promise<T>): Promise<T> {
    let p = this.memo.get(key) as Promise<T> | undefined;
    if (!p) this.memo.set(key, (p = read()));
    return p;
  }

  getPf(pf: NetdevName): Promise<PfInfo> {
    return this.once(`pf\0${pf}`, () => this.host.getPf(pf));
  }

  listVfs(pf: NetdevName): Promise<VfInfo[]> {
    return this.once(`vfs\0${pf}`, () => this.host.listVfs(pf));
  }

  getVfLinks(pf: NetdevName): Promise<Map<number, VfLinkConfig>> {
    return this.once(`links\0${pf}`, () => this.host.getVfLinks(pf));
  }

  getMtu(netdev: NetdevName): Promise<number> {
    return this.once(`mtu\0${netdev}`, () => this.host.getMtu(netdev));
  }
}

/** Reads what the planners need about one VF (the per-PF reads through `reads`, if given). */
export async function readVfFacts(host: Host, pf: NetdevName, vfAddr: PciAddress, reads: PfReader = host): Promise<VfFacts> {
  const info = await reads.getPf(pf);
  const vf = (await reads.listVfs(pf)).find((v) => v.address === vfAddr);
  if (!vf) throw new HostError(`${vfAddr} is no longer a VF of ${pf}`, { code: 'ENODEV', hint: 'was the PF\'s VF count changed? see `vfpool status`' });
  const link = (await reads.getVfLinks(pf)).get(vf.index);
  if (!link) throw new HostError(`${pf} does not report VF ${vf.index} (${vfAddr}) in its vfinfo_list`, { code: 'ENODEV' });
  return {
    pf: info,
    pfMtu: await reads.getMtu(pf),
    vf,
    link,
    mtu: vf.netdev ? await host.getMtu(vf.netdev) : null,
    group: vf.iommuGroup ? await host.iommuGroupDevices(vf.iommuGroup) : [],
  };
}

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
  const done: VfStep[] = [];
  const label = opts.label ?? 'Step';
  let n = 0;
  for (const s of steps) {
    n++;
    log.info(`${label} ${n}/${steps.length}: ${describeVfStep(s)}`);
    try {
      await runStep(host, s);
    } catch (err) {
      const cause = opts.wrap ? opts.wrap(asVfpoolError(err), s) : asVfpoolError(err);
      log.warn(`${label} ${n} failed: ${cause.toLine()}${opts.undo ? `; undoing ${done.length} step(s)` : ''}`);
      if (!opts.undo) throw cause;
      const undos = done.flatMap((d) => {
        const u = undoOf(d);
        if (!u) return [];
        const what = describeVfStep(u);
        return [{ what, run: () => (log.info(`undo: ${what}`), runStep(host, u)) }];
      });
      return undoInReverse(cause, undos);
    }
    done.push(s);
  }
}

/** A VF's saved configuration, from its facts. */
export function savedFromFacts(f: VfFacts): SavedVfConfig {
  return { link: f.link, driver: f.vf.driver, mtu: f.mtu, netdev: f.vf.netdev };
}
