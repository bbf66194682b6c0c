import { join, relative } from 'node:path';
import { errnoOf, HostError, BadInputError } from '../errors.js';
import { crashPoint } from '../util/crash-point.js';
import { applyCgroupAllow, planCgroupAllow, type CgroupAllowStep, type CgroupDeps, type CharDevice } from './device-cgroup.js';
import { lazyFsPromises as fsPromises } from '../util/lazy-builtins.js';
import { COMMAND_PATH, runOrFail, startCommand, type CommandRunner } from './command.js';

/**
 * Gives a running QEMU what libvirt gives it before it hotplugs a `<hostdev>` it knows of, so
 * that a `device_add vfio-pci` of a VF libvirt does NOT know of can succeed (the `started` hook,
 * root, libvirt's default qemu.conf). Measured with libvirt 11.3 (docs/libvirt-delivery.md):
 * at `started` QEMU runs as libvirt-qemu in its own mount namespace whose /dev has no
 * /dev/vfio, in a device cgroup that allows only libvirt's default ACL, with RLIMIT_MEMLOCK
 * 8 MiB. device_add vfio-pci then fails with "Could not open '/dev/vfio/N': No such file or
 * directory" (no node), "Operation not permitted" (cgroup), or "memory listener initialization
 * failed: … vfio_container_dma_map(…) = -12 (Cannot allocate memory)" (memlock). This module
 * fixes the three and nothing else: the caller does the `device_add`.
 *
 * Everything it changes belongs to the QEMU process (its rlimit, its private /dev, its cgroup)
 * and goes away with it, so there is nothing to restore at release.
 */

export interface DeliverDeps extends CgroupDeps {
  /** '/proc' in production; a fixture tree in tests. */
  procRoot: string;
  /** The host's /dev, where vfio-pci made /dev/vfio/vfio and /dev/vfio/GROUP. */
  devRoot: string;
  run: CommandRunner;
  prlimitPath: string;
  mknodPath: string;
}

export interface VfioDeliveryRequest {
  /** QEMU's pid (libvirt's /run/libvirt/qemu/NAME.pid, or the wrapper's own). */
  pid: number;
  /** IOMMU group numbers of the VFs to hotplug ('7'). */
  groups: string[];
  /** The QEMU user (the domain's DAC label). The group node becomes its, mode 0600. */
  uid: number;
  gid: number;
  /** RLIMIT_MEMLOCK QEMU needs (memlockForVfio). Only ever raised, never lowered. */
  memlockBytes: bigint;
}

export type DeliveryStep =
  | { kind: 'memlock'; from: bigint | 'unlimited'; to: bigint }
  | { kind: 'mknod'; path: string; device: CharDevice; uid: number; gid: number; mode: number }
  | CgroupAllowStep;

export interface VfioDeliveryResult {
  /** What was changed, in order. Empty when QEMU already had everything (a second call). */
  steps: DeliveryStep[];
  /** Whether QEMU has a private mount namespace (libvirt's default `namespaces = ["mount"]`). */
  privateMountNamespace: boolean;
  cgroup: 'v1' | 'v2' | 'none';
}

const GIB = 1024n * 1024n * 1024n;

/**
 * What libvirt itself sets for a domain with a VFIO hostdev on x86 (qemuDomainGetMemLockLimitBytes):
 * the guest's maximum memory plus 1 GiB for the IOMMU page tables and MMIO BARs QEMU maps.
 */
export function memlockForVfio(guestMemoryBytes: bigint): bigint {
  if (guestMemoryBytes <= 0n) throw new BadInputError(`guest memory must be positive, got ${guestMemoryBytes} bytes`);
  return guestMemoryBytes + GIB;
}

/** Linux dev_t as Node's stat reports it (new_encode_dev): 12-bit major, 20-bit minor, split. */
export function splitRdev(rdev: number): { major: number; minor: number } {
  return { major: Math.floor(rdev / 256) & 0xfff, minor: (rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00)) };
}

