import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostError, asVfpoolError, errnoOf, prefixError } from '../errors.js';
import type { DomainSpec } from '../config/domain-xml.js';
import { planHotplugDevices } from '../qemu/args.js';
import { parseQemuArgv } from '../qemu/cmdline.js';
import { defaultDeliverDeps, deliverVfioToQemu, memlockForVfio, type DeliverDeps } from '../qemu/deliver.js';
import { hotplugDevices } from '../qemu/hotplug.js';
import { QmpClient } from '../qemu/qmp.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import type { Context } from './context.js';
import { allocationsOf, type GuestOptions } from './guest-model.js';
import { readLibvirtPid, resolveDacLabel } from './libvirt-runtime.js';
import { crashPoint } from '../util/crash-point.js';

export interface DeliverGuestResult {
  domain: string;
  /** Device ids device_add'ed now (empty when nothing was to be hotplugged, or all were there). */
  added: string[];
  pid: number | null;
}

export interface DeliverGuestDeps {
  deliver: DeliverDeps;
  /** How long each device may take to show in query-pci (nested TCG in the lab: ~6 s). */
  timeoutMs: number;
  /** deliverVfioToQemu; replaced in unit tests, whose QEMU is a fake QMP server. */
  deliverVfio?: typeof deliverVfioToQemu;
}

export function defaultDeliverGuestDeps(procRoot: string, devRoot: string): DeliverGuestDeps {
  return { deliver: { ...defaultDeliverDeps(), procRoot, devRoot }, timeoutMs: 30_000 };
}

/**
 * `started begin` of a domain whose plan says `hotplug` (docs/libvirt-delivery.md, option H):
 * QEMU runs (its pid in libvirt's pid file) in its own mount namespace and device cgroup with
 * an 8 MiB memlock limit. As root: give that process what vfio needs for each VF's IOMMU group
 * (memlock = guest memory + 1 GiB, /dev/vfio nodes, the cgroup rule), then `device_add` each VF
 * into the root port the wrapper reserved, over vfpool's QMP socket, and wait until query-pci
 * shows it. Any failure throws one sentence: the hook exits 1, libvirt stops QEMU and calls
 * release, which restores the VFs. A plan with `cmdline` delivery, or none, does nothing.
 * `onlyIfMissing` (reconnect): nothing at all, no vfio step either, unless a plain VF is missing
 * from a QEMU that is not an incoming one.
 */
export async function deliverGuestVfs(ctx: Context, spec: DomainSpec, opts: GuestOptions, deps: DeliverGuestDeps, how: { onlyIfMissing?: boolean } = {}): Promise<DeliverGuestResult> {
  const dom = `domain '${spec.name}'`;
  const log = ctx.log.child(dom);
  const result: DeliverGuestResult = { domain: spec.name, added: [], pid: null };
  const plan = readDomainPlan(ctx.settings.stateDir, spec.name);
  if (plan === null || plan.delivery !== 'hotplug' || plan.vfs.length === 0) return result;
  try {
    const pid = readLibvirtPid(opts, spec.name);
    if (pid === null) throw new HostError(`libvirt's pid file ${join(opts.libvirtRunDir, `${spec.name}.pid`)} names no running QEMU`, { hint: 'the guest stopped while starting; start it again' });
    result.pid = pid;

    // Step 1: what QEMU runs with, and so where each VF goes (the wrapper's reserved root ports).
    const cmdlineFile = join(deps.deliver.procRoot, String(pid), 'cmdline');
    let argv: string[];
    try {
      argv = readFileSync(cmdlineFile, 'utf8').split('\0').slice(1, -1);
    } catch (err) {
      throw new HostError(`cannot read QEMU's command line ${cmdlineFile}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
    }
    const devices = planHotplugDevices(plan, parseQemuArgv(argv));
    if (how.onlyIfMissing && (argv.includes('-incoming') || (await missingDevices(ctx, spec.name, devices, deps)).length === 0)) return result;

    // Step 2: the vfio groups of the real VFs, handed into QEMU's namespace and cgroup. Emulated
    // stand-ins (a simulated host told to hot-plug them) need none.
    const hostVfs = new Set(plan.vfs.flatMap((v) => (v.host === null ? [] : [v.host as string])));
    if (hostVfs.size > 0) {
      const groups = [...new Set(allocationsOf(ctx.store.read(), spec.name).filter((a) => hostVfs.has(a.vfAddr)).map((a) => a.iommuGroup))];
      if (groups.some((g) => g === null) || groups.length === 0) {
        throw new HostError(`vfpool's state has no IOMMU group for its VFs ${[...hostVfs].join(', ')}`, { hint: `run \`vfpool release ${spec.name}\` and start the domain again` });
      }
      const owner = spec.dacLabel ? resolveDacLabel(spec.dacLabel, opts.etcDir, spec.name) : { uid: 0, gid: 0 };
      if (spec.memoryKiB === null) throw new HostError(`the domain XML has no <memory>, so vfio's locked-memory need is unknown`, { hint: "libvirt always writes <memory unit='KiB'>: is this libvirt's XML?" });
      const delivered = await (deps.deliverVfio ?? deliverVfioToQemu)(
        { pid, groups: groups as string[], uid: owner.uid, gid: owner.gid, memlockBytes: memlockForVfio(spec.memoryKiB * 1024n) },
        deps.deliver,
      );
      crashPoint('started:delivered');
      log.info(`started: gave QEMU pid ${pid} vfio group(s) ${groups.join(', ')}: ${delivered.steps.map((s) => s.kind).join(', ') || 'nothing was missing'}`);
    }

    // An incoming QEMU takes no device the migration stream does not carry: the VFs are
    // plugged by `vfpool migrate confirm --role destination` once the migration ended.
    if (argv.includes('-incoming')) {
      log.info(`started: QEMU waits for an incoming migration; ${devices.map((d) => d.id).join(', ')} are plugged when it arrived`);
      return result;
    }
    // Step 3: device_add over vfpool's QMP socket, and wait until QEMU shows each VF.
    const qmp = await QmpClient.connect(domainQmpSocketPath(ctx.settings.stateDir, spec.name), { timeoutMs: 10_000 });
    try {
      result.added = await hotplugDevices(qmp, devices, { timeoutMs: deps.timeoutMs, log: (l) => log.info(`started: ${l}`) });
    } finally {
      qmp.close();
    }
    return result;
  } catch (err) {
    const e = asVfpoolError(err);
    throw e.message.startsWith(dom) ? e : prefixError(`${dom}: its VFs could not be hotplugged at '${how.onlyIfMissing ? 'reconnect' : 'started'}'`, e);
  }
}

/**
 * The plan's plain VFs QEMU does not show (read-only QMP). Failover primaries are left out: QEMU
 * keeps one hidden, out of query-pci, until the guest acks its standby, so absent is no sign.
 */
async function missingDevices(ctx: Context, domain: string, devices: ReturnType<typeof planHotplugDevices>, deps: DeliverGuestDeps): Promise<string[]> {
  const plain = devices.filter((d) => d.failover_pair_id === undefined);
  if (plain.length === 0) return [];
  const qmp = await QmpClient.connect(domainQmpSocketPath(ctx.settings.stateDir, domain), { timeoutMs: 10_000 });
  try {
    return await hotplugDevices(qmp, plain, { dryRun: true, timeoutMs: deps.timeoutMs });
  } finally {
    qmp.close();
  }
}
