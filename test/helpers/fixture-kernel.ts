/**
 * A fake kernel behind a fixture sysfs tree, for testing LinuxHost without SR-IOV hardware
 * (in the manner of libvirt's tests/virpcimock.c, which fakes sysfs under a root directory).
 *
 * What it models: the simulated kernel's state (src/host/sim-kernel.ts) rendered as the files
 * and links LinuxHost reads — /sys/class/net/PF/device/{sriov_totalvfs,sriov_numvfs,virtfnN},
 * VF {physfn,driver,net/,iommu_group,driver_override}, /sys/bus/pci/{devices,drivers_probe,
 * drivers/D/{bind,unbind}}, class/net/X/{mtu,flags,ifindex} — and the side effects of writes to
 * them, through LinuxHost's injectable sysfs writer; plus a fake `ip` that records its argv and
 * answers `-j -d link show` and `link set … vf …` like iproute2 on that kernel, in-process
 * through LinuxHost's injectable runner (`runIp`) or as an executable at `ipPath`, and a
 * fake /proc whose fd links make a pid look like QEMU holding /dev/vfio/GROUP.
 * What it does not model: timing (writes take effect at once), udev renames, real errno from
 * drivers other than the sim kernel's, and write-only attributes: the kernel's `bind`, `unbind`
 * and `drivers_probe` are EACCES to read even for root, while these plain files are readable
 * (only the lab catches code that reads them).
 */
import { LinuxHost } from '../../src/host/linux-host.js';
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as kernel from '../../src/host/sim-kernel.js';
import { HostError } from '../../src/errors.js';
import type { IpRunner } from '../../src/host/linux-host.js';
import { fakeIp } from './fake-ip.js';

export interface FixtureKernel {
  root: string;
  sysfs: string;
  proc: string;
  dev: string;
  ipPath: string;
  ipLog: string;
  writeSysfs: (path: string, value: string) => Promise<void>;
  /** The fake `ip` in-process (same answers, same ip-calls.jsonl record), for LinuxHost's runIp. */
  runIp: IpRunner;
  state(): kernel.SimState;
}

function stateFile(root: string): string {
  return join(root, 'kernel.json');
}

export function loadKernel(root: string): kernel.SimState {
  return JSON.parse(readFileSync(stateFile(root), 'utf8')) as kernel.SimState;
}

type Entry = { kind: 'dir' } | { kind: 'file'; content: string } | { kind: 'link'; target: string };
/** The rendered tree as path (relative to the fixture root) -> what is there. */
type Tree = Record<string, Entry>;

function treeFile(root: string): string {
  return join(root, 'tree.json');
}

/** What the tree must hold for a state: files and links under sys/, and dev/vfio nodes. */
function renderTree(state: kernel.SimState): Tree {
  const tree: Tree = {};
  const dir = (path: string) => {
    for (let d = path; d !== '.' && !tree[d]; d = dirname(d)) tree[d] = { kind: 'dir' };
  };
  const file = (path: string, content: string) => {
    dir(dirname(path));
    tree[path] = { kind: 'file', content };
  };
  const ln = (target: string, path: string) => {
    dir(dirname(path));
    tree[path] = { kind: 'link', target };
  };
  const devices = 'sys/devices/pci0000:00';
  for (const d of new Set<string>(state.drivers)) {
    file(join('sys/bus/pci/drivers', d, 'bind'), '');
    file(join('sys/bus/pci/drivers', d, 'unbind'), '');
  }
  file('sys/bus/pci/drivers_probe', '');
  let ifindex = 2;
  const netdev = (name: string, devDir: string, mtu: number, up: boolean) => {
    const d = join('sys/class/net', name);
    file(join(d, 'ifindex'), `${ifindex++}\n`);
    file(join(d, 'mtu'), `${mtu}\n`);
    file(join(d, 'flags'), up ? '0x1003\n' : '0x1002\n');
    ln(devDir, join(d, 'device'));
    dir(join(devDir, 'net', name));
  };
  for (const pf of state.pfs) {
    const pfDir = join(devices, pf.address);
    file(join(pfDir, 'sriov_totalvfs'), `${pf.totalVfs}\n`);
    file(join(pfDir, 'sriov_numvfs'), `${pf.numVfs}\n`);
    file(join(pfDir, 'sriov_drivers_autoprobe'), pf.autoprobe ? '1\n' : '0\n');
    ln(join('sys/bus/pci/drivers', pf.driver), join(pfDir, 'driver'));
    ln(pfDir, join('sys/bus/pci/devices', pf.address));
    netdev(pf.name, pfDir, pf.mtu, pf.up);
    for (const vf of pf.vfs) {
      const vfDir = join(devices, vf.address);
      dir(vfDir);
      ln(relative(pfDir, vfDir), join(pfDir, `virtfn${vf.index}`));
      ln(relative(vfDir, pfDir), join(vfDir, 'physfn'));
      ln(vfDir, join('sys/bus/pci/devices', vf.address));
      file(join(vfDir, 'driver_override'), `${vf.driverOverride ?? '(null)'}\n`);
      ln(join('sys/kernel/iommu_groups', vf.iommuGroup), join(vfDir, 'iommu_group'));
      ln(vfDir, join('sys/kernel/iommu_groups', vf.iommuGroup, 'devices', vf.address));
      if (vf.driver) ln(join('sys/bus/pci/drivers', vf.driver), join(vfDir, 'driver'));
      if (vf.netdev) netdev(vf.netdev, vfDir, vf.mtu, true);
      for (const u of vf.netdev ? vf.uppers ?? [] : []) ln(`../${u}`, join('sys/class/net', vf.netdev!, `upper_${u}`));
      // A group node, like the kernel's, appears with vfio-pci; unlike it, it stays afterwards
      // (kept out of the tree, so neither a re-render nor a driver change resets its owner).
      if (vf.driver === 'vfio-pci') tree[join('dev/vfio', vf.iommuGroup)] = { kind: 'file', content: '' };
    }
  }
  return tree;
}

