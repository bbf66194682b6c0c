import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { mendPools, startPool, stopPool } from '../../src/pool/pools.js';
import { HostError } from '../../src/errors.js';
import { findVfUses } from '../../src/pool/in-use.js';
import type { SimState } from '../../src/host/sim-kernel.js';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { spawnSleeper } from '../helpers/processes.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
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

t.test('a VF another guest uses through a plain <interface type=\'direct\'> (a macvtap on its netdev) is in use', async (t) => {
  // libvirt reports such an interface to no network hook: only the kernel knows, by the macvtap
  // stacked on the VF's netdev. vfpool handed that VF to a second guest and set its MAC under
  // the first, and net-destroy removed it.
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  const xml = poolXml('eth1', 2, { managed: false });
  w.definePool('sriov-pool', xml);
  t.equal((await runCliInProcess(['net-start', 'sriov-pool'], w.env)).exitCode, 0);
  const [vf0, vf1] = await w.sim.listVfs('eth1' as NetdevName);
  await w.sim.stackOnNetdev(vf0!.netdev!, 'macvtap0');
  t.match((await findVfUses(w.sim, w.ctx.store.read(), [vf0!])).get(vf0!.address), [{ by: 'stacked', who: `macvtap0 on ${vf0!.netdev} (a guest's <interface type='direct'>, a bridge or a bond)` }]);
  const dom = `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:01'/></vfpool:domain></metadata></domain>`;
  t.equal((await runCliInProcess(['prepare', '--xml=-'], w.env, dom)).exitCode, 0);
  t.same(w.ctx.store.read().allocations.map((a) => a.vfAddr), [vf1!.address], 'the guest got the other VF');
  const named = dom.replace("pool='sriov-pool'", `netdev='${vf0!.netdev}'`).replace('vm1', 'vm2').replace(':01', ':02');
  const refused = await runCliInProcess(['prepare', '--xml=-'], w.env, named);
  t.equal(refused.exitCode, 3, 'asking for it by name is a conflict');
  t.match(refused.stderr, new RegExp(`is in use by macvtap0 on ${vf0!.netdev}`));
  const status = await runCliInProcess(['status', '--json'], w.env);
  t.match(JSON.parse(status.stdout).pfs[0].vfs[0].owner, { domain: null, stacked: ['macvtap0'], via: 'stacked' }, 'status names it');
  t.match((await runCliInProcess(['status'], w.env)).stdout, new RegExp(`${vf0!.address.replace(/\./g, '\\.')} .* macvtap0 \\(stacked\\)`));
  t.equal((await runCliInProcess(['release', 'vm1'], w.env)).exitCode, 0);
  const stop = await runCliInProcess(['net-destroy', 'sriov-pool'], w.env);
  t.equal(stop.exitCode, 3, 'net-destroy refuses');
  t.match(stop.stderr, new RegExp(`eth1 keeps its 2 VFs: VF 0 \\(${vf0!.address}, ${vf0!.netdev}\\) is in use by macvtap0`));
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'the VFs are still there');
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
    phase: 'releasing', saved: null, guestSlot: 0, requestedNetdev: null, requested: null, createdAt: new Date().toISOString(), createdMonoMs: null, worker: worker.pid,
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
  // status names the same holder: a VF net-list counts in use is not shown free.
  const status = JSON.parse((await runCliInProcess(['status', '--json'], w.env)).stdout);
  t.same(status.pfs[0].vfs.map((v: { owner: unknown }) => v.owner), [null, { domain: null, uuid: null, pool: null, pid: qemu.pid, via: 'vfio' }, null, null]);
  t.match((await runCliInProcess(['status'], w.env)).stdout, new RegExp(`${vf.address}\\s.*vfio-pci\\s.*pid ${qemu.pid} \\(/dev/vfio/${vf.iommuGroup}\\)`));
  const missing = makeSimEnv(t);
  missing.definePool('ghost', `<network><name>ghost</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>`);
  const ghost = await vfpoolCli(['net-list', '--json'], { env: missing.env });
  t.same([ghost.exitCode, JSON.parse(ghost.stdout)], [0, [{ name: 'ghost', mode: 'hostdev', active: false, state: 'inactive', persistent: true, vfs: 0, inUse: 0 }]], 'a pool whose PF is missing lists with no VFs');
});

