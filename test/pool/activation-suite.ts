/**
 * Pool activation and removal (seed 000) through the core, on any Host: the same assertions run
 * on the simulated host and in the lab on a real igb PF (LinuxHost over a fixture sysfs runs one
 * activation end to end: test/host/linux-host-flow.test.ts).
 */
import type { Test } from 'tap';
import { eachWithFresh } from '../helpers/suite.js';
import type { Host, VfInfo } from '../../src/host/host.js';
import type { Context } from '../../src/pool/context.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool, stopPool } from '../../src/pool/pools.js';
import type { NetdevName } from '../../src/types.js';
import { numVfsWrites, recordingHost } from '../helpers/recording-host.js';

export interface ActivationWorld {
  ctx: Context;
  pf: NetdevName;
  totalVfs: number;
  holdVfio(vf: VfInfo): Promise<{ pid: number; release: () => Promise<void> }>;
  /** `ip link set PF name TO` (the kernel keeps the PCI device and its VFs); returns the rename back. */
  renamePf(to: string): Promise<() => Promise<void>>;
  cleanup?: () => Promise<void>;
}

export function poolXml(pf: string, num: number, opts: { managed?: boolean; mode?: string; name?: string } = {}): string {
  return `<network><name>${opts.name ?? 'sriov-pool'}</name><forward mode='${opts.mode ?? 'hostdev'}' managed='${opts.managed === false ? 'no' : 'yes'}'>` +
    `<pf dev='${pf}'><vf num='${num}'/></pf></forward></network>`;
}

function withRecording(ctx: Context): { ctx: Context; calls: ReturnType<typeof recordingHost>['calls'] } {
  const r = recordingHost(ctx.host);
  return { ctx: { ...ctx, host: r.host }, calls: r.calls };
}

