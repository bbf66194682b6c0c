import t from 'tap';
import { makeSimEnv } from '../helpers/env.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

/** README, `netdev=`: what a managed pool's start leaves a VF's netdev name worth. */

const domain = (netdev: string) =>
  `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev netdev='${netdev}' mac='52:54:00:00:00:01'/></vfpool:domain></metadata></domain>`;

t.test('netdev= naming a VF a managed start bound from its host driver resolves to it; one the start created and bound at once is exit 1, with the hint to use address=', async (t) => {
  const bound = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await bound.addPool('m', `<network><name>m</name><forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward></network>`);
  const got = await runCliInProcess(['prepare', '--xml=-', '--json'], bound.env, domain('eth1v1'));
  t.equal(got.exitCode, 0, got.stderr);
  t.match(JSON.parse(got.stdout).vfs, [{ vfAddr: '0000:3b:02.1' }], 'the VF vfpool saw as eth1v1 before binding it');

  const created = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 0 }] });
  await created.addPool('m', `<network><name>m</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward></network>`);
  const before = await created.sim.listVfs('eth1' as never);
  const refused = await runCliInProcess(['prepare', '--xml=-'], created.env, domain('eth1v1'));
  t.same([refused.exitCode, refused.stderr], [1, "vfpool: domain 'vm1': vfpool:hostdev #1: netdev 'eth1v1' does not exist on this host: a VF bound to vfio-pci has no netdev: name it by address= instead\n"]);
  t.same(await created.sim.listVfs('eth1' as never), before, 'nothing changed');
  t.same(created.ctx.store.read().allocations, []);
});
