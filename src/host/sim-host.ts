import { existsSync, statSync, type BigIntStats } from 'node:fs';
import { BadInputError, HostError, errnoOf } from '../errors.js';
import { macFromKernel, type NetdevName, type PciAddress, type VfIndex } from '../types.js';
import { DEFAULT_LOCK, readJsonFile, updateJsonFileLocked } from '../util/json-file.js';
import type { Host, PfInfo, VfInfo, VfLinkChange, VfLinkConfig } from './host.js';
import * as kernel from './sim-kernel.js';
import { newBootId, rebootSimState } from './sim-boot.js';
import { isAlive } from '../util/process.js';

/**
 * `VFPOOL_HOST=sim:FILE`: a machine that exists only in a JSON file, like libvirt's `test:///`
 * driver. The file starts as a seed (`{"pfs":[{"name":"eth1","totalVfs":16}]}`) and is filled
 * in on first use; from then on it holds the simulated kernel's state. Every operation is one
 * locked read-modify-write, so concurrent vfpool processes see one consistent machine.
 *
 * Queries are served from the last version this process read or wrote, as long as the file is
 * that version: same inode, size, mtime and ctime (a kernel query answers from memory, and
 * re-reading and parsing the whole file per query made a prepare on 512 VFs cost 1.4x one on
 * 8). Every vfpool writer replaces the file by rename (a new inode); an edit in place (a test,
 * a person) changes the mtime, except within the clock tick of the version read, which is why
 * a version read less than FRESH_MS after its mtime is not kept. A change starts, under the
 * lock, from the kept version only while the file still is that version; otherwise from the file.
 */
// The simulated machine is the file alone: a broken one is mended or written afresh (its VFs
// and their settings are simulated too), never "run reconcile", which reads it.
const SIM_FILE_INVALID = 'fix it, or write the simulated host afresh, e.g. {"pfs":[{"name":"eth1","totalVfs":16}]} (its VFs start from 0)';

export class SimHost implements Host {
  readonly kind = 'sim' as const;
  private kept: { key: string; state: kernel.SimState } | null = null;
  constructor(readonly file: string) {}

  private readRaw(): kernel.SimState | kernel.SimSeed {
    const before = this.stat();
    if (before && this.kept?.key === versionKey(before)) return this.kept.state;
    const raw = readJsonFile<kernel.SimState | kernel.SimSeed>(this.file, 'the simulated host file', 'VFPOOL_HOST', SIM_FILE_INVALID);
    if (raw === undefined) {
      throw new BadInputError(`simulated host file ${this.file} does not exist`, 'create it, e.g. {"pfs":[{"name":"eth1","totalVfs":16}]}');
    }
    // Stat before the read: a change in between gives the file a key other than this one.
    this.kept = before && 'version' in raw && Date.now() - Number(before.mtimeMs) > FRESH_MS ? { key: versionKey(before), state: raw } : null;
    return raw;
  }

  private stat(): BigIntStats | null {
    try {
      return statSync(this.file, { bigint: true });
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    }
  }

  private async load(): Promise<kernel.SimState> {
    const raw = this.readRaw();
    if ('version' in raw) return raw;
    // A seed is filled in once, under the lock, and written back: filling it in again on every
    // read would give the VFs of a seed with `numVfs` new random MACs each time they are read.
    return this.mutate((state) => state);
  }

  /** Applies one kernel operation atomically. */
  async mutate<R>(fn: (state: kernel.SimState) => R): Promise<R> {
    const raw = this.readRaw(); // existence, and a seed's validity, before taking the lock
    if (!('version' in raw)) kernel.fillSimState(raw);
    const kept = this.kept;
    // fn changes the state in place: should it throw half-way, nothing of it may stay kept.
    this.kept = null;
    return updateJsonFileLocked<kernel.SimState | kernel.SimSeed, R>(
      this.file,
      () => {
        // Under the lock, the file is still the version kept (every vfpool writer renames a
        // new inode over it): parsing it again (280 KB on 512 VFs, twice per prepare) would
        // give the same state.
        const st = kept ? this.stat() : null;
        if (kept && st && versionKey(st) === kept.key) return kept.state;
        return readJsonFile<kernel.SimState | kernel.SimSeed>(this.file, 'the simulated host file', 'VFPOOL_HOST', SIM_FILE_INVALID) ?? { pfs: [] };
      },
      (raw) => {
        const state = 'version' in raw ? raw : kernel.fillSimState(raw);
        // A file written before the simulated machine had one.
        state.bootId ??= newBootId();
        const result = fn(state);
        return {
          next: state,
          result,
          // Still under the lock: what was just written is the file's version (a later writer
          // renames a new inode over it). A failed write leaves nothing kept.
          afterWrite: () => {
            const st = this.stat();
            this.kept = st ? { key: versionKey(st), state } : null;
          },
        };
      },
      DEFAULT_LOCK,
      0o600,
      undefined,
      // Atomic (a rename: concurrent readers see one machine, a killed writer leaves the old
      // one), not fsynced: this file is the kernel's memory, which no power cut leaves either
      // (a real `sriov_numvfs` or `ip link set vf` writes nothing to disk). The fsyncs of a
      // 280 KB file per VF change made a prepare on 512 VFs cost 1.4x one on 8. Compact: the
      // indented file was twice the size, to write and to parse, and only programs read it.
      { fsync: false, compact: true },
    );
  }

