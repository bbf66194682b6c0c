import { dirname, join } from 'node:path';
import { errnoOf, HostError } from '../errors.js';
import { runOrFail, type CommandRunner } from './command.js';
import { lazyFsPromises as fsPromises } from '../util/lazy-builtins.js';

/** A character device node: where it is on the host, its number, its mode there. */
export interface CharDevice {
  path: string;
  major: number;
  minor: number;
  mode: number;
}

export interface CgroupDeps {
  procRoot: string;
  /** /proc/self/mounts: where this machine mounted the v1 devices controller or cgroup2. */
  mountsFile: string;
  run: CommandRunner;
  bpftoolPath: string;
}

export type CgroupAllowStep =
  | { kind: 'cgroup-v1-allow'; file: string; rule: string }
  | { kind: 'cgroup-v2-map'; cgroup: string; mapId: number; key: string; value: string };

interface CgroupLine {
  controllers: string[];
  path: string;
}

export function parseProcCgroup(text: string): CgroupLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const m = /^[0-9]+:([^:]*):(.*)$/.exec(l);
      if (!m) throw new HostError(`unexpected line in /proc/PID/cgroup: '${l}'`, { code: 'EPROTO' });
      return { controllers: m[1] === '' ? [] : m[1]!.split(','), path: m[2]! };
    });
}

