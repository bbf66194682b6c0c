/**
 * The lab's real machine (test/lab): LinuxHost on the igb PF of a QEMU guest running a real
 * Linux 6.12 kernel. Only the *.lab.ts files use this, and only inside that guest: every helper
 * here writes to sysfs, changes links and starts QEMU, so it refuses to run anywhere else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync, readdirSync, readlinkSync, writeFileSync, existsSync, mkdtempSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { DEFAULT_SETTINGS } from '../../src/config/settings.js';
import type { VfInfo } from '../../src/host/host.js';
import { LinuxHost } from '../../src/host/linux-host.js';
import type { NetdevName } from '../../src/types.js';

export const IP = DEFAULT_SETTINGS.ipPath;
export const QEMU = DEFAULT_SETTINGS.qemuPath;

/** Throws unless this is the lab guest (run-in-guest.sh sets VFPOOL_LAB_GUEST=1 there). */
export function assertLabGuest(file: string): void {
  if (process.env.VFPOOL_LAB_GUEST !== '1') {
    throw new Error(`${file} writes sysfs and rebinds drivers on the machine it runs on: it runs only inside the lab guest (bash test/lab/run-lab.sh)`);
  }
}

export interface LabPf {
  pf: NetdevName;
  address: string;
  totalVfs: number;
}

/** The guest's one SR-IOV PF: the netdev with a `device/sriov_totalvfs` (QEMU's igb: 7). */
export function findLabPf(): LabPf {
  const pfs = readdirSync('/sys/class/net').filter((n) => existsSync(`/sys/class/net/${n}/device/sriov_totalvfs`));
  if (pfs.length !== 1) throw new Error(`the lab guest should have exactly one SR-IOV PF, found ${pfs.length} (${pfs.join(', ') || 'none'}) under /sys/class/net`);
  const pf = pfs[0]!;
  const driver = basename(readlinkSync(`/sys/class/net/${pf}/device/driver`));
  if (driver !== 'igb') throw new Error(`the lab's PF ${pf} is driven by ${driver}, expected igb (QEMU's emulated 82576)`);
  return {
    pf: pf as NetdevName,
    address: basename(readlinkSync(`/sys/class/net/${pf}/device`)),
    totalVfs: Number(readFileSync(`/sys/class/net/${pf}/device/sriov_totalvfs`, 'utf8').trim()),
  };
}

export function labHost(): LinuxHost {
  return new LinuxHost({ sysfsRoot: '/sys', procRoot: '/proc', devRoot: '/dev', ipPath: IP });
}

async function until(what: string, ms: number, fn: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function carrier(pf: string): boolean {
  try {
    return readFileSync(`/sys/class/net/${pf}/carrier`, 'utf8').trim() === '1';
  } catch {
    return false; // EINVAL while the link is administratively down
  }
}

/**
 * `ip link set PF up|down`. Up waits for the link (carrier): igb checks VF rates against it,
 * and it drops for a moment whenever VFs are enabled or disabled with the PF up (igb re-opens
 * the PF), about 0.5-1 s under TCG.
 */
export async function setLabPfUp(pf: string, up: boolean): Promise<void> {
  await execa(IP, ['link', 'set', 'dev', pf, up ? 'up' : 'down']);
  if (up) await until(`${pf} has carrier`, 30_000, () => carrier(pf));
}

const qemus = new Set<ChildProcess>();

async function stopQemu(p: ChildProcess): Promise<void> {
  if (p.exitCode === null && p.signalCode === null) {
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const killer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  }
  qemus.delete(p);
}

function holdsGroup(pid: number, group: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === `/dev/vfio/${group}`;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/**
 * A real QEMU holding the VF's /dev/vfio/GROUP, as a guest's would: paused (-S), no monitor,
 * the VF as a vfio-pci device. Under TCG in the lab it takes 12-26 s to open the group; the
 * returned pid is QEMU's own (vfpool names it as the holder).
 */
export async function holdVfioWithQemu(vf: VfInfo): Promise<{ pid: number; release: () => Promise<void> }> {
  if (vf.driver !== 'vfio-pci' || vf.iommuGroup === null) throw new Error(`${vf.address} is not on vfio-pci (driver ${vf.driver}): QEMU could not open it`);
  const group = vf.iommuGroup;
  const log = join(mkdtempSync('/tmp/vfpool-qemu-'), 'qemu.log');
  const fd = openSync(log, 'w');
  const p = spawn(QEMU, ['-machine', 'q35', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-S', '-device', `vfio-pci,host=${vf.address}`], {
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  qemus.add(p);
  const pid = p.pid!;
  try {
    await until(`QEMU (pid ${pid}) holds /dev/vfio/${group}`, 120_000, () => {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`QEMU exited (${p.exitCode ?? p.signalCode}) before opening /dev/vfio/${group}: ${readFileSync(log, 'utf8').trim()}`);
      }
      return holdsGroup(pid, group);
    });
  } catch (err) {
    await stopQemu(p);
    throw err;
  }
  return { pid, release: () => stopQemu(p) };
}

/**
 * Puts the PF back as every test expects it: no QEMU of ours left, the PF up, 0 VFs. Writing 0
 * also removes VFs bound to vfio-pci (not held open: QEMU is gone by then). It does not wait
 * for the link: the test's own first write to sriov_numvfs drops it again, so a test that
 * needs it (rates) waits through setPfUp(true) at that point.
 */
export async function resetLabPf(pf: string): Promise<void> {
  for (const p of [...qemus]) await stopQemu(p);
  const dev = `/sys/class/net/${pf}/device`;
  if (readFileSync(join(dev, 'sriov_numvfs'), 'utf8').trim() !== '0') writeFileSync(join(dev, 'sriov_numvfs'), '0\n');
  await until(`${pf} has no virtfn links`, 30_000, () => !readdirSync(dev).some((e) => e.startsWith('virtfn')));
  await execa(IP, ['link', 'set', 'dev', pf, 'up']);
}

/**
 * `ip link set PF name TO`, as an administrator or udev renames a NIC; up, as a running pool's
 * PF is (Linux 6.2 and later rename a netdev that is up, bd039b5ea2a9); returns the rename back.
 */
export async function renameLabPf(pf: string, to: string): Promise<() => Promise<void>> {
  await execa(IP, ['link', 'set', 'dev', pf, 'name', to]);
  return async () => void (await execa(IP, ['link', 'set', 'dev', to, 'name', pf]));
}

/**
 * A macvtap in passthrough mode on a netdev, as libvirt makes one for a guest's
 * `<interface type='direct'><source dev=… mode='passthrough'/>` (the kernel loads macvtap).
 */
export async function stackMacvtap(netdev: NetdevName): Promise<{ upper: string; release: () => Promise<void> }> {
  const upper = 'vfpmvt0';
  await execa(IP, ['link', 'add', 'link', netdev, 'name', upper, 'type', 'macvtap', 'mode', 'passthru']);
  return { upper, release: async () => void (await execa(IP, ['link', 'del', upper])) };
}

/** A fresh private directory on the guest's tmpfs (the shared root is read-only). */
export function labTempDir(prefix: string): string {
  return mkdtempSync(join('/tmp', `${prefix}-`));
}

/** The VF's PCI driver, straight from sysfs. */
export function sysfsDriverOf(vfAddr: string): string | null {
  try {
    return basename(readlinkSync(`/sys/bus/pci/devices/${vfAddr}/driver`));
  } catch {
    return null;
  }
}
