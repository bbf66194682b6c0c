/**
 * One vfpool world for the guest tests, on either kind of machine: the simulated host (where the
 * guest behaviour is tested), or LinuxHost on a fixture sysfs tree (fixture-kernel.ts, with the
 * fake `ip`) for the end-to-end path: config and state in a testdir, a PF eth1 with 4 VFs on
 * their host driver.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { scratchDir } from './scratch.js';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.js';
import type { Host } from '../../src/host/host.js';
import { SimHost } from '../../src/host/sim-host.js';
import * as kernel from '../../src/host/sim-kernel.js';
import { createContext, type Context } from '../../src/pool/context.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool } from '../../src/pool/pools.js';
import type { GuestOptions } from '../../src/pool/guests.js';
import type { NetdevName } from '../../src/types.js';
import { fakeVfioHolder, fixtureLinuxHost, loadKernel, makeFixtureKernel, saveAndRender } from './fixture-kernel.js';

export type HostKind = 'sim' | 'fixture';

export interface GuestWorld {
  kind: HostKind;
  dir: string;
  settings: Settings;
  ctx: Context;
  /** The unwrapped host (tests may wrap ctx.host). */
  host: Host;
  pf: NetdevName;
  opts: GuestOptions;
  definePool(name: string, xml: string): void;
  /** Defines the pool and starts it (`net-define`, `net-start`): guests get VFs of started pools only. */
  addPool(name: string, xml: string): Promise<void>;
  /** Edits the machine's kernel state directly (a PF going down, a renumbering…). */
  editKernel(fn: (s: kernel.SimState) => void): Promise<void>;
  /** Makes `pid` hold the VF's /dev/vfio/GROUP open. */
  holdVfio(vfAddr: string, pid: number): Promise<void>;
  /** Everything a guest operation may change: every VF as the host reports it, and vfpool's state. */
  snapshot(): Promise<unknown>;
}

export const SEED: kernel.SimSeed = { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }] };

export const POOLS = {
  /** Unmanaged hostdev: VFs stay on their host driver until a guest gets one (vfio-pci then). */
  hd: `<network><name>hd</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`,
  /** Seed 004: a passthrough pool given only a PF hands out its VFs' netdevs. */
  pt: `<network><name>pt</name><forward mode='passthrough'><interface dev='eth1'/></forward></network>`,
  /** Seed 002: a virtio-net NIC on this network gets a VF partner with its MAC. */
  hy: `<network><name>hy</name><forward mode='pci-passthrough-hybrid'><pf dev='eth1'/></forward></network>`,
};

/** `spawnIp`: on the fixture, run the fake `ip` as a process (LinuxHost's real runner), not in-process. */
export function makeGuestWorld(t: Test, kind: HostKind, seed: kernel.SimSeed = SEED, opts: { spawnIp?: boolean } = {}): GuestWorld {
  const dir = scratchDir(t);
  const settings: Settings = {
    ...DEFAULT_SETTINGS,
    configDir: join(dir, 'etc'),
    stateDir: join(dir, 'run'),
    journalDir: join(dir, 'journal'),
    host: kind === 'sim' ? `sim:${join(dir, 'host.json')}` : 'linux',
  };
  mkdirSync(join(settings.configDir, 'networks'), { recursive: true });
  mkdirSync(join(dir, 'libvirt-run'), { recursive: true });
  let host: Host;
  let editKernel: GuestWorld['editKernel'];
  let holdVfio: GuestWorld['holdVfio'];
  if (kind === 'sim') {
    // Where fakeLibvirtQemu writes the command line of a process the test makes a QEMU.
    settings.procRoot = join(dir, 'proc');
    const file = join(dir, 'host.json');
    writeFileSync(file, JSON.stringify(kernel.fillSimState(seed)));
    const sim = new SimHost(file);
    host = sim;
    editKernel = async (fn) => {
      const s = JSON.parse(readFileSync(file, 'utf8')) as kernel.SimState;
      fn(s);
      writeFileSync(file, JSON.stringify(s));
    };
    holdVfio = (addr, pid) => sim.holdVfioGroup(addr as never, pid);
  } else {
    const fx = makeFixtureKernel(join(dir, 'fx'), seed);
    // What prepare reads of this process for a libvirt guest's hotplug delivery: root with every
    // capability, no cgroup2 (tests of the refusals pass their own facts).
    settings.procRoot = fx.proc;
    mkdirSync(join(fx.proc, 'self'), { recursive: true });
    writeFileSync(join(fx.proc, 'self/status'), 'Name:\tnode\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n');
    writeFileSync(join(fx.proc, 'self/mounts'), 'proc /proc proc rw 0 0\n');
    host = fixtureLinuxHost(fx, opts);
    editKernel = async (fn) => {
      const s = loadKernel(fx.root);
      fn(s);
      saveAndRender(fx.root, s);
    };
    holdVfio = async (addr, pid) => {
      const vf = loadKernel(fx.root).pfs.flatMap((p) => p.vfs).find((v) => v.address === addr)!;
      fakeVfioHolder(fx, pid, vf.iommuGroup);
    };
  }
  const ctx: Context = { ...createContext(settings, 'test'), host };
  const pf = 'eth1' as NetdevName;
  return {
    kind,
    dir,
    settings,
    ctx,
    host,
    pf,
    opts: { via: 'libvirt', libvirtRunDir: join(dir, 'libvirt-run'), procRoot: settings.procRoot, etcDir: '/etc' },
    definePool(name, xml) {
      writeFileSync(join(settings.configDir, 'networks', `${name}.xml`), xml);
    },
    async addPool(name, xml) {
      this.definePool(name, xml);
      await startPool(ctx, parsePoolXml(xml, name), xml);
    },
    editKernel,
    holdVfio,
    async snapshot() {
      const links = await host.getVfLinks(pf);
      const vfs = [];
      for (const vf of await host.listVfs(pf)) {
        vfs.push({
          ...vf,
          link: links.get(vf.index),
          mtu: vf.netdev ? await host.getMtu(vf.netdev) : null,
          vfioOwner: vf.driver === 'vfio-pci' && vf.iommuGroup ? await host.getVfioGroupOwner(vf.iommuGroup) : null,
        });
      }
      return { pf: await host.getPf(pf), vfs, state: ctx.store.read() };
    },
  };
}

/** The VF of `pf` at an address, as the host reports it now, with its link settings. */
export async function vfNow(host: Host, pf: NetdevName, addr: string) {
  const vf = (await host.listVfs(pf)).find((v) => v.address === addr);
  if (!vf) throw new Error(`no VF ${addr}`);
  return { ...vf, link: (await host.getVfLinks(pf)).get(vf.index)!, mtu: vf.netdev ? await host.getMtu(vf.netdev) : null };
}
