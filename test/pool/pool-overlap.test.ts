import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, type SimEnv } from '../helpers/env.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { networkHookInProcess } from '../helpers/hook-world.js';

/** Pools that draw from the same VFs: what each start and stop leaves, in every order. */

const net = (name: string, forward: string) => `<network><name>${name}</name>${forward}</network>`;
const address = (fn: number) => `<address type='pci' domain='0' bus='0x3b' slot='2' function='${fn}'/>`;
const hostdev = (members: string, managed = 'yes') => `<forward mode='hostdev' managed='${managed}'>${members}</forward>`;
const passthrough = (members: string) => `<forward mode='passthrough'>${members}</forward>`;

function world(t: Test, pools: Record<string, string>): SimEnv & { run: (step: string) => ReturnType<typeof runCliInProcess>; drivers: () => Promise<Array<string | null>>; files: () => string } {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }] });
  for (const [n, f] of Object.entries(pools)) w.definePool(n, net(n, f));
  return {
    ...w,
    run: (step) => runCliInProcess([step[0] === '+' ? 'net-start' : 'net-destroy', step.slice(1)], w.env),
    drivers: async () => (await w.sim.listVfs('eth1' as NetdevName)).map((v) => v.driver),
    files: () => readFileSync(w.hostFile, 'utf8') + readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8'),
  };
}

t.test('two managed pools drawing from one VF: whichever stops last gives it back its driver', async (t) => {
  const cases: Record<string, Record<string, string>> = {
    'both list it': { a: hostdev(address(1)), b: hostdev(address(1)) },
    'a <pf> and an <address> of it': { a: hostdev(`<pf dev='eth1'/>`), b: hostdev(address(1)) },
  };
  for (const [what, pools] of Object.entries(cases)) {
    for (const order of [['+a', '+b', '-a', '-b'], ['+a', '+b', '-b', '-a'], ['+b', '+a', '-b', '-a'], ['+b', '+a', '-a', '-b']]) {
      const w = world(t, pools);
      for (const step of order) t.equal((await w.run(step)).exitCode, 0, `${what}, ${order.join(' ')}: ${step}`);
      t.same(await w.drivers(), ['iavf', 'iavf', 'iavf', 'iavf'], `${what}, ${order.join(' ')}: every VF has its driver back`);
    }
  }
});

t.test('a guest holding the shared VF when its pool stops: the VF follows the pool that keeps it on vfio-pci', async (t) => {
  const w = world(t, { a: hostdev(address(1)), b: hostdev(address(1)) });
  for (const step of ['+a', '+b']) t.equal((await w.run(step)).exitCode, 0);
  const dom = `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='a' mac='52:54:00:00:00:01'/></vfpool:domain></metadata></domain>`;
  t.equal((await runCliInProcess(['prepare', '--xml=-'], w.env, dom)).exitCode, 0);
  t.equal((await w.run('-a')).exitCode, 0);
  t.equal((await runCliInProcess(['release', 'vm1'], w.env)).exitCode, 0);
  t.equal((await w.drivers())[1], 'vfio-pci', 'pool b, still active, keeps it on vfio-pci');
  t.equal((await w.run('-b')).exitCode, 0);
  t.same(await w.drivers(), ['iavf', 'iavf', 'iavf', 'iavf']);
});

t.test('a managed pool and a passthrough pool on the same VFs: the second start is refused, exit 3, naming the other, nothing changed', async (t) => {
  const managedPf = hostdev(`<pf dev='eth1'/>`);
  const cases: Array<[string, Record<string, string>, string]> = [
    ['passthrough first', { first: passthrough(`<pf dev='eth1'/>`), second: managedPf },
      "vfpool: pool 'second': cannot bind the VFs of eth1 to vfio-pci (managed='yes'): active passthrough pool 'first' draws from them, and its guests need a VF's host netdev: stop pool 'first' first, or give the two pools different VFs\n"],
    ['managed first', { first: managedPf, second: passthrough(`<interface dev='eth1'/>`) },
      "vfpool: pool 'second': cannot draw from the VFs of eth1: active pool 'first' keeps them on vfio-pci (managed='yes'), where a passthrough pool's guests need a VF's host netdev: stop pool 'first' first, or give the two pools different VFs\n"],
    ['one listed VF', { first: hostdev(address(2)), second: passthrough(address(3) + address(2)) },
      "vfpool: pool 'second': cannot draw from VF 0000:3b:02.2 of eth1: active pool 'first' keeps it on vfio-pci (managed='yes'), where a passthrough pool's guests need a VF's host netdev: stop pool 'first' first, or give the two pools different VFs\n"],
  ];
  for (const [what, pools, line] of cases) {
    const w = world(t, pools);
    t.equal((await w.run('+first')).exitCode, 0);
    const before = w.files();
    const dry = await runCliInProcess(['net-start', 'second', '--dry-run'], w.env);
    t.same([dry.exitCode, dry.stderr], [3, line], `${what}: --dry-run refuses the same`);
    const r = await w.run('+second');
    t.same([r.exitCode, r.stdout, r.stderr], [3, '', line], what);
    t.equal(w.files(), before, `${what}: no VF and no record changed`);
  }
});