  /** The simulated machine's boot; null while it is a seed not filled in yet, or unreadable (refused where it is used). */
  bootId(): string | null {
    try {
      const raw = this.readRaw();
      return 'version' in raw ? (raw.bootId ?? null) : null;
    } catch {
      return null;
    }
  }

  /** Tests and demos: the machine reboots (rebootSimState). */
  async reboot(): Promise<void> {
    await this.mutate(rebootSimState);
  }

  /** Tests and demos: make a process look like QEMU holding the VF's vfio group open. */
  async holdVfioGroup(dev: PciAddress, pid: number): Promise<void> {
    await this.mutate((s) => {
      const { vf } = kernel.findVfByAddress(s, dev);
      if (vf.driver !== 'vfio-pci') throw new HostError(`${dev} is not bound to vfio-pci, /dev/vfio/${vf.iommuGroup} does not exist`, { code: 'ENOENT' });
      vf.vfioHolders.push(pid);
    });
  }

  /** Test/lab helper: stacks a device (a guest's macvtap, a bridge) on a VF's netdev. */
  async stackOnNetdev(netdev: NetdevName, upper: string): Promise<void> {
    await this.mutate((s) => {
      const vf = s.pfs.flatMap((p) => p.vfs).find((v) => v.netdev === netdev);
      if (!vf) throw new HostError(`no VF netdev '${netdev}'`, { code: 'ENODEV' });
      vf.uppers = [...(vf.uppers ?? []), upper];
    });
  }

  async unstackFromNetdev(netdev: NetdevName, upper: string): Promise<void> {
    await this.mutate((s) => {
      const vf = s.pfs.flatMap((p) => p.vfs).find((v) => v.netdev === netdev);
      if (vf) vf.uppers = (vf.uppers ?? []).filter((u) => u !== upper);
    });
  }

  async listPfs(): Promise<NetdevName[]> {
    return (await this.load()).pfs.map((p) => p.name as NetdevName);
  }

  async getPf(pf: NetdevName): Promise<PfInfo> {
    const p = kernel.findPf((await this.load()), pf);
    return {
      name: p.name as NetdevName,
      address: p.address as PciAddress,
      totalVfs: p.totalVfs,
      numVfs: p.numVfs,
      driver: p.driver,
      up: p.up,
      autoprobe: p.autoprobe,
    };
  }

  async listVfs(pf: NetdevName): Promise<VfInfo[]> {
    return kernel.findPf((await this.load()), pf).vfs.map((v) => ({
      index: v.index as VfIndex,
      address: v.address as PciAddress,
      netdev: v.netdev as NetdevName | null,
      driver: v.driver,
      iommuGroup: v.iommuGroup,
    }));
  }

  async netdevDevice(netdev: NetdevName): Promise<PciAddress | null> {
    for (const p of (await this.load()).pfs) {
      if (p.name === netdev) return p.address as PciAddress;
      const v = p.vfs.find((x) => x.netdev === netdev);
      if (v) return v.address as PciAddress;
    }
    return null;
  }

  async stackedDevices(): Promise<Map<NetdevName, string[]>> {
    const out = new Map<NetdevName, string[]>();
    for (const vf of (await this.load()).pfs.flatMap((p) => p.vfs)) {
      if (vf.netdev !== null && vf.uppers?.length) out.set(vf.netdev as NetdevName, [...vf.uppers].sort());
    }
    return out;
  }

  async physfnOf(dev: PciAddress): Promise<NetdevName | null> {
    const pf = (await this.load()).pfs.find((p) => p.vfs.some((v) => v.address === dev));
    return pf ? (pf.name as NetdevName) : null;
  }

