import { accessSync, constants, lchownSync, lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostError, asVfpoolError, errnoOf } from '../errors.js';
import { domainNicMacs, type DomainSpec } from '../config/domain-xml.js';
import { modeUsesVfio } from '../config/pool-xml.js';
import { checkSriovNicMachine, checkStandbyModel } from '../qemu/args.js';
import { requireMachineKind } from '../qemu/cmdline.js';
import { checkCmdlineReadiness } from '../qemu/cmdline-readiness.js';
import type { Allocation } from '../state/schema.js';
import { domainPlanPath, domainRunDir, sriovNicPlans, writeDomainPlan, type DomainPlanV1, type DomainPlanVf } from '../state/domain-plan.js';
import { PURGE, purgePlanTrash, removeDomainPlan, retireDomainPlan } from '../state/plan-removal.js';
import type { Context } from './context.js';
import type { GuestOptions } from './guest-model.js';
import type { VfRequest } from './requests.js';

/**
 * The per-domain plan `prepare` writes for the QEMU wrapper ($VFPOOL_STATE_DIR/qemu/NAME/plan.json):
 * which VFs go to QEMU, as what device, and how they get there.
 *
 * Delivery (docs/libvirt-delivery.md): under libvirt's default qemu.conf a real vfio VF cannot be
 * on QEMU's command line (its private /dev has no /dev/vfio, its device cgroup refuses the node,
 * its memlock is 8 MiB), so libvirt guests get `hotplug` (the `started` hook delivers and
 * device_adds); a QEMU a person runs (`vfpool prepare`, no libvirt) and emulated stand-ins on a
 * simulated host need nothing of the kind and get `cmdline`.
 */

/** CAP_SYS_RESOURCE (capability.h): needed to raise another process's hard RLIMIT_MEMLOCK. */
const CAP_SYS_RESOURCE = 24n;
const BPFTOOL_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** What the delivery checks read of the host; injected by tests. */
export interface DeliveryHostFacts {
  /** `/proc/self/status` of this (root) process. */
  selfStatus(): string;
  /** `/proc/self/mounts`. */
  mounts(): string;
  /** Whether `bpftool` is installed (libvirt's device ACL on cgroup2 is a BPF map vfpool edits with it). */
  hasBpftool(): boolean;
  /** libvirt's qemu.conf text, or null when there is none. */
  qemuConf(): string | null;
}

