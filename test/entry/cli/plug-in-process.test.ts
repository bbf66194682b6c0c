import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { planQemuArgs } from '../../../src/qemu/args.js';
import { parseQemuArgv } from '../../../src/qemu/cmdline.js';
import { domainQmpSocketPath, readDomainPlan } from '../../../src/state/domain-plan.js';
import { makeSimEnv } from '../../helpers/env.js';
import { domainXml } from '../../helpers/libvirt-domains.js';
import { runCliInProcess } from '../../helpers/cli-in-process.js';
import { startFakeQmp, type FakeReply } from '../../helpers/fake-qmp.js';

/**
 * `vfpool prepare --delivery hotplug` then `vfpool plug`, in-process: the plan says hotplug,
 * the wrapper's arguments reserve only the root port, and plug device_adds the VF into the
 * QEMU found by its QMP socket in /proc (a fake /proc and a fake QMP server here; the real
 * QEMU in `npm run demo`).
 */
t.test('prepare --delivery hotplug, qemu-args, plug (text and JSON), refusals', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await w.addPool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
  const file = join(w.dir, 'vm1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  const proc = join(w.dir, 'proc');
  const env = { ...w.env, VFPOOL_SIM_VF_DEVICE: 'e1000e', VFPOOL_PROC: proc };
  const cli = (...argv: string[]) => runCliInProcess(argv, env);

  const bad = await cli('prepare', '--xml', file, '--delivery', 'wireless');
  t.equal(bad.exitCode, 2);
  t.match(bad.stderr, /delivery/);
  t.equal(readDomainPlan(w.settings.stateDir, 'vm1'), null, 'a refused option changes nothing');

  const p = await cli('prepare', '--xml', file, '--delivery', 'hotplug');
  t.same([p.exitCode, p.stderr], [0, '']);
  t.match(p.stdout, /^Domain vm1: VF 0000:3b:02\.0 \(eth1 VF 0, pool p\) mac 52:54:00:aa:00:01, guest slot 0\nDomain vm1: delivery hotplug: once its QEMU runs \(vfpool-qemu\), `vfpool plug vm1` device_adds the VFs\n$/);
  const plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  t.equal(plan.delivery, 'hotplug');

  const args = await cli('qemu-args', 'vm1');
  t.match(args.stdout, /^-device pcie-root-port,id=vfpool-rp0,/m);
  t.notMatch(args.stdout, /^-device e1000e/m, 'the VF is not on the command line');
  t.match(args.stdout, /^# once QEMU runs \(the 'started' hook, or `vfpool plug vm1`\), device_add \{"driver":"e1000e","id":"vfpool-vf0","bus":"vfpool-rp0"/m);

  t.match(await cli('plug', 'vm1', '--timeout', '0'), { exitCode: 2, stderr: /--timeout '0' is not a number of seconds above 0/ });

  // QEMU, as the wrapper started it: its argv in (fake) /proc, its QMP socket answering.
  const socket = domainQmpSocketPath(w.settings.stateDir, 'vm1');
  const argv = planQemuArgs(plan, parseQemuArgv(['-name', 'guest=vm1', '-machine', 'q35', '-nodefaults']), { qmpSocketPath: socket }).argv;
  mkdirSync(join(proc, '4242'), { recursive: true });
  writeFileSync(join(proc, '4242', 'cmdline'), ['/usr/bin/qemu-system-x86_64', ...argv, ''].join('\0'));
  const added: Array<{ id: string }> = [];
  const server = await startFakeQmp(socket, (cmd, a): FakeReply => {
    if (cmd === 'query-status') return { return: { status: 'running' } };
    if (cmd === 'device_add') return (added.push(a as { id: string }), { return: {} });
    if (cmd === 'query-pci') {
      const behind = added.map((d) => ({ bus: 1, slot: 0, function: 0, qdev_id: d.id, id: { vendor: 0x8086, device: 0x10d3 } }));
      return { return: [{ bus: 0, devices: [{ bus: 0, slot: 0x1e, function: 0, qdev_id: 'vfpool-rp0', id: { vendor: 0x1b36, device: 0xc }, pci_bridge: { bus: { secondary: 1 }, devices: behind } }] }] };
    }
    return { error: { class: 'CommandNotFound', desc: cmd } };
  });
  t.teardown(() => server.close());

  // A dry run asks QEMU (status, query-pci) and adds nothing.
  t.same(await cli('plug', '--dry-run', 'vm1'), { exitCode: 0, stdout: 'Domain vm1: would device_add vfpool-vf0 (e1000e) into vfpool-rp0 (--dry-run, nothing changed)\n', stderr: '' });
  t.same(JSON.parse((await cli('plug', '--dry-run', '--json', 'vm1')).stdout), { domain: 'vm1', added: ['vfpool-vf0'], present: [], dryRun: true });
  t.same(added, [], 'no device_add reached QEMU');
  t.same(await cli('plug', 'vm1'), { exitCode: 0, stdout: "Domain vm1: device_add vfpool-vf0 (e1000e) into vfpool-rp0: on the guest's PCI bus\n", stderr: '' });
  t.match(added, [{ driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', mac: '52:54:00:aa:00:01' }]);
  t.same(await cli('plug', 'vm1'), { exitCode: 0, stdout: "Domain vm1: vfpool-vf0 is on the guest's PCI bus already\n", stderr: '' });
  t.same(JSON.parse((await cli('plug', 'vm1', '--json')).stdout), { domain: 'vm1', added: [], present: ['vfpool-vf0'] });
  t.equal(added.length, 1, 'plug is idempotent');

  // Reproduced: `vfpool release vm1` while this QEMU (prepared without --pid) still ran gave
  // its VF back, restored and free for the next guest, under the QEMU that still used it.
  t.same(await cli('release', 'vm1'), {
    exitCode: 3,
    stdout: '',
    stderr: `vfpool: domain 'vm1' still runs: its QEMU answers on vfpool's QMP socket ${socket}: quit that QEMU first (vfpool release is for after QEMU exits), then release\n`,
  }, 'release under a running QEMU is refused');
  t.equal(readDomainPlan(w.settings.stateDir, 'vm1')?.vfs.length, 1, 'nothing released');
  await server.close(); // QEMU quits: its socket goes with it
  t.same(await cli('release', 'vm1'), { exitCode: 0, stdout: 'Domain vm1: VF 0000:3b:02.0 restored and freed\n', stderr: '' });
  const gone = await cli('plug', 'vm1');
  t.equal(gone.exitCode, 2);
  t.match(gone.stderr, /^vfpool: domain 'vm1' has no vfpool plan on this host: prepare it first/);
});

t.test('a domain whose plan has no VF for QEMU: plug says so', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  const file = join(w.dir, 'nic.xml');
  writeFileSync(file, domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:sriov-nic vfs='2'/>`, machine: 'pc-q35-10.0' }));
  const env = { ...w.env, VFPOOL_QEMU: '/bin/true' };
  const p = await runCliInProcess(['prepare', '--xml', file, '--delivery', 'hotplug'], env);
  t.same([p.exitCode, p.stdout], [0, 'Domain vm2 asks for no VF from vfpool; vfpool-qemu adds its 1 emulated SR-IOV NIC (2 VFs)\n']);
  t.same(await runCliInProcess(['plug', 'vm2'], env), { exitCode: 0, stdout: 'Domain vm2 has no VF to plug\n', stderr: '' });
});
