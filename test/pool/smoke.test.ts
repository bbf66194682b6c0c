import t from 'tap';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { vfpoolCli } from '../helpers/spawn.js';

t.test('seed 000 pool starts through the CLI', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const r = await vfpoolCli(['net-start', 'sriov-pool'], { env: w.env });
  t.equal(r.exitCode, 0, r.stderr);
  t.equal((await w.sim.getPf('eth1' as never)).numVfs, 4);
});
