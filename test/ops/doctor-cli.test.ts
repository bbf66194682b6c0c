import t from 'tap';
import { spawnSleeper } from '../helpers/processes.js';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';

type Row = { id: string; ok: boolean; found: string; fix: string | null };
const rows = (stdout: string): Row[] => (JSON.parse(stdout) as { checks: Row[] }).checks;

/** The simulated host's cases run the CLI in-process; the real machine's text report through the bundle, as a person runs it. */
t.test('simulated host without SR-IOV: the first line says so; exit 1', async (t) => {
  const w = makeSimEnv(t, { pfs: [] });
  const text = await cli(['doctor'], { env: w.env });
  t.equal(text.exitCode, 1);
  t.match(text.stdout.split('\n')[0], /^FAIL sr-iov +no SR-IOV physical function on this host \(simulated host /);
  t.match(text.stdout, /\n +fix: use a NIC with SR-IOV/);
  const json = await cli(['doctor', '--json'], { env: w.env });
  t.equal(json.exitCode, 1);
  const checks = rows(json.stdout);
  t.same(Object.keys(checks[0]!), ['id', 'ok', 'found', 'fix']);
  t.match(checks[0], { id: 'sr-iov', ok: false });
  t.ok(checks.every((c) => typeof c.ok === 'boolean' && (c.ok ? c.fix === null : typeof c.fix === 'string' && c.fix.length > 0)), 'every failed row has a fix, no passed row has one');
});

t.test('simulated host: PF and pool checks pass, and fail for a pool that asks too much', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('good', `<network><name>good</name><forward mode='hostdev'><pf dev='eth1'><vf num='4'/></pf></forward></network>`);
  w.definePool('big', `<network><name>big</name><forward mode='hostdev'><pf dev='eth1'><vf num='16'/></pf></forward></network>`);
  const checks = rows((await cli(['doctor', '--json'], { env: w.env })).stdout);
  const byId = new Map(checks.map((c) => [c.id, c]));
  t.match(byId.get('sr-iov'), { ok: true, found: '1 SR-IOV PF(s): eth1' });
  t.match(byId.get('pf:eth1'), { ok: true, found: /driver igb, link up, 0 of 8 VFs/ });
  t.match(byId.get('pool:good'), { ok: true, found: 'eth1 vf num 4' });
  t.match(byId.get('pool:big'), { ok: false, found: "<vf num='16'> on eth1 is more than its sriov_totalvfs 8", fix: 'lower <vf num> to at most 8' });
});

t.test('simulated host: allocations of a guest that is gone are what reconcile would free', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  // --pid must name a live process: QEMU stands in as a sleeper, which then exits.
  const qemu = spawnSleeper();
  const file = join(w.dir, 'vm1.xml');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  t.equal((await cli(['prepare', '--xml', file, '--pid', String(qemu.pid)], { env: w.env })).exitCode, 0);
  await qemu.kill();
  const stale = rows((await cli(['doctor', '--json'], { env: w.env })).stdout).find((c) => c.id === 'stale-allocations')!;
  t.match(stale, { ok: false, found: /1 VF\(s\) held for guests that are gone: 0000:3b:02\.0 \(domain vm1: /, fix: 'vfpool reconcile' });
  t.equal((await cli(['reconcile'], { env: w.env })).exitCode, 0);
  t.match(rows((await cli(['doctor', '--json'], { env: w.env })).stdout).find((c) => c.id === 'stale-allocations'), { ok: true });
});

t.test('this machine, for real: what it lacks is named with its fix, exit 1', async (t) => {
  const dir = t.testdir({});
  const env = { VFPOOL_STATE_DIR: join(dir, 'run'), VFPOOL_JOURNAL_DIR: join(dir, 'journal'), VFPOOL_CONFIG_DIR: join(dir, 'etc') };
  // The text report from the bundle (exit code, first line), the JSON rows in-process.
  const r = await vfpoolCli(['doctor'], { env });
  const j = await cli(['doctor', '--json'], { env });
  const checks = rows(j.stdout);
  const sriov = readdirSync('/sys/class/net').some((n) => existsSync(`/sys/class/net/${n}/device/sriov_totalvfs`));
  const iommu = existsSync('/sys/class/iommu') && readdirSync('/sys/class/iommu').length > 0;
  t.equal(r.exitCode, checks.every((c) => c.ok) ? 0 : 1, 'exit 1 exactly when a check failed');
  t.equal(checks[0]!.id, 'sr-iov');
  t.equal(checks[0]!.ok, sriov, `sr-iov: ${checks[0]!.found}`);
  if (!sriov) {
    t.equal(r.exitCode, 1);
    t.match(r.stdout.split('\n')[0], /^FAIL sr-iov +no SR-IOV physical function on this host \(no sriov_totalvfs under \/sys\/class\/net\)/);
  }
  const io = checks.find((c) => c.id === 'iommu')!;
  t.equal(io.ok, iommu, `iommu: ${io.found}`);
  if (!iommu) t.match(io.fix, /(intel|amd)_iommu=on iommu=pt/);
});
