import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import type { SimState } from '../../src/host/sim-kernel.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool } from '../../src/pool/pools.js';
import { HostError } from '../../src/errors.js';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv } from '../helpers/env.js';
import { numVfsWrites, recordingHost } from '../helpers/recording-host.js';
import { spawnSleeper } from '../helpers/processes.js';
import { activationSuite, poolXml } from './activation-suite.js';

t.test('on the simulated host', async (t) => {
  activationSuite(t, async (t) => {
    const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 7 }] });
    return {
      ctx: w.ctx,
      pf: 'eth1' as NetdevName,
      totalVfs: 7,
      holdVfio: async (vf) => {
        const s = spawnSleeper();
        await w.sim.holdVfioGroup(vf.address, s.pid);
        return { pid: s.pid, release: s.kill };
      },
      renamePf: async (to) => {
        const rename = (from: string, name: string) => {
          const state = JSON.parse(readFileSync(w.hostFile, 'utf8')) as SimState;
          state.pfs.find((p) => p.name === from)!.name = name;
          writeFileSync(w.hostFile, JSON.stringify(state));
        };
        rename('eth1', to);
        return async () => rename(to, 'eth1');
      },
    };
  });
});

t.test('a failure after the count changed is rolled back to the original count', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 7 }] });
  await w.sim.writeNumVfs('eth1' as NetdevName, 2);
  const r = recordingHost(w.ctx.host, { method: 'bindDriver', nth: 2, error: new HostError('injected: vfio-pci bind failed', { code: 'ENODEV' }) });
  const xml = poolXml('eth1', 4);
  await t.rejects(startPool({ ...w.ctx, host: r.host }, parsePoolXml(xml, 't'), xml), { exitCode: 1, message: /injected/ });
  t.same(numVfsWrites(r.calls, 'eth1'), [0, 4, 0, 2], 'forward 2 -> 0 -> 4, then back 4 -> 0 -> 2');
  t.equal((await w.sim.getPf('eth1' as NetdevName)).numVfs, 2, 'original count back');
  t.notOk(w.ctx.store.read().pools['sriov-pool'], 'no state change');
});

t.test('a rollback that fails too reports both causes', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 7 }] });
  const r = recordingHost(w.ctx.host, { method: 'writeNumVfs', nth: 2, error: new HostError('injected: PF went away', { code: 'ENODEV' }) });
  const failing = recordingHost(r.host, { method: 'listVfs', nth: 2, error: new HostError('injected: sysfs unreadable', { code: 'EIO' }) });
  const xml = poolXml('eth1', 4);
  await t.rejects(startPool({ ...w.ctx, host: failing.host }, parsePoolXml(xml, 't'), xml), {
    exitCode: 1,
    message: /injected: sysfs unreadable; rollback also failed: eth1: restore sriov_numvfs 0: injected: PF went away/,
  });
});

t.test('stopping a managed pool reads /dev/vfio holders once, not once per VF', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 7 }] });
  const xml = poolXml('eth1', 6);
  await startPool(w.ctx, parsePoolXml(xml, 't'), xml);
  const r = recordingHost(w.ctx.host);
  const { stopPool } = await import('../../src/pool/pools.js');
  await stopPool({ ...w.ctx, host: r.host }, 'sriov-pool', { refuse: true });
  t.equal(r.calls.filter((c) => c.method === 'vfioHolders').length, 1, 'one pass for six vfio-bound VFs');
  t.equal(r.calls.filter((c) => c.method === 'vfioGroupHolders').length, 0);
});