/** A pool whose `net-start`, from eth1's 2 VFs to 4, was killed before its end: its intent left, its worker gone. */
async function interruptedStart(t: Parameters<typeof makeSimEnv>[0]): Promise<{ w: ReturnType<typeof makeSimEnv>; gone: { pid: number } }> {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  w.definePool('sriov-pool', SEED_000_POOL);
  await startPool(w.ctx, parsePoolXml(SEED_000_POOL, 't'), SEED_000_POOL);
  const gone = spawnSleeper();
  await gone.kill();
  await w.ctx.store.update((s) => {
    s.pools['sriov-pool']!.change = { kind: 'starting', worker: gone.pid, since: new Date().toISOString(), from: [{ pf: 'eth1' as NetdevName, numVfs: 2 }] };
  });
  return { w, gone };
}

t.test('reconcile reports the pool start a killed vfpool left half-way, and --dry-run says so without undoing it', async (t) => {
  const { w, gone } = await interruptedStart(t);
  // A guest asking the pool for a VF meanwhile: refused. It got one, and the reconcile below
  // then stopped the pool under it ('pool sriov-pool (stopped): eth1 keeps its 4 VFs').
  const xml = `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:01'/></vfpool:domain></metadata></domain>`;
  t.same(await runCliInProcess(['prepare', '--xml=-'], w.env, xml), {
    exitCode: 3,
    stdout: '',
    stderr: `vfpool: domain 'vm1': vfpool:hostdev #1: pool 'sriov-pool' is not active: its start was interrupted (vfpool pid ${gone.pid} is gone): run \`vfpool reconcile\` (it undoes the start), then start the pool again\n`,
  });
  // net-list says so too (it said 'active').
  const list = await runCliInProcess(['net-list'], w.env);
  t.match(list.stdout, /│ sriov-pool │ hostdev │ start-interrupted │ yes/);
  t.equal(list.stderr, "vfpool: warning: pool 'sriov-pool' is not active: its start was killed half-way, and guests are refused: run `vfpool reconcile` (it undoes the start), then start the pool again\n");
  t.match(JSON.parse((await runCliInProcess(['net-list', '--json'], w.env)).stdout), [{ name: 'sriov-pool', state: 'start-interrupted' }]);
  const before = readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8');
  const dry = await runCliInProcess(['reconcile', '--dry-run'], w.env);
  t.equal(dry.exitCode, 0);
  t.match(dry.stdout, new RegExp(`^pool sriov-pool: would undo its interrupted start \\(vfpool pid ${gone.pid} is gone\\)\n`));
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), before, 'the dry run changed nothing');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4);
  const r = JSON.parse((await runCliInProcess(['reconcile', '--json'], w.env)).stdout) as { pools: unknown[] };
  t.same(r.pools, [{ pool: 'sriov-pool', interrupted: 'start', what: 'undid its interrupted start' }]);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'the PF has its count from before the start');
  t.notOk(w.ctx.store.read().pools['sriov-pool'], 'the pool is not active');
});

t.test('net-destroy (or libvirt\'s stop) of a pool whose start was killed half-way undoes that start: the PF gets its count from before', async (t) => {
  for (const refuse of [true, false]) {
    const { w } = await interruptedStart(t);
    const r = await stopPool(w.ctx, 'sriov-pool', { refuse });
    t.equal(r.wasActive, true);
    t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, `refuse ${refuse}: the PF has its 2 VFs from before the start`);
    t.same(w.ctx.store.read().pools, {}, `refuse ${refuse}: the pool is stopped`);
  }
});

