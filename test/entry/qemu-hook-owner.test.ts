import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { domainXml } from '../helpers/libvirt-domains.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { hookStatus as status, META, qemuHookInProcess, setupHookWorld as setup } from '../helpers/hook-world.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

t.test('libvirt\'s release after a refused start leaves the VFs of a guest `vfpool prepare --pid` prepared for a live QEMU of that name', async (t) => {
  const w = await setup(t);
  const xml = domainXml('prepare', { name: 'vm1', vfpool: META });
  // A QEMU run by hand (this process stands in for it: alive), prepared through the CLI.
  const cli = await runCliInProcess(['prepare', '--xml=-', `--pid=${process.pid}`], w.hookEnv, xml);
  t.equal(cli.exitCode, 0, cli.stderr);
  const held = (await status(w)).pfs[0]!.vfs[0]!;
  t.match(held, { mac: '52:54:00:11:22:33', owner: { domain: 'vm1', pid: process.pid } });
  // `virsh start vm1` of a libvirt domain of the same name: refused at prepare...
  const prep = await qemuHookInProcess(w.hookEnv, ['vm1', 'prepare', 'begin', '-'], xml);
  t.equal(prep.exitCode, 3, prep.stderr);
  // ...and libvirt follows every failed start with `release end failed`.
  const rel = await qemuHookInProcess(w.hookEnv, ['vm1', 'release', 'end', 'failed'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.same([rel.exitCode, rel.stderr], [0, '']);
  t.same((await status(w)).pfs[0]!.vfs[0], held, 'the hand-run QEMU keeps its VF, as configured');
  t.ok(existsSync(join(w.settings.stateDir, 'qemu/vm1/plan.json')), 'and its QEMU plan');
});

t.test('what libvirt\'s hook prepared, its release frees, even while the recorded QEMU pid lives (a failed incoming migration, a QEMU not reaped yet)', async (t) => {
  const w = await setup(t);
  const free = (await status(w)).pfs[0]!.vfs[0]!;
  const xml = domainXml('prepare', { name: 'vm1', vfpool: META });
  t.equal((await qemuHookInProcess(w.hookEnv, ['vm1', 'prepare', 'begin', '-'], xml)).exitCode, 0);
  fakeLibvirtQemu({ libvirtRunDir: w.runDir, procRoot: w.procRoot }, 'vm1');
  t.equal((await qemuHookInProcess(w.hookEnv, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }))).exitCode, 0);
  t.match((await status(w)).pfs[0]!.vfs[0]!.owner, { domain: 'vm1', pid: process.pid });
  const rel = await qemuHookInProcess(w.hookEnv, ['vm1', 'release', 'end', 'failed'], domainXml('release', { name: 'vm1', vfpool: META }));
  t.same([rel.exitCode, rel.stderr], [0, '']);
  t.same((await status(w)).pfs[0]!.vfs[0], free, 'restored and free');
  t.notOk(existsSync(join(w.settings.stateDir, 'qemu/vm1')), 'its plan removed');
});
