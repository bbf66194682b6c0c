// Synchronous calls throughout: sysfs and /proc are the kernel's memory, and a read or readlink
// there returns at once. Asynchronous ones each went through libuv's thread pool (its four
// threads started for the first, a handoff to one and back for every call: dozens per pool
// start, for each poll of the VFs), which a hook pays for in full and which the lab's TCG guest
// magnifies. A write to sriov_numvfs blocks while the kernel creates the VFs, as it does for a
// shell; nothing else is running in a vfpool process meanwhile.
import { chownSync, readFileSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { errnoOf, HostError } from '../errors.js';
import { readdirOr } from '../util/fs-errors.js';
import { netdevFromKernel, type NetdevName, type PciAddress, type VfIndex } from '../types.js';
import type { Host, PfInfo, VfInfo, VfLinkChange, VfLinkConfig } from './host.js';
import { parseVfInfoList, vfLinkSetArgs } from './ip-link.js';

/** Writes one sysfs attribute. Injected so tests can put a fake kernel behind a fixture tree. */
export type SysfsWriter = (path: string, value: string) => Promise<void>;

/** What running iproute2 once gives back; `exitCode` null when it died of a signal. */
export interface IpResult {
  exitCode: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

/**
 * Runs `ip ARGS` (argument array, never a shell). Injected so tests can answer in-process from
 * the fixture kernel instead of starting a process per call.
 */
export type IpRunner = (ipPath: string, args: string[]) => Promise<IpResult>;

/** The real one: iproute2 in the C locale, which is what errnoOfIpError parses. */
export const execIp: IpRunner = async (ipPath, args) => {
  // Loaded on first use: hooks that only read sysfs (or run on the simulated host) must not
  // pay for execa's load time; libvirt waits for every hook call.
  const { execa } = await import('execa');
  const r = await execa(ipPath, args, { env: { LC_ALL: 'C' }, extendEnv: false, reject: false, stdin: 'ignore' });
  return { exitCode: r.exitCode ?? null, signal: r.signal, stdout: String(r.stdout), stderr: String(r.stderr) };
};

export interface LinuxHostOptions {
  sysfsRoot: string;
  procRoot: string;
  devRoot: string;
  ipPath: string;
  writeSysfs?: SysfsWriter;
  runIp?: IpRunner;
}

const KERNEL_ERRNO_SENTENCES: Record<string, string> = {
  EBUSY: 'the kernel refused: VFs are already enabled with another count (write 0 first) or a VF is busy',
  ERANGE: 'the kernel refused: the count is above sriov_totalvfs',
  ENOSPC: 'the kernel refused: not enough bus numbers or MMIO space for that many VFs (check BIOS SR-IOV settings)',
  ENOENT: 'no such file in sysfs (is the device present?)',
  ENODEV: 'no such device or driver',
  ENOMEM: 'the kernel could not allocate resources for the VFs (check BIOS SR-IOV/ARI settings)',
  EPERM: 'permission denied (vfpool must run as root)',
  EACCES: 'permission denied (vfpool must run as root)',
};

/**
 * iproute2 reports a kernel refusal as "RTNETLINK answers: <strerror>" and exits 2; the Host
 * contract wants the errno, so that a refusal reads the same from LinuxHost and from the
 * simulated kernel (the lab's real igb answered EINVAL and EOPNOTSUPP this way). A value iproute2
 * itself rejects before asking the kernel ('Error: argument "4096" is wrong: Invalid "vlan"
 * value', exit 255) is what the kernel would have answered EINVAL to. Anything else: EIPROUTE.
 */
const IP_STRERROR: Array<[RegExp, string]> = [
  [/Operation not supported/i, 'EOPNOTSUPP'],
  [/Invalid argument|is wrong: Invalid/i, 'EINVAL'],
  [/Device or resource busy/i, 'EBUSY'],
  [/Numerical result out of range/i, 'ERANGE'],
  [/Operation not permitted/i, 'EPERM'],
  [/No such device|Cannot find device|does not exist/i, 'ENODEV'],
];

export function errnoOfIpError(stderr: string): string {
  return IP_STRERROR.find(([re]) => re.test(stderr))?.[1] ?? 'EIPROUTE';
}

/**
 * The real machine: sysfs under an injected root and iproute2 at a fixed path. All paths
 * come from here, built only from validated names (NetdevName, PciAddress).
 */
export class LinuxHost implements Host {
  readonly kind = 'linux' as const;
  private readonly writeSysfs: SysfsWriter;
  private readonly runIp: IpRunner;
  constructor(private readonly opts: LinuxHostOptions) {
    this.writeSysfs = opts.writeSysfs ?? (async (p, v) => writeFileSync(p, v));
    this.runIp = opts.runIp ?? execIp;
  }

  private bootIdRead: string | null | undefined;
  bootId(): string | null {
    if (this.bootIdRead === undefined) {
      try {
        this.bootIdRead = readFileSync(join(this.opts.procRoot, 'sys/kernel/random/boot_id'), 'utf8').trim() || null;
      } catch {
        this.bootIdRead = null;
      }
    }
    return this.bootIdRead;
  }

  private netDir(netdev: NetdevName): string {
    return join(this.opts.sysfsRoot, 'class/net', netdev);
  }
  private pfDeviceDir(pf: NetdevName): string {
    return join(this.netDir(pf), 'device');
  }
  private pciDir(dev: PciAddress): string {
    return join(this.opts.sysfsRoot, 'bus/pci/devices', dev);
  }

  private async write(path: string, value: string, what: string): Promise<void> {
    try {
      await this.writeSysfs(path, value);
    } catch (err) {
      const code = errnoOf(err);
      const sentence = (code && KERNEL_ERRNO_SENTENCES[code]) ?? (err as Error).message;
      throw new HostError(`${what}: writing '${value.trim()}' to ${path} failed with ${code ?? 'an error'}: ${sentence}`, { code, cause: err });
    }
  }

  private async readText(path: string): Promise<string | null> {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    }
  }

  private async linkName(path: string): Promise<string | null> {
    try {
      return basename(readlinkSync(path));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    }
  }

  private async ip(args: string[]): Promise<string> {
    const r = await this.runIp(this.opts.ipPath, args);
    if (r.exitCode !== 0) {
      const stderr = String(r.stderr).trim().split('\n')[0] ?? '';
      throw new HostError(`${this.opts.ipPath} ${args.join(' ')} failed (exit ${r.exitCode ?? r.signal}): ${stderr}`, {
        code: errnoOfIpError(stderr),
      });
    }
    return r.stdout;
  }

  async listPfs(): Promise<NetdevName[]> {
    const classNet = join(this.opts.sysfsRoot, 'class/net');
    // No class/net at all: a machine (or fixture) without network devices. Anything else is a
    // broken sysfs root, reported instead of shown as "no SR-IOV PFs".
    const names = readdirOr(classNet, (err) => {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new HostError(`cannot list ${classNet}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), hint: 'check VFPOOL_SYSFS names a sysfs tree', cause: err });
    });
    const pfs: NetdevName[] = [];
    for (const n of names.sort()) {
      if ((await this.readText(join(this.opts.sysfsRoot, 'class/net', n, 'device/sriov_totalvfs'))) !== null) pfs.push(n as NetdevName);
    }
    return pfs;
  }

  async getPf(pf: NetdevName): Promise<PfInfo> {
    const dev = this.pfDeviceDir(pf);
    const total = await this.readText(join(dev, 'sriov_totalvfs'));
    if (total === null) {
      if ((await this.readText(join(this.netDir(pf), 'ifindex'))) === null) {
        throw new HostError(`no network interface '${pf}' on this host (no ${this.netDir(pf)})`, { code: 'ENOENT' });
      }
      throw new HostError(`${pf} is not an SR-IOV physical function (no ${join(dev, 'sriov_totalvfs')})`, { code: 'ENOTSUP' });
    }
    const flags = parseInt((await this.readText(join(this.netDir(pf), 'flags'))) ?? '0', 16);
    return {
      name: pf,
      address: basename(realpathSync.native(dev)) as PciAddress,
      totalVfs: parseInt(total, 10),
      numVfs: parseInt((await this.readText(join(dev, 'sriov_numvfs'))) ?? '0', 10),
      driver: await this.linkName(join(dev, 'driver')),
      up: (flags & 1) === 1,
      autoprobe: (await this.readText(join(dev, 'sriov_drivers_autoprobe'))) !== '0',
    };
  }

  async listVfs(pf: NetdevName): Promise<VfInfo[]> {
    const dev = this.pfDeviceDir(pf);
    const entries = readdirOr(dev, (err) => {
      throw new HostError(`cannot list ${dev}: ${errnoOf(err)}`, { code: errnoOf(err) });
    });
    const vfs: VfInfo[] = [];
    for (const e of entries) {
      const m = /^virtfn(\d+)$/.exec(e);
      if (!m) continue;
      const vfDir = join(dev, e);
      const address = await this.linkName(vfDir);
      if (!address) continue; // removed between readdir and readlink
      const netdevs = readdirOr(join(vfDir, 'net'), () => []);
      vfs.push({
        index: Number(m[1]) as VfIndex,
        address: address as PciAddress,
        netdev: netdevs[0] ? netdevFromKernel(netdevs[0]) : null,
        driver: await this.linkName(join(vfDir, 'driver')),
        iommuGroup: await this.linkName(join(vfDir, 'iommu_group')),
      });
    }
    return vfs.sort((a, b) => a.index - b.index);
  }

  async netdevDevice(netdev: NetdevName): Promise<PciAddress | null> {
    try {
      return basename(realpathSync.native(join(this.netDir(netdev), 'device'))) as PciAddress;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    }
  }

  async stackedDevices(): Promise<Map<NetdevName, string[]>> {
    const out = new Map<NetdevName, string[]>();
    const classNet = join(this.opts.sysfsRoot, 'class/net');
    const unreadable = (path: string) => (err: unknown): string[] => {
      // A netdev that went away between the listing and its read has nothing stacked on it.
      if (errnoOf(err) === 'ENOENT') return [];
      throw new HostError(`cannot read ${path}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
    };
    for (const name of readdirOr(classNet, unreadable(classNet))) {
      // netdev_upper_dev_link names each one upper_NAME in the lower device's directory.
      const uppers = readdirOr(join(classNet, name), unreadable(join(classNet, name))).filter((e) => e.startsWith('upper_'));
      if (uppers.length > 0) out.set(name as NetdevName, uppers.map((e) => e.slice('upper_'.length)).sort());
    }
    return out;
  }

  async physfnOf(dev: PciAddress): Promise<NetdevName | null> {
    const nets = readdirOr(join(this.pciDir(dev), 'physfn/net'), () => []);
    return nets[0] ? netdevFromKernel(nets[0]) : null;
  }

  async writeNumVfs(pf: NetdevName, count: number): Promise<void> {
    await this.write(join(this.pfDeviceDir(pf), 'sriov_numvfs'), `${count}\n`, `${pf}: setting sriov_numvfs to ${count}`);
  }

  async getVfLinks(pf: NetdevName): Promise<Map<number, VfLinkConfig>> {
    return parseVfInfoList(await this.ip(['-j', '-d', 'link', 'show', 'dev', pf]), pf);
  }

  async setVfLink(pf: NetdevName, vf: VfIndex, change: VfLinkChange): Promise<void> {
    await this.ip(vfLinkSetArgs(pf, vf, change));
  }

  async getMtu(netdev: NetdevName): Promise<number> {
    const mtu = await this.readText(join(this.netDir(netdev), 'mtu'));
    if (mtu === null) throw new HostError(`no network interface '${netdev}' (no ${join(this.netDir(netdev), 'mtu')})`, { code: 'ENOENT' });
    return parseInt(mtu, 10);
  }

  async setMtu(netdev: NetdevName, mtu: number): Promise<void> {
    await this.ip(['link', 'set', 'dev', netdev, 'mtu', String(mtu)]);
  }

  async bindDriver(dev: PciAddress, driver: string | null): Promise<void> {
    const dir = this.pciDir(dev);
    const current = await this.linkName(join(dir, 'driver'));
    // Before any change: a driver that is not loaded would leave the device unbound, with no
    // driver and no netdev, once Step 2 has run (the callers undo only completed steps).
    // The driver's directory, not its `bind` file: that attribute is write-only (EACCES on read).
    if (driver !== null && !isDirectory(join(this.opts.sysfsRoot, 'bus/pci/drivers', driver))) {
      throw new HostError(`${dev}: driver ${driver} is not loaded (no ${join(this.opts.sysfsRoot, 'bus/pci/drivers', driver)})`, {
        code: 'ENODEV',
        hint: `load it with \`modprobe ${driver}\``,
      });
    }
    // Step 1: driver_override decides which driver the next probe picks; "\n" clears it so a
    // host driver is matched by ID again (libvirt's virPCIDeviceUnbindFromStub does the same).
    await this.write(join(dir, 'driver_override'), driver === 'vfio-pci' ? `${driver}\n` : '\n', `${dev}: setting driver_override`);
    // Step 2: unbind from whatever holds it now.
    if (current !== null) await this.write(join(dir, 'driver/unbind'), dev, `${dev}: unbinding from ${current}`);
    if (driver === null) return;
    // Step 3: probe. A host driver that is not the ID match (rare) is forced through its bind file.
    await this.write(join(this.opts.sysfsRoot, 'bus/pci/drivers_probe'), dev, `${dev}: probing drivers`);
    let bound = await this.linkName(join(dir, 'driver'));
    if (bound !== driver && driver !== 'vfio-pci') {
      if (bound !== null) await this.write(join(dir, 'driver/unbind'), dev, `${dev}: unbinding from ${bound}`);
      await this.write(join(this.opts.sysfsRoot, 'bus/pci/drivers', driver, 'bind'), dev, `${dev}: binding to ${driver}`);
      bound = await this.linkName(join(dir, 'driver'));
    }
    if (bound !== driver) {
      throw new HostError(`${dev}: asked for driver ${driver}, the kernel bound ${bound ?? 'none'}`, {
        code: 'ENODEV',
        hint: `check \`dmesg\` for why ${driver} did not take it`,
      });
    }
  }

  async vfioGroupHolders(group: string): Promise<number[]> {
    return (await this.vfioHolders()).get(group) ?? [];
  }

  async vfioHolders(): Promise<Map<string, number[]>> {
    const holders = new Map<string, number[]>();
    const procs = readdirOr(this.opts.procRoot, () => []).filter((p) => /^\d+$/.test(p));
    for (const p of procs) {
      const fdDir = join(this.opts.procRoot, p, 'fd');
      // A process that exits meanwhile, or one we may not look into, simply holds nothing.
      const links = readdirOr(fdDir, () => []).map((fd) => {
        try {
          return readlinkSync(join(fdDir, fd));
        } catch {
          return '';
        }
      });
      for (const group of new Set(links.filter((l) => /^\/dev\/vfio\/\d+$/.test(l)).map((l) => l.slice('/dev/vfio/'.length)))) {
        holders.set(group, [...(holders.get(group) ?? []), Number(p)]);
      }
    }
    for (const pids of holders.values()) pids.sort((a, b) => a - b);
    return holders;
  }

  async setVfioGroupOwner(group: string, uid: number, gid: number): Promise<void> {
    const path = join(this.opts.devRoot, 'vfio', group);
    try {
      chownSync(path, uid, gid);
    } catch (err) {
      throw new HostError(`cannot hand ${path} to uid ${uid}: ${errnoOf(err)}`, { code: errnoOf(err), cause: err });
    }
  }

  async getVfioGroupOwner(group: string): Promise<{ uid: number; gid: number } | null> {
    let st;
    try {
      st = statSync(join(this.opts.devRoot, 'vfio', group));
    } catch {
      return null;
    }
    return { uid: st.uid, gid: st.gid };
  }

  async iommuGroupDevices(group: string): Promise<Array<{ address: PciAddress; driver: string | null }>> {
    const dir = join(this.opts.sysfsRoot, 'kernel/iommu_groups', group, 'devices');
    const names = readdirOr(dir, (err) => {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new HostError(`cannot list ${dir}: ${errnoOf(err)}`, { code: errnoOf(err) });
    });
    const out: Array<{ address: PciAddress; driver: string | null }> = [];
    for (const n of names.sort()) {
      out.push({ address: n as PciAddress, driver: await this.linkName(join(this.opts.sysfsRoot, 'bus/pci/devices', n, 'driver')) });
    }
    return out;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
