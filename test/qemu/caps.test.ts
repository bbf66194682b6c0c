import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, existsSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, HostError } from '../../src/errors.js';
import { probeQemuCaps } from '../../src/qemu/caps.js';
import { domainCapsCacheFile, generateQemuArgs } from '../../src/qemu/generate.js';
import { sriovNicPlans, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import { scratchDir } from '../helpers/scratch.js';

/**
 * The capability probe against a stand-in QEMU that prints what `-device virtio-net-pci,help`
 * prints (QEMU 10.0 without sriov-pf, 10.1+ with it) and counts how often it was started, so
 * the cache's hits and invalidations are seen, not assumed.
 */
function standIn(t: Test, props: string[], exit = 0) {
  const dir = scratchDir(t);
  const qemu = join(dir, 'qemu-system-x86_64');
  const calls = join(dir, 'calls');
  const write = (p: string[], code: number) => {
    writeFileSync(qemu, `#!/bin/sh\necho run >> '${calls}'\n[ "$5" = 'virtio-net-pci,help' ] || exit 9\necho 'virtio-net-pci options:'\n${p.map((x) => `echo '  ${x}'\n`).join('')}exit ${code}\n`);
    chmodSync(qemu, 0o755);
  };
  write(props, exit);
  const probes = () => (existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean).length : 0);
  return { dir, qemu, cache: join(dir, 'qemu-caps.json'), probes, rewrite: write };
}

const QEMU_10_0 = ['failover=<bool>       - (default: false)', 'mq=<bool>'];
const QEMU_10_1 = [...QEMU_10_0, 'sriov-pf=<str>'];

t.test('sriov-pf listed or not', async (t) => {
  const withPf = standIn(t, QEMU_10_1);
  t.same(await probeQemuCaps(withPf.qemu, null), { qemu: withPf.qemu, sriovPf: true });
  const without = standIn(t, QEMU_10_0);
  t.same(await probeQemuCaps(without.qemu, null), { qemu: without.qemu, sriovPf: false });
  t.equal(without.probes(), 1);
  await probeQemuCaps(without.qemu, null);
  t.equal(without.probes(), 2, 'no cache file: asked every time');
});

t.test('the cache: one probe per binary; a replaced QEMU (mtime or size) is asked again; damage is repaired', async (t) => {
  const q = standIn(t, QEMU_10_0);
  t.same(await probeQemuCaps(q.qemu, q.cache), { qemu: q.qemu, sriovPf: false });
  t.match(JSON.parse(readFileSync(q.cache, 'utf8')), { qemu: q.qemu, sriovPf: false, size: statSync(q.qemu).size });
  t.equal(statSync(q.cache).mode & 0o777, 0o600);
  t.same(await probeQemuCaps(q.qemu, q.cache), { qemu: q.qemu, sriovPf: false });
  t.equal(q.probes(), 1, 'the second answer came from the cache');

  // Upgraded in place: a new binary, other size and mtime.
  q.rewrite(QEMU_10_1, 0);
  t.same(await probeQemuCaps(q.qemu, q.cache), { qemu: q.qemu, sriovPf: true });
  t.equal(q.probes(), 2);

  // Only the mtime moves (same size, e.g. a reinstall of the same package): asked again.
  const later = new Date(Date.now() + 60_000);
  utimesSync(q.qemu, later, later);
  await probeQemuCaps(q.qemu, q.cache);
  t.equal(q.probes(), 3);

  // The cache names another binary (VFPOOL_QEMU changed): not trusted.
  const cached = JSON.parse(readFileSync(q.cache, 'utf8'));
  writeFileSync(q.cache, JSON.stringify({ ...cached, qemu: '/usr/bin/other' }));
  t.same(await probeQemuCaps(q.qemu, q.cache), { qemu: q.qemu, sriovPf: true });
  t.equal(q.probes(), 4);

  writeFileSync(q.cache, '{ damaged');
  t.same(await probeQemuCaps(q.qemu, q.cache), { qemu: q.qemu, sriovPf: true });
  t.equal(q.probes(), 5);
  t.equal(JSON.parse(readFileSync(q.cache, 'utf8')).sriovPf, true, 'rewritten');

  // An unwritable cache costs a probe each time, never the answer.
  const unwritable = join(q.dir, 'calls', 'qemu-caps.json'); // 'calls' is a file
  t.same(await probeQemuCaps(q.qemu, unwritable), { qemu: q.qemu, sriovPf: true });
  t.same(await probeQemuCaps(q.qemu, unwritable), { qemu: q.qemu, sriovPf: true });
  t.equal(q.probes(), 7);
});