t.test('pools on the same PF that do not clash start side by side', async (t) => {
  const cases: Record<string, Record<string, string>> = {
    'managed and passthrough on different VFs': { first: hostdev(address(0) + address(1)), second: passthrough(address(2) + address(3)) },
    'unmanaged hostdev and passthrough on the same VFs': { first: hostdev(`<pf dev='eth1'/>`, 'no'), second: passthrough(`<pf dev='eth1'/>`) },
    // The binder's listed VFs are recorded as it binds them, and given back at its stop.
    'managed listed VFs and a passthrough <pf>': { first: hostdev(address(1)), second: passthrough(`<pf dev='eth1'/>`) },
    'a passthrough <pf> and managed listed VFs': { first: passthrough(`<pf dev='eth1'/>`), second: hostdev(address(1)) },
  };
  for (const [what, pools] of Object.entries(cases)) {
    const w = world(t, pools);
    for (const step of ['+first', '+second', '-first', '-second']) t.equal((await w.run(step)).exitCode, 0, `${what}: ${step}`);
    t.same(await w.drivers(), ['iavf', 'iavf', 'iavf', 'iavf'], what);
  }
});

t.test('VFs a pool\'s start created, left to another active pool at its stop, are removed by the last of them to stop', async (t) => {
  const creates = hostdev(`<pf dev='eth1'><vf num='2'/></pf>`);
  const cases: Record<string, Record<string, string>> = {
    'managed <vf num> and a managed <address> of one': { a: creates, b: hostdev(address(1)) },
    'unmanaged <vf num> and a passthrough <pf>': { a: hostdev(`<pf dev='eth1'><vf num='2'/></pf>`, 'no'), b: passthrough(`<pf dev='eth1'/>`) },
  };
  for (const [what, pools] of Object.entries(cases)) {
    const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 0 }] });
    for (const [n, f] of Object.entries(pools)) w.definePool(n, net(n, f));
    for (const step of ['+a', '+b', '-a']) {
      const r = await runCliInProcess([step[0] === '+' ? 'net-start' : 'net-destroy', step.slice(1)], w.env);
      t.equal(r.exitCode, 0, `${what}: ${step} ${r.stderr}`);
    }
    t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, `${what}: kept while b draws from them`);
    t.equal((await runCliInProcess(['net-destroy', 'b'], w.env)).exitCode, 0);
    t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 0, `${what}: b, the last to draw from them, removed them`);
  }
});

t.test('libvirt\'s start of a managed network beside a passthrough pool: refused through the hook (virsh shows the line), and its stopped end changes nothing', async (t) => {
  const w = world(t, { p: passthrough(`<pf dev='eth1'/>`) });
  t.equal((await w.run('+p')).exitCode, 0);
  const before = w.files();
  const network = `<hookData><network><name>m</name><metadata><vfpool:pool xmlns:vfpool="https://vfpool.dev/xmlns/1"><vfpool:pf dev="eth1"/></vfpool:pool></metadata><forward mode='hostdev' managed='yes'/></network></hookData>`;
  const start = await networkHookInProcess(w.env, ['m', 'start', 'begin', '-'], network);
  t.same([start.exitCode, start.stderr], [3, "vfpool: pool 'm': cannot bind the VFs of eth1 to vfio-pci (managed='yes'): active passthrough pool 'p' draws from them, and its guests need a VF's host netdev: stop pool 'p' first, or give the two pools different VFs\n"]);
  const stopped = await networkHookInProcess(w.env, ['m', 'stopped', 'end', '-'], network);
  t.equal(stopped.exitCode, 0);
  t.equal(w.files(), before, 'no VF and no record changed');
});
