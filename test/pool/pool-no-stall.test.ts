import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { scratchDir } from '../helpers/scratch.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnEntry, vfpoolCli } from '../helpers/spawn.js';

/**
 * A pool start holds the state lock only to record its intent, not while the kernel creates
 * VFs: a guest of another PF proceeds meanwhile, a guest of the changing PF is told to try
 * again. eth1's VF creation is held with the simulator's settle gate (the write of sriov_numvfs
 * returns only once the test creates a file), so the start is still creating VFs while both
 * guests are answered however slow the machine is; the test asserts the order of events
 * (the guest is done while the start is still running), not durations, and waits for nothing.
 */
t.test('guests never stall behind a pool start: another PF proceeds, the changing PF answers exit 3', async (t) => {
  const vfsProbed = join(scratchDir(t), 'eth1-vfs-probed');
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 64, settleUntilFile: vfsProbed }, { name: 'eth2', totalVfs: 8 }] });
  w.definePool('big', `<network><name>big</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='64'/></pf></forward></network>`);
  w.definePool('g', `<network><name>g</name><forward mode='hostdev' managed='yes'><pf dev='eth2'><vf num='4'/></pf></forward></network>`);
  t.equal((await vfpoolCli(['net-start', 'g'], { env: w.env })).exitCode, 0);

  let startDone = false;
  const start = vfpoolCli(['net-start', 'big'], { env: w.env }).then((r) => ((startDone = true), r));
  // Wait until the start has recorded its intent (then it is creating VFs, outside the lock).
  const stateFile = join(w.settings.stateDir, 'state.json');
  const changing = () => {
    try {
      return Boolean((JSON.parse(readFileSync(stateFile, 'utf8')) as { pools: Record<string, { change: unknown }> }).pools.big?.change);
    } catch {
      return false;
    }
  };
  while (!changing() && !startDone) await new Promise((r) => setTimeout(r, 20));
  t.notOk(startDone, 'the start is under way');

  const other = await spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], {
    env: w.env,
    stdin: domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='g' mac='52:54:00:00:00:01'/>` }),
  });
  t.same([other.exitCode, other.stderr], [0, ''], 'a guest of eth2 is prepared');
  const same = await spawnEntry('hooks/qemu', ['vm2', 'prepare', 'begin', '-'], {
    env: w.env,
    stdin: domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:hostdev pool='big' mac='52:54:00:00:00:02'/>` }),
  });
  t.equal(same.exitCode, 3, 'a guest of eth1: exit 3');
  t.match(same.stderr, /^vfpool: domain 'vm2': PF eth1 is being reconfigured by pool 'big' \(vfpool pid \d+\): try again in a few seconds\n$/);
  t.notOk(startDone, 'both answers came while the pool start was still creating VFs');

  writeFileSync(vfsProbed, '');
  const r = await start;
  t.same([r.exitCode, r.stderr], [0, ''], 'the start completes');
  t.equal((await w.sim.getPf('eth1' as never)).numVfs, 64);
  const again = await spawnEntry('hooks/qemu', ['vm2', 'prepare', 'begin', '-'], {
    env: w.env,
    stdin: domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:hostdev pool='big' mac='52:54:00:00:00:02'/>` }),
  });
  t.same([again.exitCode, again.stderr], [0, ''], 'once started, eth1 guests proceed');
});
