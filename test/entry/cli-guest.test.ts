import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { cli as vfpoolCli } from '../helpers/cli-in-process.js';
import { readStatus } from '../../src/pool/status.js';

/** `vfpool prepare|release --xml FILE`: the guest steps without libvirt, in-process (the CLI's process: cli.test.ts). */
t.test('prepare and release a domain from an XML file', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.sim.writeNumVfs('eth1' as never, 2); // materialise the seed: a seed file is filled in (random MACs) on every read until then
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='12'/>` }));
  // What `vfpool status --json` prints (cli.test.ts runs that command), read in-process.
  const status = async () => JSON.parse(JSON.stringify(await readStatus(w.ctx))).pfs[0].vfs;
  const before = await status();

  const dry = await vfpoolCli(['prepare', '--xml', file, '--dry-run'], { env: w.env });
  t.equal(dry.exitCode, 0, dry.stderr);
  t.match(dry.stdout, /plan for prepare of domain vm1 \(--dry-run, nothing changed\):\n  1\. domain 'vm1', pool 'p', VF 0000:3b:02\.0 \(eth1 VF 0\): allocate \(guest slot 0\)\n  2\. eth1 VF 0 \(0000:3b:02\.0\): set admin MAC 52:54:00:aa:00:01/);
  t.same(await status(), before, '--dry-run changed nothing');

  const p = await vfpoolCli(['prepare', '--xml', file, '--json'], { env: w.env });
  t.equal(p.exitCode, 0, p.stderr);
  t.match(JSON.parse(p.stdout), { domain: 'vm1', dryRun: false, vfs: [{ vfAddr: '0000:3b:02.0', pool: 'p', mac: '52:54:00:aa:00:01', vlan: 12, guestSlot: 0, alias: 'vfpool-vf0', phase: 'ready' }] });
  t.match((await status())[0], { mac: '52:54:00:aa:00:01', vlan: 12, driver: 'vfio-pci', owner: { domain: 'vm1' } });

  const twice = await vfpoolCli(['prepare', '--xml', file], { env: w.env });
  t.equal(twice.exitCode, 3);
  t.match(twice.stderr, /^vfpool: domain 'vm1' is already prepared \(VF 0000:3b:02\.0\): release it first: `vfpool release vm1`/);

  const relDry = await vfpoolCli(['release', 'vm1', '--dry-run'], { env: w.env });
  t.equal(relDry.exitCode, 0, relDry.stderr);
  t.match(relDry.stdout, /set admin MAC .*\n.*read back/);
  for (const n of [1, 2]) {
    const r = await vfpoolCli(['release', '--xml', file], { env: w.env });
    t.equal(r.exitCode, 0, r.stderr);
    t.equal(r.stdout, n === 1 ? 'Domain vm1: VF 0000:3b:02.0 restored and freed\n' : 'Domain vm1 holds no VF (nothing to release)\n');
  }
  t.same(await status(), before, 'released: everything as before');
});

t.test('release refuses while the guest runs; --pid ties it to a process', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  t.equal((await vfpoolCli(['prepare', '--xml', file, '--pid', String(process.pid)], { env: w.env })).exitCode, 0);
  const r = await vfpoolCli(['release', 'vm1'], { env: w.env });
  t.equal(r.exitCode, 3);
  t.match(r.stderr, new RegExp(`domain 'vm1' still runs \\(QEMU pid ${process.pid}\\)`));
  const bad = await vfpoolCli(['release'], { env: w.env });
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /name the domain, or give --xml FILE/);
});