const same = (a: Entry | undefined, b: Entry): boolean =>
  a !== undefined && a.kind === b.kind && (a.kind !== 'file' || a.content === (b as typeof a).content) && (a.kind !== 'link' || a.target === (b as typeof a).target);

/**
 * Saves the state and brings the tree on disk to it, touching only what changed: a VF setting
 * changes a file or two, not the few hundred a full re-render rewrote. The previous tree is
 * read from disk, not memory, because the spawned fake `ip` changes the kernel as well.
 */
export function saveAndRender(root: string, state: kernel.SimState): void {
  writeFileSync(stateFile(root), JSON.stringify(state));
  const old: Tree = existsSync(treeFile(root)) ? JSON.parse(readFileSync(treeFile(root), 'utf8')) : {};
  const next = renderTree(state);
  const abs = (p: string) => join(root, p);
  // Children before parents when removing; a removed directory takes its contents with it.
  for (const p of Object.keys(old).sort().reverse()) {
    if (p.startsWith('dev/') || same(next[p], old[p]!)) continue;
    rmSync(abs(p), { recursive: true, force: true });
  }
  // Parents before children when creating.
  for (const p of Object.keys(next).sort()) {
    const e = next[p]!;
    if (same(old[p], e)) continue;
    if (e.kind === 'dir') mkdirSync(abs(p), { recursive: true });
    else if (e.kind === 'link') {
      mkdirSync(dirname(abs(p)), { recursive: true });
      // Absolute targets are relative to the fixture root; virtfn/physfn links are relative.
      symlinkSync(e.target.startsWith('sys/') ? abs(e.target) : e.target, abs(p));
    } else if (!(p.startsWith('dev/') && existsSync(abs(p)))) {
      mkdirSync(dirname(abs(p)), { recursive: true });
      writeFileSync(abs(p), e.content);
    }
  }
  // dev/ nodes are never removed: remember them so they are not created twice.
  for (const [p, e] of Object.entries(old)) if (p.startsWith('dev/') && !next[p]) next[p] = e;
  writeFileSync(treeFile(root), JSON.stringify(next));
}

function errnoError(err: unknown): Error {
  if (err instanceof HostError && err.code) return Object.assign(new Error(`${err.code}: ${err.message}`), { code: err.code });
  return err as Error;
}