export function defaultDeliveryHostFacts(procRoot: string, libvirtConfDir = '/etc/libvirt'): DeliveryHostFacts {
  const read = (file: string) => readFileSync(join(procRoot, file), 'utf8');
  return {
    selfStatus: () => read('self/status'),
    mounts: () => read('self/mounts'),
    hasBpftool: () =>
      BPFTOOL_DIRS.some((d) => {
        try {
          accessSync(join(d, 'bpftool'), constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }),
    qemuConf: () => {
      try {
        return readFileSync(join(libvirtConfDir, 'qemu.conf'), 'utf8');
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') return null;
        throw err;
      }
    },
  };
}

/** The plan entry of each prepared VF that QEMU gets through vfio (hostdev, hybrid); macvtap VFs stay on the host. */
export function planVfsOf(allocations: Allocation[], requests: VfRequest[], emulatedModel: string | null): DomainPlanVf[] {
  return allocations
    .filter((a) => modeUsesVfio(a.mode))
    .sort((x, y) => (x.guestSlot ?? 0) - (y.guestSlot ?? 0))
    .map((a) => {
      const request = requests.find((r) => `vfpool-vf${r.index}` === a.alias);
      return {
        id: a.alias,
        host: emulatedModel === null ? a.vfAddr : null,
        emulatedModel,
        mac: a.mac as DomainPlanVf['mac'],
        failoverStandbyMac: a.pairedMac as DomainPlanVf['failoverStandbyMac'],
        guestAddress: request?.guestSlot != null ? { slot: request.guestSlot } : null,
      };
    });
}

/**
 * `hotplug` for real vfio VFs of a libvirt guest, `cmdline` for a person's QEMU and for emulated
 * stand-ins, unless the person asked (`vfpool prepare --delivery`) or the simulated host is told
 * to hot-plug a libvirt guest's stand-ins like real VFs (VFPOOL_SIM_DELIVERY). `hotplug` is what
 * makes VFs unpluggable without the guest's help: a device on QEMU's command line sits in a slot
 * powered at reset, and QEMU completes its `device_del` (a migration's perform) only once the
 * guest OS acks the eject; a device hot-added into the empty, powered-off root port (native PCIe
 * hotplug) stays unpowered until a guest turns the slot on, and leaves at once.
 */
export function chooseDelivery(
  via: GuestOptions['via'],
  vfs: DomainPlanVf[],
  opts: { requested?: DomainPlanV1['delivery']; hotplugStandIns?: boolean } = {},
): DomainPlanV1['delivery'] {
  if (opts.requested !== undefined) return opts.requested;
  if (via !== 'libvirt') return 'cmdline';
  return vfs.some((v) => v.host !== null || (opts.hotplugStandIns === true && v.emulatedModel !== null)) ? 'hotplug' : 'cmdline';
}

/** A simulated host's stand-in NIC model for a VF (VFPOOL_SIM_VF_DEVICE), else null: QEMU gets the VF itself, by vfio. */
export function emulatedVfModel(ctx: Pick<Context, 'host' | 'settings'>): string | null {
  return ctx.host.kind === 'sim' && ctx.settings.simVfDevice !== '' ? ctx.settings.simVfDevice : null;
}

export function buildDomainPlan(
  ctx: Context, spec: DomainSpec, allocations: Allocation[], requests: VfRequest[], via: GuestOptions['via'], requested?: DomainPlanV1['delivery'],
): DomainPlanV1 | null {
  const emulated = emulatedVfModel(ctx);
  const vfs = planVfsOf(allocations, requests, emulated);
  if (vfs.length === 0 && spec.sriovNics.length === 0) return null;
  const sriovNics = sriovNicPlans(spec.name, spec.uuid, spec.sriovNics, domainNicMacs(spec));
  const hotplugStandIns = emulated !== null && ctx.settings.simDelivery === 'hotplug';
  return { version: 1, domain: spec.name, uuid: spec.uuid, delivery: chooseDelivery(via, vfs, { requested, hotplugStandIns }), vfs, sriovNics };
}

/**
 * Refuses at prepare, before anything changes, what the wrapper would refuse when QEMU starts
 * and the domain XML already tells (the same checks): a machine that is neither q35 nor
 * i440fx, an emulated SR-IOV NIC on i440fx, a hybrid interface whose model is not virtio-net.
 * Whether the QEMU has `sriov-pf` is left to the wrapper: asking means starting QEMU.
 */
export function checkDomainForQemu(spec: DomainSpec, requests: VfRequest[]): void {
  if (requests.length === 0 && spec.sriovNics.length === 0) return;
  const kind = spec.machine == null ? null : requireMachineKind(spec.machine);
  if (kind !== null) for (const nic of spec.sriovNics) checkSriovNicMachine(kind, nic.field);
  for (const r of requests) {
    if (r.source === 'interface') checkStandbyModel(spec.networkInterfaces.find((n) => n.field === r.field)?.model ?? null, r.field);
  }
}

/** What keeps the `started` hook from hot-plugging a libvirt guest's VFs into QEMU here, each with its fix. */
export interface HotplugBlocker {
  what: 'root' | 'cap-sys-resource' | 'bpftool';
  problem: string;
  code: string;
  hint: string;
}

/**
 * Hotplug (the `started` hook, as root): `prlimit` must raise the hard memlock limit of a
 * process that is not ours (CAP_SYS_RESOURCE), and on a host with cgroup2 libvirt's device ACL
 * is a BPF map only `bpftool` edits. Read from this process: the hooks' when a hook asks.
 */
export function hotplugBlockers(facts: DeliveryHostFacts): HotplugBlocker[] {
  const out: HotplugBlocker[] = [];
  const status = facts.selfStatus();
  const euid = /^Uid:\s*[0-9]+\s+([0-9]+)/m.exec(status)?.[1];
  if (euid !== '0') {
    out.push({ what: 'root', problem: `its VFs are hotplugged into QEMU by the 'started' hook, which must run as root (uid ${euid ?? 'unknown'})`, code: 'EPERM', hint: 'run libvirtd (and so its hooks) as root' });
  } else {
    const capEff = /^CapEff:\s*([0-9a-f]+)\s*$/im.exec(status)?.[1];
    if (capEff === undefined || ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) === 0n) {
      out.push({
        what: 'cap-sys-resource',
        problem: `root here lacks CAP_SYS_RESOURCE (CapEff ${capEff ?? 'unknown'}), so the 'started' hook cannot raise QEMU's locked-memory limit that vfio needs`,
        code: 'EPERM',
        hint: 'run libvirtd with CAP_SYS_RESOURCE (e.g. not in a container that drops it: docker --cap-add SYS_RESOURCE)',
      });
    }
  }
  const cgroup2 = facts.mounts().split('\n').some((l) => l.split(' ')[2] === 'cgroup2');
  if (cgroup2 && !facts.hasBpftool()) {
    out.push({ what: 'bpftool', problem: `this host has cgroup2, where libvirt's device ACL is a BPF map, and bpftool is not installed to allow /dev/vfio in it`, code: 'ENOENT', hint: 'install it: apt-get install bpftool' });
  }
  return out;
}

/**
 * Refuses, before anything changes, a plan that cannot reach QEMU on this host, with the fix.
 * Hotplug: hotplugBlockers. A cmdline plan of real VFs under libvirt would need
 * qemu.conf changes (checkCmdlineReadiness); vfpool picks hotplug there, so this only guards a
 * plan that says otherwise.
 */
export function checkDeliveryPossible(plan: DomainPlanV1, spec: DomainSpec, groups: string[], via: GuestOptions['via'], facts: DeliveryHostFacts): void {
  const dom = `domain '${plan.domain}'`;
  const realVfs = plan.vfs.filter((v) => v.host !== null);
  if (via !== 'libvirt' || realVfs.length === 0) return;
  if (plan.delivery === 'hotplug') {
    const first = hotplugBlockers(facts)[0];
    if (first) throw new HostError(`${dom}: ${first.problem}`, { code: first.code, hint: first.hint });
    return;
  }
  const conf = facts.qemuConf() ?? '';
  const r = checkCmdlineReadiness(conf, { groups, hardLimitKiB: spec.hardLimitKiB, guestMemoryKiB: spec.memoryKiB ?? 0n });
  if (!r.ok) {
    const fix = [...(r.qemuConfLines.length ? [`add to qemu.conf: ${r.qemuConfLines.join('; ')} (then restart libvirtd)`] : []), ...(r.domainXml ? [`add to the domain XML: ${r.domainXml}`] : [])];
    throw new HostError(`${dom}: its VFs cannot be on QEMU's command line under this libvirt: ${r.problems.join('; ')}`, { code: 'EPERM', hint: fix.join('; ') });
  }
}

/** Writes the plan (root-owned until `start begin` hands it to QEMU's user). */
export async function writeGuestPlan(ctx: Context, plan: DomainPlanV1): Promise<string> {
  return writeDomainPlan(ctx.settings.stateDir, plan, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
}

/**
 * Removes the domain's plan directory; a failure is logged, never fatal (nothing reads a stale
 * plan of a domain with no allocation but its own next prepare, which rewrites it). `retireOnly`:
 * under the state lock, only the rename out of the way (retireDomainPlan); the caller empties
 * the trash after the lock (purgeGuestPlanTrash).
 */
export function dropGuestPlan(ctx: Context, domain: string, retireOnly = false): void {
  try {
    if (retireOnly) retireDomainPlan(ctx.settings.stateDir, domain);
    else if (removeDomainPlan(ctx.settings.stateDir, domain).left) warnTrashLeft(ctx);
  } catch (err) {
    ctx.log.warn(`could not remove the QEMU plan of domain '${domain}': ${asVfpoolError(err).message}`);
  }
}

/** Empties the plan directories retired under the lock, within the budget; a failure is logged. */
export function purgeGuestPlanTrash(ctx: Context): void {
  try {
    if (purgePlanTrash(ctx.settings.stateDir).left) warnTrashLeft(ctx);
  } catch (err) {
    ctx.log.warn(`could not empty the removed QEMU plan directories in ${join(ctx.settings.stateDir, 'qemu')}: ${asVfpoolError(err).message}`);
  }
}

function warnTrashLeft(ctx: Context): void {
  ctx.log.warn(`a removed QEMU plan directory in ${join(ctx.settings.stateDir, 'qemu')} holds more than ${PURGE.budget} files (its QEMU user put them there): ${PURGE.budget} removed now, the rest by the next release or reconcile`);
}

/**
 * `start begin`: the plan's directory and file become the QEMU user's (the DAC label's
 * uid:gid, as its /dev/vfio groups do): under libvirt the wrapper runs as that user, reads the
 * plan, and QEMU creates vfpool's QMP socket in that directory. lchown: never follow a link.
 * Returns false when the domain has no plan. Release removes the directory, so there is no
 * previous owner to give back.
 */
export function handPlanTo(ctx: Context, domain: string, owner: { uid: number; gid: number }): boolean {
  const dir = domainRunDir(ctx.settings.stateDir, domain);
  const file = domainPlanPath(ctx.settings.stateDir, domain);
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new HostError(`${dir} is not a directory`, { hint: `run \`vfpool release ${domain}\` and start the domain again` });
    if (!lstatSync(file).isFile()) throw new HostError(`${file} is not a regular file`, { hint: `run \`vfpool release ${domain}\` and start the domain again` });
    lchownSync(file, owner.uid, owner.gid);
    lchownSync(dir, owner.uid, owner.gid);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    if (err instanceof HostError) throw err;
    throw new HostError(`domain '${domain}': cannot hand its QEMU plan ${file} to uid ${owner.uid}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
  }
}