function validateRequest(req: VfioDeliveryRequest): void {
  if (!Number.isInteger(req.pid) || req.pid <= 1) throw new BadInputError(`QEMU pid must be an integer above 1, got ${req.pid}`);
  if (req.groups.length === 0) throw new BadInputError('no IOMMU group to deliver: expected at least one VF group');
  for (const g of req.groups) {
    // The group becomes a path component under the QEMU's /dev: digits only, as the kernel names them.
    if (!/^[0-9]{1,6}$/.test(g)) throw new BadInputError(`IOMMU group '${g}' is not a group number (expected digits, as in /dev/vfio/7)`);
  }
  for (const [what, id] of [['uid', req.uid], ['gid', req.gid]] as const) {
    if (!Number.isInteger(id) || id < 0) throw new BadInputError(`QEMU ${what} must be a non-negative integer, got ${id}`);
  }
}

async function hostCharDevice(path: string, hint: string): Promise<CharDevice> {
  let st;
  try {
    st = await fsPromises().stat(path);
  } catch (err) {
    throw new HostError(`${path} does not exist on the host`, { code: errnoOf(err), hint, cause: err });
  }
  if (!st.isCharacterDevice()) throw new HostError(`${path} is not a character device`, { code: 'ENODEV', hint });
  return { path, ...splitRdev(st.rdev), mode: st.mode & 0o777 };
}

/** "Max locked memory  8388608  8388608  bytes" from /proc/PID/limits: the soft limit. */
export function parseMemlockLimit(limits: string): bigint | 'unlimited' | null {
  const line = limits.split('\n').find((l) => l.startsWith('Max locked memory'));
  const soft = line?.slice('Max locked memory'.length).trim().split(/\s+/)[0];
  if (soft === undefined) return null;
  if (soft === 'unlimited') return 'unlimited';
  return /^[0-9]+$/.test(soft) ? BigInt(soft) : null;
}

async function readProc(deps: DeliverDeps, pid: number, file: string): Promise<string> {
  const path = join(deps.procRoot, String(pid), file);
  try {
    return await fsPromises().readFile(path, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ESRCH') {
      throw new HostError(`QEMU process ${pid} is gone (no ${path})`, { code: 'ESRCH', hint: 'the domain stopped while its VFs were being delivered; start it again', cause: err });
    }
    throw new HostError(`reading ${path} failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
  }
}

/** Where a prlimit or mknod that is not installed comes from (bpftool's: device-cgroup.ts). */
const INSTALL_HINT = 'install it (prlimit is in util-linux, mknod in coreutils)';

/**
 * AppArmor and SELinux confine QEMU per domain (virt-aa-helper / svirt labels); a node made
 * behind libvirt's back is denied there, and vfpool does not edit those policies. Refuse with
 * a sentence instead of letting QEMU fail with a bare EACCES. Neither is active on the machines
 * measured (no /sys/module/apparmor, no /sys/fs/selinux): label 'unconfined' or no attr file.
 */
async function checkNotConfined(deps: DeliverDeps, pid: number): Promise<void> {
  let label: string;
  try {
    label = (await fsPromises().readFile(join(deps.procRoot, String(pid), 'attr/current'), 'utf8')).replace(/\0/g, '').trim();
  } catch {
    return; // no LSM exposes a label: nothing confines QEMU
  }
  if (label === '' || label === 'unconfined' || /^unconfined(\s|$)/.test(label)) return;
  throw new HostError(`QEMU process ${pid} is confined by the security label '${label}', which would deny vfpool's /dev/vfio nodes`, {
    code: 'EACCES',
    hint: "set security_driver = \"none\" in /etc/libvirt/qemu.conf, or use <seclabel type='none'/> in the domain",
  });
}