  async writeNumVfs(pf: NetdevName, count: number): Promise<void> {
    let settleMs = 0;
    let settleUntilFile: string | undefined;
    await this.mutate((s) => {
      kernel.writeNumVfs(s, pf, count);
      const p = kernel.findPf(s, pf);
      settleMs = count > 0 ? (p.settleMs ?? 0) : 0;
      settleUntilFile = count > 0 ? p.settleUntilFile : undefined;
    });
    // Like the kernel's write, which returns once the VFs are probed (outside the sim's lock).
    if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
    while (settleUntilFile !== undefined && !existsSync(settleUntilFile)) await new Promise((r) => setTimeout(r, 20));
  }

  async getVfLinks(pf: NetdevName): Promise<Map<number, VfLinkConfig>> {
    const p = kernel.findPf((await this.load()), pf);
    return new Map(
      p.vfs.map((v) => [
        v.index,
        {
          mac: macFromKernel(v.mac),
          vlan: v.vlan,
          qos: v.qos,
          spoofchk: v.spoofchk,
          trust: v.trust,
          linkState: v.linkState,
          minTxRate: v.minTxRate,
          maxTxRate: v.maxTxRate,
        },
      ]),
    );
  }

  async setVfLink(pf: NetdevName, vf: VfIndex, change: VfLinkChange): Promise<void> {
    // The kernel keeps the settings it applied before the one it refused: write the state
    // either way, then report the refusal.
    let refused: unknown = null;
    await this.mutate((s) => {
      try {
        kernel.setVfLink(s, pf, vf, change);
      } catch (err) {
        refused = err;
      }
    });
    if (refused) throw refused;
  }

  /** Tests and demos: `ip link set PF up|down` (vfpool itself never changes a PF's state). */
  async setLinkUp(pf: NetdevName, up: boolean): Promise<void> {
    await this.mutate((s) => kernel.setLinkUp(s, pf, up));
  }

  async getMtu(netdev: NetdevName): Promise<number> {
    const s = (await this.load());
    for (const p of s.pfs) {
      if (p.name === netdev) return p.mtu;
      const v = p.vfs.find((x) => x.netdev === netdev);
      if (v) return v.mtu;
    }
    throw new HostError(`no network interface '${netdev}'`, { code: 'ENOENT' });
  }

  async setMtu(netdev: NetdevName, mtu: number): Promise<void> {
    await this.mutate((s) => kernel.setMtu(s, netdev, mtu));
  }

  async bindDriver(dev: PciAddress, driver: string | null): Promise<void> {
    await this.mutate((s) => kernel.bindDriver(s, dev, driver));
  }

  async vfioGroupHolders(group: string): Promise<number[]> {
    return (await this.vfioHolders()).get(group) ?? [];
  }

  async vfioHolders(): Promise<Map<string, number[]>> {
    const holders = new Map<string, number[]>();
    for (const p of (await this.load()).pfs) {
      for (const v of p.vfs) {
        const alive = v.driver === 'vfio-pci' ? v.vfioHolders.filter(isAlive) : [];
        if (alive.length) holders.set(v.iommuGroup, alive);
      }
    }
    return holders;
  }

  async setVfioGroupOwner(group: string, uid: number, gid: number): Promise<void> {
    await this.mutate((s) => {
      for (const p of s.pfs) {
        const v = p.vfs.find((x) => x.iommuGroup === group && x.driver === 'vfio-pci');
        if (v) {
          v.vfioOwner = { uid, gid };
          return;
        }
      }
      throw new HostError(`/dev/vfio/${group} does not exist`, { code: 'ENOENT' });
    });
  }

  async getVfioGroupOwner(group: string): Promise<{ uid: number; gid: number } | null> {
    for (const p of (await this.load()).pfs) {
      const v = p.vfs.find((x) => x.iommuGroup === group && x.driver === 'vfio-pci');
      if (v) return v.vfioOwner;
    }
    return null;
  }

  async iommuGroupDevices(group: string): Promise<Array<{ address: PciAddress; driver: string | null }>> {
    return (await this.load())
      .pfs.flatMap((p) => p.vfs)
      .filter((v) => v.iommuGroup === group)
      .map((v) => ({ address: v.address as PciAddress, driver: v.driver }));
  }
}

/** See SimHost: a version read this soon after its mtime may share it with an edit in place. */
const FRESH_MS = 50;

function versionKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

