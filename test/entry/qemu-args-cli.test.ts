import t from 'tap';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { domainQmpSocketPath, writeDomainPlan } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { cli } from '../helpers/cli-in-process.js';

/** `vfpool qemu-args DOMAIN|--xml FILE [--json]`: what the wrapper adds, without starting anything (in-process: the CLI's process is tested in cli.test.ts). */
function world(dir: string, sriovPf: boolean) {
  // A stand-in QEMU that answers the capability probe like QEMU 10.0 (no sriov-pf) or 11.1.
  const qemu = join(dir, 'qemu');
  writeFileSync(qemu, `#!/bin/sh\necho 'virtio-net-pci options:'\necho '  failover=<bool>'\n${sriovPf ? "echo '  sriov-pf=<str>'\n" : ''}`);
  chmodSync(qemu, 0o755);
  return { VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: join(dir, 'run'), VFPOOL_QEMU: qemu };
}
const nicXml = (inner: string) => domainXml('prepare', { name: 'vm1', vfpool: inner });

t.test('--xml with an emulated SR-IOV NIC: the arguments, JSON and text; QEMU 10.0 refused with a sentence', async (t) => {
  const dir = t.testdir({ etc: {}, run: {} });
  const file = join(dir, 'vm1.xml');
  writeFileSync(file, nicXml(`<vfpool:sriov-nic vfs='3' backend='user'/>`));
  const j = await cli(['qemu-args', '--xml', file, '--json'], { env: world(dir, true) });
  t.equal(j.exitCode, 0, j.stderr);
  const out = JSON.parse(j.stdout) as { domain: string; args: string[] };
  t.equal(out.domain, 'vm1');
  t.equal(out.args.filter((a) => a.includes('sriov-pf=vfpool-sriov0-pf')).length, 3);
  t.match(out.args[0], /^-device$/);
  t.match(out.args[1], /^pcie-root-port,id=vfpool-sriov0-rp,bus=pcie.0,addr=0x1e,/);
  const again = JSON.parse((await cli(['qemu-args', '--xml', file, '--json'], { env: world(dir, true) })).stdout) as { args: string[] };
  t.same(again.args, out.args, 'stable: same MACs and addresses every time');
  // Run as they are: no vfpool QMP socket, whose directory only a prepare makes (QEMU refused
  // to start on it: "Failed to bind socket to …/qemu/vm1/qmp.sock: No such file or directory").
  t.notOk(out.args.some((a) => a === '-chardev' || a === '-mon' || a.includes('qmp.sock')), 'no QMP socket in --xml output');
  t.notOk(existsSync(join(dir, 'run', 'qemu')), 'and no domain directory behind it');
  const text = await cli(['qemu-args', '--xml', file], { env: world(dir, true) });
  t.match(text.stdout, /^-device pcie-root-port,id=vfpool-sriov0-rp,.*\n-netdev user,id=vfpool-sriov0-net0\n/);
  const old = await cli(['qemu-args', '--xml', file], { env: world(dir, false) });
  t.equal(old.exitCode, 2);
  t.match(old.stderr, /^vfpool: domain 'vm1': <vfpool:sriov-nic> vfpool-sriov0: the QEMU in use \(.*\/qemu\) has no virtio-net 'sriov-pf' property: emulated SR-IOV needs QEMU >= 10.1: install QEMU 10.1 or later and point VFPOOL_QEMU at it\n$/);
  const pc = await cli(['qemu-args', '--xml', file, '--machine', 'pc'], { env: world(dir, true) });
  t.equal(pc.exitCode, 2);
  t.match(pc.stderr, /needs PCI Express, and this is an i440fx machine/);
});

t.test('--xml with a VF request needs prepare first; neither or both of DOMAIN and --xml is refused', async (t) => {
  const dir = t.testdir({ etc: {}, run: {} });
  const file = join(dir, 'vm1.xml');
  writeFileSync(file, nicXml(`<vfpool:hostdev pool='p' mac='52:54:00:11:22:33'/>`));
  const r = await cli(['qemu-args', '--xml', file], { env: world(dir, true) });
  t.same([r.exitCode, r.stderr], [2, `vfpool: domain 'vm1': vfpool:hostdev #1 needs a VF allocated first: run \`vfpool prepare --xml ${file}\`, then \`vfpool qemu-args vm1\`\n`]);
  t.equal((await cli(['qemu-args'], { env: world(dir, true) })).exitCode, 2);
  t.equal((await cli(['qemu-args', 'vm1', '--xml', file], { env: world(dir, true) })).exitCode, 2);
});

t.test('DOMAIN: the prepared plan; a domain without one gets nothing added', async (t) => {
  const dir = t.testdir({ etc: {}, run: {} });
  const env = world(dir, true);
  await writeDomainPlan(env.VFPOOL_STATE_DIR, {
    version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: '52:54:00:11:22:33' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
  }, { uid: process.getuid!(), gid: process.getgid!() });
  const r = await cli(['qemu-args', 'vm1', '--json'], { env });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(JSON.parse(r.stdout), {
    domain: 'vm1',
    planned: true,
    args: ['-device', 'pcie-root-port,id=vfpool-rp0,bus=pcie.0,addr=0x1e,chassis=128,slot=0', '-qmp', `unix:${domainQmpSocketPath(env.VFPOOL_STATE_DIR, 'vm1')},server=on,wait=off`],
    hotplug: [{ driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', host: '0000:3b:02.0' }],
  });
  const none = await cli(['qemu-args', 'vm9', '--json'], { env });
  t.same(JSON.parse(none.stdout), { domain: 'vm9', args: [], edits: [], hotplug: [], placements: [], planned: false });
  const bad = await cli(['qemu-args', '../x'], { env });
  t.equal(bad.exitCode, 2);
});