async function raiseMemlock(deps: DeliverDeps, req: VfioDeliveryRequest, steps: DeliveryStep[]): Promise<void> {
  const current = parseMemlockLimit(await readProc(deps, req.pid, 'limits'));
  if (current === null) throw new HostError(`no 'Max locked memory' line in ${join(deps.procRoot, String(req.pid), 'limits')}`, { code: 'EPROTO' });
  if (current === 'unlimited' || current >= req.memlockBytes) return;
  // Soft and hard together, as libvirt's virProcessSetMaxMemLock does: QEMU never raises its own.
  const v = String(req.memlockBytes);
  const r = await startCommand(deps.run, deps.prlimitPath, [`--pid=${req.pid}`, `--memlock=${v}:${v}`], `raising the locked-memory limit of QEMU process ${req.pid}`, INSTALL_HINT);
  if (r.exitCode !== 0) {
    // Raising a hard limit needs CAP_SYS_RESOURCE, as it does for libvirt's own hostdevs.
    throw new HostError(`raising the locked-memory limit of QEMU process ${req.pid} from ${current} to ${v} bytes failed: ${r.stderr.trim().split('\n')[0] ?? ''}`, {
      code: /not permitted/i.test(r.stderr) ? 'EPERM' : 'ECOMMAND',
      hint: 'vfpool needs root with CAP_SYS_RESOURCE (a container without it cannot pass VFs to libvirt guests)',
    });
  }
  steps.push({ kind: 'memlock', from: current, to: req.memlockBytes });
}