/** The kernel side of a sysfs write, by path. */
function kernelWrite(root: string, path: string, value: string): void {
  const rel = relative(join(root, 'sys'), path);
  const v = value.trim();
  const state = loadKernel(root);
  let m: RegExpExecArray | null;
  try {
    if ((m = /^class\/net\/([^/]+)\/device\/sriov_numvfs$/.exec(rel))) {
      kernel.writeNumVfs(state, m[1]!, Number(v));
    } else if ((m = /^bus\/pci\/devices\/([^/]+)\/driver_override$/.exec(rel))) {
      kernel.setDriverOverride(state, m[1]!, v === '' ? null : v);
    } else if ((m = /^bus\/pci\/devices\/([^/]+)\/driver\/unbind$/.exec(rel))) {
      if (v !== m[1]) throw Object.assign(new Error('ENODEV'), { code: 'ENODEV' });
      kernel.unbindDriver(state, m[1]!);
    } else if (rel === 'bus/pci/drivers_probe') {
      kernel.probeDriver(state, v);
    } else if ((m = /^bus\/pci\/drivers\/([^/]+)\/bind$/.exec(rel))) {
      const { vf } = kernel.findVfByAddress(state, v);
      if (vf.driver !== null) throw Object.assign(new Error('EBUSY'), { code: 'EBUSY' });
      vf.driver = m[1]!;
    } else {
      throw Object.assign(new Error(`EACCES: fixture kernel has no writable attribute ${rel}`), { code: 'EACCES' });
    }
  } catch (err) {
    throw errnoError(err);
  }
  saveAndRender(root, state);
}

const HERE = dirname(fileURLToPath(import.meta.url));

/** Builds the fixture: a sysfs tree, /proc, /dev, and the fake `ip`, from a sim seed. */
export function makeFixtureKernel(root: string, seed: kernel.SimSeed): FixtureKernel {
  mkdirSync(root, { recursive: true });
  saveAndRender(root, kernel.fillSimState(seed));
  const ipPath = join(root, 'ip');
  const ipLog = join(root, 'ip-calls.jsonl');
  writeFileSync(
    join(root, 'ip-main.mjs'),
    `import { fakeIp } from ${JSON.stringify(join(HERE, 'fake-ip.js'))};\n` +
      `const r = fakeIp(${JSON.stringify(root)}, process.argv.slice(2));\n` +
      'process.stdout.write(r.stdout);\nprocess.stderr.write(r.stderr);\nprocess.exitCode = r.exitCode;\n',
  );
  // A sh wrapper: node-tap puts its loader into every child's NODE_OPTIONS, which breaks an
  // extensionless ESM script; and `ip` must be an executable at a path, as iproute2's is.
  writeFileSync(ipPath, `#!/bin/sh\nunset NODE_OPTIONS\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(root, 'ip-main.mjs'))} "$@"\n`);
  chmodSync(ipPath, 0o755);
  mkdirSync(join(root, 'proc'), { recursive: true });
  return {
    root,
    sysfs: join(root, 'sys'),
    proc: join(root, 'proc'),
    dev: join(root, 'dev'),
    ipPath,
    ipLog,
    writeSysfs: async (path, value) => kernelWrite(root, path, value),
    runIp: async (_ipPath, args) => fakeIp(root, args),
    state: () => loadKernel(root),
  };
}

/** Makes `pid` look like a process holding /dev/vfio/GROUP (a `/proc/PID/fd/N` link). */
/** A device stacked on a VF's netdev (a macvtap), as `ip link add link VF … type macvtap` makes one: its upper_NAME link. */
export function fakeStackedDevice(fx: FixtureKernel, netdev: string, upper: string): () => void {
  const change = (f: (vf: kernel.SimVf) => void) => {
    const state = fx.state();
    const vf = state.pfs.flatMap((p) => p.vfs).find((v) => v.netdev === netdev);
    if (!vf) throw new Error(`fixture: no VF netdev ${netdev}`);
    f(vf);
    saveAndRender(fx.root, state);
  };
  change((vf) => (vf.uppers = [...(vf.uppers ?? []), upper]));
  return () => change((vf) => (vf.uppers = (vf.uppers ?? []).filter((u) => u !== upper)));
}

export function fakeVfioHolder(fx: FixtureKernel, pid: number, group: string): () => void {
  const dir = join(fx.proc, String(pid), 'fd');
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(dir, '7'))) symlinkSync(`/dev/vfio/${group}`, join(dir, '7'));
  return () => rmSync(join(fx.proc, String(pid)), { recursive: true, force: true });
}

/**
 * LinuxHost over this fixture kernel. The fake `ip` answers in-process unless `spawnIp`: then
 * each call starts it as a process through LinuxHost's own runner (execa), as iproute2 runs.
 */
export function fixtureLinuxHost(fx: FixtureKernel, opts: { spawnIp?: boolean } = {}): LinuxHost {
  return new LinuxHost({
    sysfsRoot: fx.sysfs,
    procRoot: fx.proc,
    devRoot: fx.dev,
    ipPath: fx.ipPath,
    writeSysfs: fx.writeSysfs,
    runIp: opts.spawnIp ? undefined : fx.runIp,
  });
}