async function settle(host: Host, pf: NetdevName, n: number): Promise<VfInfo[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const vfs = await host.listVfs(pf);
    if (vfs.length === n || Date.now() > deadline) return vfs;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function activationSuite(t: Test, make: (t: Test) => Promise<ActivationWorld>): void {
  const world = eachWithFresh(t, make);

  world('0 -> N: the pool\'s VFs are created and, managed hostdev, bound to vfio-pci', async (t, w) => {
    const xml = poolXml(w.pf, 3);
    const { ctx, calls } = withRecording(w.ctx);
    await startPool(ctx, parsePoolXml(xml, 't'), xml);
    t.same(numVfsWrites(calls, w.pf), [3], 'one write: 3');
    const vfs = await settle(w.ctx.host, w.pf, 3);
    t.equal(vfs.length, 3);
    t.ok(vfs.every((v) => v.driver === 'vfio-pci'), 'all on vfio-pci');
    t.ok(w.ctx.store.read().pools['sriov-pool'], 'pool recorded active');
  });

  world('unmanaged passthrough pool: VFs keep their host driver', async (t, w) => {
    const xml = poolXml(w.pf, 2, { managed: false, mode: 'passthrough' });
    await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
    const vfs = await settle(w.ctx.host, w.pf, 2);
    t.ok(vfs.every((v) => v.driver !== 'vfio-pci' && v.netdev), 'host driver and netdev');
  });

  world('N -> M goes through 0 (the kernel refuses N -> M with EBUSY)', async (t, w) => {
    await w.ctx.host.writeNumVfs(w.pf, 2);
    await settle(w.ctx.host, w.pf, 2);
    const xml = poolXml(w.pf, 4);
    const { ctx, calls } = withRecording(w.ctx);
    await startPool(ctx, parsePoolXml(xml, 't'), xml);
    t.same(numVfsWrites(calls, w.pf), [0, 4]);
    t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 4);
  });

  world('N -> N leaves the VFs and their settings untouched', async (t, w) => {
    const xml = poolXml(w.pf, 2, { managed: false });
    await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
    await settle(w.ctx.host, w.pf, 2);
    await w.ctx.host.setVfLink(w.pf, 1 as never, { mac: '52:54:00:00:00:42' as never });
    await stopPool(w.ctx, 'sriov-pool', { refuse: true }).catch(() => undefined);
    await w.ctx.host.writeNumVfs(w.pf, 2);
    await settle(w.ctx.host, w.pf, 2);
    await w.ctx.host.setVfLink(w.pf, 1 as never, { mac: '52:54:00:00:00:42' as never });
    const { ctx, calls } = withRecording(w.ctx);
    await startPool(ctx, parsePoolXml(xml, 't'), xml);
    t.same(numVfsWrites(calls, w.pf), [], 'no write to sriov_numvfs');
    t.equal((await w.ctx.host.getVfLinks(w.pf)).get(1)!.mac, '52:54:00:00:00:42', 'MAC kept');
  });

  world('more VFs than sriov_totalvfs is refused before any change (exit 2)', async (t, w) => {
    const xml = poolXml(w.pf, w.totalVfs + 1);
    const { ctx, calls } = withRecording(w.ctx);
    await t.rejects(startPool(ctx, parsePoolXml(xml, 't'), xml), {
      exitCode: 2,
      message: new RegExp(`<vf num='${w.totalVfs + 1}'> on PF ${w.pf} is more than its sriov_totalvfs ${w.totalVfs}`),
    });
    t.same(numVfsWrites(calls, w.pf), []);
    t.notOk(w.ctx.store.read().pools['sriov-pool'], 'not recorded active');
  });

  world('--dry-run plans and changes nothing', async (t, w) => {
    const xml = poolXml(w.pf, 2);
    const { ctx, calls } = withRecording(w.ctx);
    const r = await startPool(ctx, parsePoolXml(xml, 't'), xml, { dryRun: true });
    t.same(r.actions.map((a) => a.kind), ['write-numvfs', 'await-vfs', 'bind-vfs']);
    t.same(numVfsWrites(calls, w.pf), []);
    t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 0);
    t.notOk(w.ctx.store.read().pools['sriov-pool']);
  });

  world('removal and count changes are refused while a VF is in use', async (t, w) => {
    const xml = poolXml(w.pf, 2);
    await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
    const vfs = await settle(w.ctx.host, w.pf, 2);
    const holder = await w.holdVfio(vfs[1]!);
    try {
      await t.rejects(stopPool(w.ctx, 'sriov-pool', { refuse: true }), {
        exitCode: 3,
        message: new RegExp(`cannot remove VFs: ${w.pf} keeps its 2 VFs: VF 1 \\(${vfs[1]!.address}\\) is in use by pid ${holder.pid} holding /dev/vfio/`),
      });
      t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 2, 'VFs left alone');
      t.ok(w.ctx.store.read().pools['sriov-pool'], 'still active');
      const bigger = poolXml(w.pf, 3);
      await t.rejects(startPool(w.ctx, parsePoolXml(bigger, 't'), bigger, { allowActive: true }), { exitCode: 3, message: /cannot change .* from 2 to 3 VFs/ });
      const r = await stopPool(w.ctx, 'sriov-pool', { refuse: false });
      t.equal(r.kept.length, 1, 'libvirt\'s stopped end keeps the PF and says why');
      t.match(r.kept[0]!.reason, /is in use by pid/);
      t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 2, 'VFs still there');
      t.notOk(w.ctx.store.read().pools['sriov-pool'], 'pool marked stopped');
    } finally {
      await holder.release();
    }
  });

  world('stop removes the VFs; stopping again is a conflict for a person, a no-op for libvirt', async (t, w) => {
    const xml = poolXml(w.pf, 2);
    await w.ctx.registry.define(xml, 't');
    await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
    await settle(w.ctx.host, w.pf, 2);
    await stopPool(w.ctx, 'sriov-pool', { refuse: true });
    t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 0);
    t.same(await w.ctx.host.listVfs(w.pf), []);
    await t.rejects(stopPool(w.ctx, 'sriov-pool', { refuse: true }), { exitCode: 3, message: /is not active/ });
    const again = await stopPool(w.ctx, 'sriov-pool', { refuse: false });
    t.equal(again.wasActive, false);
    w.ctx.registry.undefine('sriov-pool');
    await t.rejects(stopPool(w.ctx, 'sriov-pool', { refuse: true }), { exitCode: 2, message: "unknown pool 'sriov-pool'" }, 'neither defined nor running: a typo, not a stopped pool');
  });

  world('a pool that only names a PF (no <vf num>) never changes its count', async (t, w) => {
    await w.ctx.host.writeNumVfs(w.pf, 2);
    await settle(w.ctx.host, w.pf, 2);
    const xml = `<network><name>p</name><forward mode='passthrough'><pf dev='${w.pf}'/></forward></network>`;
    const { ctx, calls } = withRecording(w.ctx);
    await startPool(ctx, parsePoolXml(xml, 't'), xml);
    await stopPool(ctx, 'p', { refuse: true });
    t.same(numVfsWrites(calls, w.pf), []);
    t.equal((await w.ctx.host.getPf(w.pf)).numVfs, 2);
  });

  world('a PF renamed under the running pool is still its PF: the stop removes the VFs there', async (t, w) => {
    const xml = poolXml(w.pf, 2);
    await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
    await settle(w.ctx.host, w.pf, 2);
    const back = await w.renamePf('vfplan0');
    try {
      const renamed = 'vfplan0' as NetdevName;
      t.equal((await w.ctx.host.getPf(renamed)).numVfs, 2, 'the kernel kept the VFs under the new name');
      const r = await stopPool(w.ctx, 'sriov-pool', { refuse: true });
      t.same(r.gone, [], 'not taken for gone');
      t.equal((await w.ctx.host.getPf(renamed)).numVfs, 0, 'its VFs removed');
      t.notOk(w.ctx.store.read().pools['sriov-pool']);
    } finally {
      await back();
    }
  });
}
