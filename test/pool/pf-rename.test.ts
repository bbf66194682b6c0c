import t, { type Test } from 'tap';
import type { SimState } from '../../src/host/sim-kernel.js';
import type { NetdevName } from '../../src/types.js';
import { mendPools, startPool, stopPool } from '../../src/pool/pools.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { prepareGuest, releaseGuest } from '../../src/pool/guests.js';
import { listPools } from '../../src/pool/status.js';
import { reconcile } from '../../src/pool/reconcile.js';
import { makeGuestWorld, type GuestWorld } from '../helpers/guest-world.js';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

/**
 * A PF renamed under a running pool (`ip link set eth1 name lan0`, udev): the kernel keeps the
 * PCI device and its VFs and changes only /sys/class/net's name, on the simulated host as in the
 * fixture sysfs. The pool finds its PF by the PCI address recorded at its start.
 */

const rename = (from: string, to: string) => (s: SimState) => void (s.pfs.find((p) => p.name === from)!.name = to);
const pf = (name: string) => name as NetdevName;
const domain = (name: string, pool: string) =>
  parseDomainXml(domainXml('prepare', { name, vfpool: `<vfpool:hostdev pool='${pool}' mac='52:54:00:00:00:01'/>` }), 'test');
const CREATES = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward></network>`;
const BINDS = `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward></network>`;

async function eachKind(t: Test, body: (w: GuestWorld, kind: string) => Promise<void>, seed?: Parameters<typeof makeGuestWorld>[2]): Promise<void> {
  for (const kind of ['sim', 'fixture'] as const) await body(makeGuestWorld(t, kind, seed), kind);
}

t.test('a pool whose PF was renamed is stopped on that PF: the VFs it created are removed, those it bound get their driver back', async (t) => {
  await eachKind(t, async (w, kind) => {
    await w.addPool('p', CREATES);
    await w.editKernel(rename('eth1', 'lan0'));
    const r = await stopPool(w.ctx, 'p', { refuse: true });
    t.same(r.gone, [], `${kind}: the PF is not taken for gone`);
    t.equal((await w.host.getPf(pf('lan0'))).numVfs, 0, `${kind}: lan0's VFs removed`);
    t.same(w.ctx.store.read().pools, {});
  });
  await eachKind(t, async (w, kind) => {
    await w.addPool('p', BINDS);
    await w.editKernel(rename('eth1', 'lan0'));
    await stopPool(w.ctx, 'p', { refuse: true });
    t.same((await w.host.listVfs(pf('lan0'))).map((v) => v.driver), ['iavf', 'iavf', 'iavf', 'iavf'], `${kind}: every VF has its driver back`);
  });
});

t.test('a NIC that took the freed name is not the pool\'s PF: its VFs are left alone', async (t) => {
  const seed = { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 0 }, { name: 'eth2', totalVfs: 8, numVfs: 3 }] };
  await eachKind(t, async (w, kind) => {
    await w.addPool('p', CREATES);
    await w.editKernel((s) => (rename('eth1', 'lan0')(s), rename('eth2', 'eth1')(s)));
    await stopPool(w.ctx, 'p', { refuse: true });
    t.equal((await w.host.getPf(pf('lan0'))).numVfs, 0, `${kind}: the pool's PF, now lan0, emptied`);
    t.equal((await w.host.getPf(pf('eth1'))).numVfs, 3, `${kind}: the other NIC, now eth1, keeps its VFs`);
  }, seed);
  // Unplugged, and its name taken: nothing of the pool is left, and the NIC that took the name is not touched.
  const w = makeGuestWorld(t, 'sim', seed);
  await w.addPool('p', CREATES);
  await w.editKernel((s) => {
    s.pfs = s.pfs.filter((p) => p.name !== 'eth1');
    rename('eth2', 'eth1')(s);
  });
  const r = await stopPool(w.ctx, 'p', { refuse: true });
  t.same(r.gone, ['eth1'], 'said to be gone');
  t.equal((await w.host.getPf(pf('eth1'))).numVfs, 3, 'the NIC that took its name keeps its VFs');
});