t.test('a QEMU that cannot run, or does not answer: a HostError naming it and VFPOOL_QEMU', async (t) => {
  const dir = scratchDir(t);
  const missing = join(dir, 'nope');
  const e1 = await probeQemuCaps(missing, null).catch((e: unknown) => e);
  t.ok(e1 instanceof HostError);
  t.equal((e1 as HostError).exitCode, 1);
  t.equal((e1 as HostError).toLine(), `QEMU '${missing}' cannot be run: ENOENT: set VFPOOL_QEMU to the QEMU binary`);

  const broken = join(dir, 'broken');
  writeFileSync(broken, "#!/bin/sh\necho 'qemu: could not load PC BIOS' >&2\nexit 1\n");
  chmodSync(broken, 0o755);
  const e2 = await probeQemuCaps(broken, join(dir, 'c.json')).catch((e: unknown) => e);
  t.ok(e2 instanceof HostError);
  t.equal((e2 as HostError).toLine(), `QEMU '${broken}' did not list virtio-net-pci's properties (exit 1): qemu: could not load PC BIOS: check VFPOOL_QEMU`);
  t.notOk(existsSync(join(dir, 'c.json')), 'a failed probe is not cached');

  // A QEMU that lists the properties but exits non-zero (some builds do with -machine none) is believed.
  const q = standIn(t, QEMU_10_1, 1);
  t.same(await probeQemuCaps(q.qemu, null), { qemu: q.qemu, sriovPf: true });
});

t.test('generateQemuArgs asks QEMU only when the plan has an emulated SR-IOV NIC', async (t) => {
  const dir = scratchDir(t);
  const plan: DomainPlanV1 = { version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', vfs: [], sriovNics: [] };
  const opts = { stateDir: join(dir, 'run'), qemuPath: join(dir, 'no-qemu'), capsCacheFile: null };
  const r = await generateQemuArgs(plan, ['-machine', 'q35'], opts);
  // Only the QMP monitor is added, and the missing QEMU was never started.
  t.same(r.added, ['-qmp', `unix:${join(dir, 'run')}/qemu/vm1/qmp.sock,server=on,wait=off`]);

  const withNic = { ...plan, sriovNics: sriovNicPlans('vm1', null, [{ vfs: 1, backend: 'user', backendOptions: null }]) };
  const e = await generateQemuArgs(withNic, ['-machine', 'q35'], opts).catch((err: unknown) => err);
  t.ok(e instanceof HostError);
  t.match((e as Error).message, /^QEMU '.*no-qemu' cannot be run: ENOENT/);

  const q = standIn(t, QEMU_10_1);
  const ok = await generateQemuArgs(withNic, ['-machine', 'q35'], { ...opts, qemuPath: q.qemu, capsCacheFile: q.cache });
  t.ok(ok.added.some((a) => a.includes('sriov-pf=vfpool-sriov0-pf')));
  t.equal(JSON.parse(readFileSync(q.cache, 'utf8')).sriovPf, true);

  const e2 = await generateQemuArgs(withNic, ['-machine', 'pc'], { ...opts, qemuPath: q.qemu }).catch((err: unknown) => err);
  t.ok(e2 instanceof BadInputError, 'a command line the planner refuses is bad input, not an empty result');
  t.match((e2 as Error).message, /needs PCI Express, and this is an i440fx machine/);

  t.equal(domainCapsCacheFile('/run/vfpool', 'vm1'), '/run/vfpool/qemu/vm1/qemu-caps.json');
});
