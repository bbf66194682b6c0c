import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool, stopPool } from '../../src/pool/pools.js';
import { findVfUses } from '../../src/pool/in-use.js';
import type { SimState } from '../../src/host/sim-kernel.js';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { spawnSleeper } from '../helpers/processes.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { poolXml } from './activation-suite.js';

t.test('a pool whose PF was unplugged can still be stopped: nothing to remove there, said so', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }, { name: 'eth2', totalVfs: 8 }] });
  const xml = `<network><name>two</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf><pf dev='eth2'><vf num='2'/></pf></forward></network>`;
  w.definePool('two', xml);
  await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
  const state = JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
  state.pfs = state.pfs.filter((p) => p.name !== 'eth2');
  writeFileSync(w.hostFile, JSON.stringify(state));
  const r = await vfpoolCli(['net-destroy', 'two'], { env: w.env });
  t.equal(r.exitCode, 0);
  t.equal(r.stderr, "vfpool: warning: pool 'two': PF eth2 no longer exists: nothing to remove on it\n");
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, 'the PF that is still there was emptied');
  t.notOk(w.ctx.store.read().pools.two, 'the pool is stopped');
});

t.test('--dry-run of net-start checks what the real run checks (already active: exit 3)', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  await startPool(w.ctx, parsePoolXml(SEED_000_POOL, 't'), SEED_000_POOL);
  const dry = await vfpoolCli(['net-start', 'sriov-pool', '--dry-run'], { env: w.env });
  t.same([dry.exitCode, dry.stderr], [3, "vfpool: pool 'sriov-pool' is already active: stop it with `vfpool net-destroy sriov-pool` first\n"]);
});

t.test('a VF whose owner is gone but whose release is still running counts as in use', async (t) => {
  const w = makeSimEnv(t);
  const xml = poolXml('eth1', 2, { managed: false });
  await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
  const vf = (await w.sim.listVfs('eth1' as NetdevName))[0]!;
  const worker = spawnSleeper();
  t.teardown(worker.kill);
  const state = w.ctx.store.read();
  state.allocations.push({
    pool: 'sriov-pool', pf: 'eth1' as NetdevName, vfIndex: 0, vfAddr: vf.address, netdev: vf.netdev,
    owner: { domain: 'gone', uuid: null, pid: 999_999_999 }, mac: null, vlan: null, alias: 'vfpool-vf0',
    phase: 'releasing', saved: null, guestSlot: 0, requestedNetdev: null, requested: null, createdAt: new Date().toISOString(), worker: worker.pid,
  } as never);
  const uses = await findVfUses(w.sim, state, [vf]);
  t.match(uses.get(vf.address), [{ by: 'allocation', who: new RegExp(`vfpool process ${worker.pid} working on domain 'gone'`) }]);
  // The stop reads the same state: a person's net-destroy is refused, libvirt's stop keeps the VFs.
  await w.ctx.store.update((s) => {
    s.allocations = state.allocations;
  });
  await t.rejects(stopPool(w.ctx, 'sriov-pool', { refuse: true }), {
    exitCode: 3,
    message: new RegExp(`^pool 'sriov-pool': cannot remove VFs: eth1 keeps its 2 VFs: .*vfpool process ${worker.pid} working on domain 'gone'`),
  });
  const stopped = await stopPool(w.ctx, 'sriov-pool', { refuse: false });
  t.same(stopped.actions, [], 'nothing removed');
  t.match(stopped.kept, [{ pf: 'eth1', reason: new RegExp(`vfpool process ${worker.pid}`) }]);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'the VFs stay');
});

t.test('net-list counts a VF as in use by the same rule as the in-use guard (a vfio holder too)', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  await startPool(w.ctx, parsePoolXml(SEED_000_POOL, 't'), SEED_000_POOL);
  const vf = (await w.sim.listVfs('eth1' as NetdevName))[1]!;
  const qemu = spawnSleeper();
  t.teardown(qemu.kill);
  await w.sim.holdVfioGroup(vf.address, qemu.pid);
  const list = JSON.parse((await vfpoolCli(['net-list', '--json'], { env: w.env })).stdout);
  t.match(list, [{ name: 'sriov-pool', vfs: 4, inUse: 1 }]);
  const missing = makeSimEnv(t);
  missing.definePool('ghost', `<network><name>ghost</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>`);
  const ghost = await vfpoolCli(['net-list', '--json'], { env: missing.env });
  t.same([ghost.exitCode, JSON.parse(ghost.stdout)], [0, [{ name: 'ghost', mode: 'hostdev', active: false, persistent: true, vfs: 0, inUse: 0 }]], 'a pool whose PF is missing lists with no VFs');
});
