import t from 'tap';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnEntry, vfpoolCli } from '../helpers/spawn.js';

/**
 * libvirt runs the hooks of different domains in parallel. N guests started at once on a pool
 * of N VFs, each through the real hook (its own process), must end with N different VFs and
 * no error; one more then finds the pool exhausted (exit 3). N = 16 is eight hook processes
 * per core on the 2-core CI machine, all contending for the state lock at once; 64 took the
 * same lock path and were a third of all the processes the suite starts.
 */
const N = 16;
const mac = (i: number) => `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;

t.test(`${N} prepares at once on a ${N}-VF pool: ${N} distinct VFs; the ${N + 1}th gets exit 3`, async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: N, numVfs: N }] });
  await w.sim.writeNumVfs('eth1' as never, N); // materialise the seed file (it is filled in, with random MACs, on each read until written)
  await w.addPool('big', `<network><name>big</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const prepare = (i: number) =>
    spawnEntry('hooks/qemu', [`vm${i}`, 'prepare', 'begin', '-'], {
      env: w.env,
      stdin: domainXml('prepare', { name: `vm${i}`, uuid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, vfpool: `<vfpool:hostdev pool='big' mac='${mac(i)}'/>` }),
    });
  const results = await Promise.all(Array.from({ length: N }, (_, i) => prepare(i)));
  const failures = results.flatMap((r, i) => (r.exitCode === 0 ? [] : [`vm${i}: exit ${r.exitCode}: ${r.stderr.trim()}`]));
  t.same(failures, [], 'every prepare succeeded');

  const s = await vfpoolCli(['status', '--json'], { env: w.env });
  t.equal(s.exitCode, 0, s.stderr);
  const vfs = (JSON.parse(s.stdout) as { pfs: Array<{ vfs: Array<{ address: string; mac: string; driver: string; owner: { domain: string } | null }> }> }).pfs[0]!.vfs;
  const owners = vfs.map((v) => v.owner?.domain);
  t.equal(new Set(owners).size, N, `${N} different owners`);
  t.ok(owners.every((o) => o !== undefined), 'every VF is owned');
  for (const v of vfs) {
    const i = Number(v.owner!.domain.slice(2));
    if (v.mac !== mac(i) || v.driver !== 'vfio-pci') t.fail(`${v.address}: mac ${v.mac} driver ${v.driver} for ${v.owner!.domain}`);
  }
  t.equal(JSON.parse((await vfpoolCli(['net-list', '--json'], { env: w.env })).stdout)[0].inUse, N);

  const extra = await prepare(N);
  t.equal(extra.exitCode, 3, 'the 65th: exit 3');
  t.match(extra.stderr, new RegExp(`^vfpool: domain 'vm${N}': pool 'big' is exhausted, all ${N} VFs are held \\(VF 0000:3b:02\\.0: domain 'vm\\d+'.*; and ${N - 8} more\\)`));
});