t.test('after the rename, guests still get VFs of the running pool, and net-list counts them', async (t) => {
  await eachKind(t, async (w, kind) => {
    await w.addPool('p', CREATES);
    await w.editKernel(rename('eth1', 'lan0'));
    t.match(await listPools(w.ctx), [{ name: 'p', active: true, vfs: 2, inUse: 0 }], `${kind}: net-list`);
    const r = await prepareGuest(w.ctx, domain('vm1', 'p'), w.opts);
    t.match(r.vfs, [{ pf: 'lan0', vfAddr: '0000:3b:02.0' }], `${kind}: prepared on lan0`);
    await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
  });
});

t.test('what libvirt\'s stop had to leave on a PF renamed since is removed by reconcile', async (t) => {
  await eachKind(t, async (w, kind) => {
    await w.addPool('p', CREATES);
    await prepareGuest(w.ctx, domain('vm1', 'p'), { ...w.opts, via: 'cli' });
    const stopped = await stopPool(w.ctx, 'p', { refuse: false });
    t.equal(stopped.kept.length, 1, `${kind}: kept while vm1 holds a VF`);
    await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
    await w.editKernel(rename('eth1', 'lan0'));
    const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0, dryRun: false });
    t.match(r.leftovers, [{ pool: 'p', pf: 'eth1', what: 'removed the 2 VFs of lan0 it left when libvirt stopped it: none is in use now', kept: false }], kind);
    t.equal((await w.host.getPf(pf('lan0'))).numVfs, 0);
    t.same(w.ctx.store.read().leftovers, []);
  });
});

t.test('a start killed half-way on a PF renamed since is undone on that PF', async (t) => {
  await eachKind(t, async (w, kind) => {
    await w.ctx.host.writeNumVfs(pf('eth1'), 4);
    const xml = CREATES;
    await startPool(w.ctx, parsePoolXml(xml, 'p'), xml);
    // What a killed start leaves: its intent, with the count from before, and a dead worker.
    await w.ctx.store.update((s) => void (s.pools.p!.change = { kind: 'starting', worker: 999_999_999, since: new Date().toISOString(), from: [{ pf: pf('eth1'), numVfs: 4 }] }));
    await w.editKernel(rename('eth1', 'lan0'));
    t.same(await mendPools(w.ctx), [{ pool: 'p', interrupted: 'start', what: 'undid its interrupted start' }], kind);
    t.equal((await w.host.getPf(pf('lan0'))).numVfs, 4, `${kind}: lan0 has its count from before the start`);
  }, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 0 }] });
});

t.test('a pool recorded before PF addresses were kept (an older vfpool\'s start) is stopped by its PF\'s name, as then', async (t) => {
  const w = makeGuestWorld(t, 'sim', { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 0 }] });
  await w.addPool('p', CREATES);
  await w.ctx.store.update((s) => void delete s.pools.p!.pfAddresses);
  await stopPool(w.ctx, 'p', { refuse: true });
  t.equal((await w.host.getPf(pf('eth1'))).numVfs, 0);
  t.same(w.ctx.store.read().pools, {});
});

t.test('doctor says a running pool\'s PF was renamed, and what its next start needs, not that the PF is missing', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  t.equal((await runCliInProcess(['net-start', 'sriov-pool'], w.env)).exitCode, 0);
  const s = JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
  rename('eth1', 'lan0')(s);
  s.pfs[0]!.numVfs = 3;
  s.pfs[0]!.vfs = s.pfs[0]!.vfs.slice(0, 3);
  writeFileSync(w.hostFile, JSON.stringify(s));
  const checks = JSON.parse((await runCliInProcess(['doctor', '--json'], w.env)).stdout).checks as Array<{ id: string; ok: boolean; found: string; fix: string }>;
  t.match(checks.find((c) => c.id === 'pool:sriov-pool'), {
    ok: false,
    found: "PF eth1 is called lan0 now (the same PCI device): the running pool still uses it, but its next start looks for eth1; the pool is active with 4 VF(s) on lan0, but lan0 has 3 now (sriov_numvfs changed outside vfpool)",
    fix: /^write <pf dev='lan0'> in the pool's definition \(or the libvirt network carrying it\) before its next start; /,
  });
});