/** Whether PID lives in another mount namespace than ours (libvirt's default for QEMU). */
async function hasPrivateMountNamespace(deps: DeliverDeps, pid: number): Promise<boolean> {
  const [theirs, ours] = await Promise.all([
    fsPromises().readlink(join(deps.procRoot, String(pid), 'ns/mnt')),
    fsPromises().readlink(join(deps.procRoot, 'self/ns/mnt')),
  ]).catch((err: unknown) => {
    throw new HostError(`reading the mount namespace of QEMU process ${pid} failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
  });
  return theirs !== ours;
}

interface PlannedNode {
  inside: string;
  device: CharDevice;
  owner: { uid: number; gid: number; mode: number };
  /** 'absent': mknod; 'owner': the right node with another owner; 'ok': nothing to do. */
  state: 'absent' | 'owner' | 'ok';
}

/**
 * Where DEV goes inside QEMU's mount namespace, and what is there now. /proc/PID/root resolves
 * paths in that process's namespace (the kernel follows its root and mounts), so no nsenter is
 * needed. lstat: a link planted in QEMU's /dev is refused, never followed to a host file.
 */
async function planNode(deps: DeliverDeps, pid: number, dev: CharDevice, owner: PlannedNode['owner']): Promise<PlannedNode> {
  const inside = join(deps.procRoot, String(pid), 'root/dev', relative(deps.devRoot, dev.path));
  let st;
  try {
    st = await fsPromises().lstat(inside);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { inside, device: dev, owner, state: 'absent' };
    throw new HostError(`checking ${inside} failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
  }
  const have = splitRdev(st.rdev);
  if (!st.isCharacterDevice() || have.major !== dev.major || have.minor !== dev.minor) {
    throw new HostError(`${inside} exists but is not the character device ${dev.major}:${dev.minor} of ${dev.path}`, {
      code: 'EEXIST',
      hint: "something else made this node in QEMU's /dev; destroy and start the domain again",
    });
  }
  return { inside, device: dev, owner, state: st.uid === owner.uid && st.gid === owner.gid ? 'ok' : 'owner' };
}

/** The same major:minor as the host node, like libvirt's qemuNamespaceMknodPaths. */
async function makeNode(deps: DeliverDeps, pid: number, node: PlannedNode, steps: DeliveryStep[]): Promise<void> {
  const { inside, device: dev, owner } = node;
  if (node.state === 'ok') return;
  if (node.state === 'absent') {
    await runOrFail(deps.run, deps.mknodPath, ['-m', owner.mode.toString(8), inside, 'c', String(dev.major), String(dev.minor)], `making ${dev.path} in the mount namespace of QEMU process ${pid}`, INSTALL_HINT);
  }
  await fsPromises().lchown(inside, owner.uid, owner.gid).catch((err: unknown) => {
    throw new HostError(`giving ${inside} to ${owner.uid}:${owner.gid} failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
  });
  if (node.state === 'absent') steps.push({ kind: 'mknod', path: inside, device: dev, ...owner });
}

/**
 * Root side of a hotplug: after this, QEMU process `req.pid` can open /dev/vfio/vfio and each
 * /dev/vfio/GROUP and lock the guest's memory for DMA. Idempotent: a second call changes nothing.
 */
export async function deliverVfioToQemu(req: VfioDeliveryRequest, deps: DeliverDeps): Promise<VfioDeliveryResult> {
  validateRequest(req);
  const hint = 'bind the VF to vfio-pci first (vfpool prepare does); is the vfio-pci module loaded?';
  // Step 1: every check and every read before the first change.
  const container = await hostCharDevice(join(deps.devRoot, 'vfio/vfio'), hint);
  const groups = await Promise.all(req.groups.map((g) => hostCharDevice(join(deps.devRoot, 'vfio', g), hint)));
  await readProc(deps, req.pid, 'stat');
  await checkNotConfined(deps, req.pid);
  const privateMountNamespace = await hasPrivateMountNamespace(deps, req.pid);
  const nodes = privateMountNamespace
    ? [
        await planNode(deps, req.pid, container, { uid: 0, gid: 0, mode: container.mode }),
        ...(await Promise.all(groups.map((g) => planNode(deps, req.pid, g, { uid: req.uid, gid: req.gid, mode: 0o600 })))),
      ]
    : [];
  const cgroup = await planCgroupAllow(req.pid, [container, ...groups], deps);
  const steps: DeliveryStep[] = [];

  // Step 2: memlock. Without it vfio cannot pin the guest's RAM for DMA and device_add fails.
  await raiseMemlock(deps, req, steps);
  crashPoint('deliver:memlock');

  // Step 3: the nodes. With namespaces = [] QEMU sees the host's /dev, where vfpool's start
  // hook already gave the group node to the QEMU user.
  if (nodes.length) {
    const dir = join(deps.procRoot, String(req.pid), 'root/dev/vfio');
    await fsPromises().mkdir(dir, { mode: 0o755 }).catch((err: unknown) => {
      if (errnoOf(err) !== 'EEXIST') throw new HostError(`making ${dir} failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
    });
    for (const node of nodes) {
      await makeNode(deps, req.pid, node, steps);
      crashPoint('deliver:node');
    }
  }

  // Step 4: the device cgroup (v1 devices.allow, or libvirt's BPF map on v2).
  await applyCgroupAllow(cgroup.steps, deps);
  crashPoint('deliver:cgroup');
  steps.push(...cgroup.steps);
  return { steps, privateMountNamespace, cgroup: cgroup.version };
}

/** The production dependencies: /proc, /dev, the cgroup mounts of this machine, execa. */
export function defaultDeliverDeps(): DeliverDeps {
  const runner: CommandRunner = async (file, args) => {
    const { execa } = await import('execa');
    const r = await execa(file, args, { env: { LC_ALL: 'C', PATH: COMMAND_PATH }, extendEnv: false, reject: false, stdin: 'ignore' });
    // reject:false also resolves for a command that never started (ENOENT, EACCES), with no
    // exit code: reported as one, its cause (a missing bpftool on a hybrid cgroup host) was lost.
    if (r.exitCode === undefined && !r.isTerminated) throw Object.assign(new Error(r.originalMessage || r.shortMessage), { code: r.code ?? 'ECOMMAND' });
    return { exitCode: r.exitCode ?? 128, stdout: String(r.stdout), stderr: String(r.stderr) };
  };
  return {
    procRoot: '/proc',
    devRoot: '/dev',
    mountsFile: '/proc/self/mounts',
    run: runner,
    prlimitPath: 'prlimit',
    mknodPath: 'mknod',
    bpftoolPath: 'bpftool',
  };
}