t.test('reconcile does not undo a start that a net-start mended after reconcile read the state', async (t) => {
  const { w } = await interruptedStart(t);
  const seen = w.ctx.store.read();
  // What reconcile read, without the lock; then a net-start of the pool mends it (the start completes).
  await w.ctx.store.update((s) => void (s.pools['sriov-pool']!.change = null));
  let reads = 0;
  const store = new Proxy(w.ctx.store, {
    get(target, prop) {
      if (prop === 'read') return () => (reads++ === 0 ? structuredClone(seen) : target.read());
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  t.same(await mendPools({ ...w.ctx, store }), [], 'nothing to mend any more');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4, 'the pool keeps its VFs');
  t.match(w.ctx.store.read().pools['sriov-pool'], { change: null }, 'and stays active');
});

t.test('an undo of an interrupted start that fails half-way stays an interrupted start: the next reconcile finishes it', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  w.definePool('sriov-pool', SEED_000_POOL);
  await startPool(w.ctx, parsePoolXml(SEED_000_POOL, 't'), SEED_000_POOL);
  const gone = spawnSleeper();
  await gone.kill();
  const interrupted = (worker: number) => ({ kind: 'starting' as const, worker, since: new Date().toISOString(), from: [{ pf: 'eth1' as NetdevName, numVfs: 2 }] });
  await w.ctx.store.update((s) => void (s.pools['sriov-pool']!.change = interrupted(gone.pid)));
  // The PF refuses to get its 2 VFs back (after the pool's 4 were removed).
  const host = new Proxy(w.sim, {
    get(target, prop) {
      if (prop === 'writeNumVfs') return async (pf: NetdevName, n: number) => (n === 2 ? Promise.reject(new HostError('injected failure', { code: 'EIO' })) : target.writeNumVfs(pf, n));
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  await t.rejects(mendPools({ ...w.ctx, host }), { message: /injected failure/ });
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4, 'the failed undo was undone in turn: the pool\'s VFs');
  t.match(w.ctx.store.read().pools['sriov-pool']?.change, { kind: 'starting', worker: process.pid, from: [{ pf: 'eth1', numVfs: 2 }] }, 'still an interrupted start, with the count to put back');
  // This process ends; the next reconcile is another one.
  await w.ctx.store.update((s) => void (s.pools['sriov-pool']!.change = interrupted(gone.pid)));
  t.same(await mendPools(w.ctx), [{ pool: 'sriov-pool', interrupted: 'start', what: 'undid its interrupted start' }]);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'the PF has its count from before the start');
  t.same(w.ctx.store.read().pools, {});
});

t.test('VFs libvirt\'s stop had to keep (one in use) are removed by reconcile once none is', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const cli = (argv: string[], stdin?: string) => runCliInProcess(argv, w.env, stdin);
  t.equal((await cli(['net-start', 'sriov-pool'])).exitCode, 0);
  const xml = `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:01'/></vfpool:domain></metadata></domain>`;
  t.equal((await cli(['prepare', '--xml=-'], xml)).exitCode, 0);
  // libvirt's `stopped end` cannot refuse: the VFs stay, and are recorded as left.
  const stopped = await stopPool(w.ctx, 'sriov-pool', { refuse: false });
  t.equal(stopped.kept.length, 1);
  t.match(w.ctx.store.read().leftovers, [{ pool: 'sriov-pool', pf: 'eth1' }]);

  const inUse = await cli(['reconcile']);
  t.match(inUse.stdout, /^pool sriov-pool \(stopped\): eth1 keeps its 4 VFs: VF 0 \(0000:3b:02\.0\) is in use by domain 'vm1'$/m);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 4, 'kept while vm1 holds one');
  t.equal((await cli(['release', 'vm1'])).exitCode, 0);
  const before = readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8');
  t.match((await cli(['reconcile', '--dry-run'])).stdout, /^pool sriov-pool \(stopped\): would remove the 4 VFs of eth1 it left when libvirt stopped it: none is in use now$/m);
  t.equal(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'), before, 'the dry run changed nothing');
  const json = JSON.parse((await cli(['reconcile', '--json'])).stdout) as { leftovers: unknown[] };
  t.same(json.leftovers, [{ pool: 'sriov-pool', pf: 'eth1', what: 'removed the 4 VFs of eth1 it left when libvirt stopped it: none is in use now', kept: false }]);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
  t.same(w.ctx.store.read().leftovers, [], 'nothing left to remember');
  t.same(JSON.parse((await cli(['reconcile', '--json'])).stdout).leftovers, [], 'a second reconcile has nothing to do');
});

t.test('VFs left by a stopped pool are the business of an active pool that draws from their PF', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  w.definePool('other', `<network><name>other</name><forward mode='passthrough'><pf dev='eth1'/></forward></network>`);
  await w.ctx.store.update((s) => {
    s.leftovers = [{ pool: 'gone-pool', pf: 'eth1' as NetdevName, since: new Date().toISOString() }];
  });
  await w.sim.writeNumVfs('eth1' as NetdevName, 2);
  t.equal((await runCliInProcess(['net-start', 'other'], w.env)).exitCode, 0);
  t.match((await runCliInProcess(['reconcile'], w.env)).stdout, /^pool gone-pool \(stopped\): eth1 keeps its 2 VFs: active pool 'other' draws from it$/m);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2);
  t.equal((await runCliInProcess(['net-destroy', 'other'], w.env)).exitCode, 0);
  t.match((await runCliInProcess(['reconcile'], w.env)).stdout, /^pool gone-pool \(stopped\): removed the 2 VFs of eth1/m);
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0);
});