/** Mount point of the first mount of FSTYPE whose options satisfy WANT (octal escapes undone). */
export function findMount(mounts: string, fstype: string, want: (opts: string[]) => boolean): string | null {
  for (const line of mounts.split('\n')) {
    const [, dir, type, opts] = line.split(' ');
    if (type === fstype && dir && opts && want(opts.split(','))) return dir.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return null;
}

/**
 * Whether a v1 devices.list already lets the cgroup read and write DEV. Rules are
 * "TYPE MAJOR:MINOR ACCESS" with '*' wildcards; 'a *:* rwm' is the unrestricted root cgroup.
 */
export function v1ListAllows(list: string, dev: CharDevice): boolean {
  return list.split('\n').some((rule) => {
    const m = /^([acb]) (\*|[0-9]+):(\*|[0-9]+) ([rwm]+)$/.exec(rule.trim());
    if (!m) return false;
    const [, type, major, minor, access] = m;
    return (
      (type === 'a' || type === 'c') &&
      (major === '*' || Number(major) === dev.major) &&
      (minor === '*' || Number(minor) === dev.minor) &&
      access!.includes('r') &&
      access!.includes('w')
    );
  });
}

async function read(path: string, what: string): Promise<string> {
  try {
    return await fsPromises().readFile(path, 'utf8');
  } catch (err) {
    throw new HostError(`reading ${what} (${path}) failed: ${(err as Error).message}`, { code: errnoOf(err), cause: err });
  }
}

/**
 * cgroup v1: libvirt writes "c MAJ:MIN rw" to the domain's devices.allow for a hostdev it
 * hotplugs (qemuSetupHostdevCgroup); so do we. The devices controller is per task, and libvirt
 * leaves every QEMU thread in the domain's devices cgroup (its emulator/vcpu sub-cgroups are for
 * cpu/cpuset only), so QEMU's main pid names the right one.
 */
async function planV1(pid: number, relPath: string, devices: CharDevice[], deps: CgroupDeps): Promise<CgroupAllowStep[]> {
  const mount = findMount(await read(deps.mountsFile, 'the mount table'), 'cgroup', (o) => o.includes('devices'));
  if (!mount) throw new HostError(`QEMU process ${pid} is in a v1 devices cgroup '${relPath}' but no devices controller is mounted here`, { code: 'ENOENT' });
  const dir = join(mount, relPath);
  const list = await read(join(dir, 'devices.list'), `the device list of QEMU process ${pid}`);
  return devices
    .filter((dev) => !v1ListAllows(list, dev))
    .map((dev) => ({ kind: 'cgroup-v1-allow' as const, file: join(dir, 'devices.allow'), rule: `c ${dev.major}:${dev.minor} rw` }));
}

/** libvirt's BPF map key: (major << 32) | minor, as the little-endian bytes bpftool takes. */
export function bpfDeviceKey(dev: CharDevice): string[] {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(dev.minor, 0);
  b.writeUInt32LE(dev.major, 4);
  return [...b].map((x) => x.toString(16).padStart(2, '0'));
}

/** (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE) << 16 | BPF_DEVCG_DEV_CHAR: virCgroupV2DevicesGetPerms(rw, 'c'). */
export const BPF_CHAR_RW_VALUE = ['02', '00', '06', '00'];

async function bpftoolJson(deps: CgroupDeps, args: string[], what: string): Promise<unknown> {
  const r = await runOrFail(deps.run, deps.bpftoolPath, ['-j', ...args], what, 'apt-get install bpftool (on cgroup v2 libvirt keeps the device ACL in a BPF map only bpftool can update)');
  try {
    return JSON.parse(r.stdout === '' ? 'null' : r.stdout);
  } catch (err) {
    throw new HostError(`${what}: ${deps.bpftoolPath} ${args.join(' ')} printed no JSON`, { code: 'EPROTO', cause: err });
  }
}

/**
 * cgroup v2: libvirt attaches a BPF_CGROUP_DEVICE program to the domain's cgroup whose hash map
 * holds the allowed devices (vircgroupv2devices.c); libvirt itself finds it again by querying the
 * cgroup's programs and the program's map (virCgroupV2DevicesDetectProg). We do the same with
 * bpftool from QEMU's cgroup upwards (QEMU sits in the domain's `emulator` child) and add one key
 * per device. No device program anywhere up the tree: nothing restricts QEMU.
 */
async function planV2(relPath: string, devices: CharDevice[], deps: CgroupDeps): Promise<CgroupAllowStep[] | null> {
  const mount = findMount(await read(deps.mountsFile, 'the mount table'), 'cgroup2', () => true);
  if (!mount) return null;
  for (let rel = relPath; ; rel = dirname(rel)) {
    const cgroup = join(mount, rel);
    const attached = (await bpftoolJson(deps, ['cgroup', 'show', cgroup], `listing the BPF programs of ${cgroup}`)) as Array<{ id?: number; attach_type?: string }> | null;
    const prog = (attached ?? []).find((p) => p.attach_type === 'cgroup_device' || p.attach_type === 'device');
    if (prog && typeof prog.id === 'number') {
      const info = (await bpftoolJson(deps, ['prog', 'show', 'id', String(prog.id)], `reading BPF program ${prog.id} of ${cgroup}`)) as { map_ids?: number[] } | null;
      const mapId = info?.map_ids?.[0];
      if (typeof mapId !== 'number') throw new HostError(`the device BPF program ${prog.id} of ${cgroup} has no map: not libvirt's program`, { code: 'EPROTO', hint: 'vfpool can only extend the device ACL libvirt attached' });
      // Always written (an update of an existing key is a no-op): a lookup would cost as many processes.
      return devices.map((dev) => ({ kind: 'cgroup-v2-map' as const, cgroup, mapId, key: bpfDeviceKey(dev).join(' '), value: BPF_CHAR_RW_VALUE.join(' ') }));
    }
    if (rel === '/' || rel === '.' || rel === '') return null;
  }
}

export interface CgroupAllowPlan {
  /** The hierarchy that restricts QEMU: a BPF program wins over an unrestricted v1 root. */
  version: 'v1' | 'v2' | 'none';
  steps: CgroupAllowStep[];
}

/**
 * What lets QEMU process PID read and write DEVICES, in whichever device cgroup this machine
 * has. Reads only (files and `bpftool … show`), so a caller can plan it before any change.
 * Both hierarchies are checked: on a "hybrid" host (v1 controllers plus cgroup2 at
 * /sys/fs/cgroup/unified) libvirt 11.3 leaves QEMU at the v1 devices root ('a *:* rwm') and
 * restricts it with a BPF program on the cgroup2 side instead (measured: docs/libvirt-delivery.md).
 */
export async function planCgroupAllow(pid: number, devices: CharDevice[], deps: CgroupDeps): Promise<CgroupAllowPlan> {
  const lines = parseProcCgroup(await read(join(deps.procRoot, String(pid), 'cgroup'), `the cgroups of QEMU process ${pid}`));
  const v1Line = lines.find((l) => l.controllers.includes('devices'));
  const v2Line = lines.find((l) => l.controllers.length === 0 && l.path.startsWith('/'));
  const v1 = v1Line ? await planV1(pid, v1Line.path, devices, deps) : null;
  const v2 = v2Line ? await planV2(v2Line.path, devices, deps) : null;
  return { version: v2 ? 'v2' : v1 ? 'v1' : 'none', steps: [...(v1 ?? []), ...(v2 ?? [])] };
}

/** Carries out a plan of planCgroupAllow. */
export async function applyCgroupAllow(steps: CgroupAllowStep[], deps: CgroupDeps): Promise<void> {
  for (const step of steps) {
    if (step.kind === 'cgroup-v1-allow') {
      try {
        await fsPromises().writeFile(step.file, step.rule);
      } catch (err) {
        throw new HostError(`writing '${step.rule}' to ${step.file} failed: ${(err as Error).message}`, {
          code: errnoOf(err),
          hint: 'a parent cgroup denies the device; vfpool must run as root in the host cgroup namespace',
          cause: err,
        });
      }
    } else {
      await bpftoolJson(deps, ['map', 'update', 'id', String(step.mapId), 'key', 'hex', ...step.key.split(' '), 'value', 'hex', ...step.value.split(' ')], `allowing key ${step.key} in the device map ${step.mapId} of ${step.cgroup}`);
    }
  }
}
