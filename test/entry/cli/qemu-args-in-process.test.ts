import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeDomainPlan } from '../../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../../src/types.js';
import { domainXml } from '../../helpers/libvirt-domains.js';
import { scratchDir } from '../../helpers/scratch.js';
import { runCliInProcess } from '../../helpers/cli-in-process.js';

/** `vfpool qemu-args` in-process: the text form of each kind of line, and unreadable input. */
function world(t: Test) {
  const dir = scratchDir(t);
  mkdirSync(join(dir, 'etc'));
  const qemu = join(dir, 'qemu');
  writeFileSync(qemu, "#!/bin/sh\necho 'virtio-net-pci options:'\necho '  sriov-pf=<str>'\n");
  chmodSync(qemu, 0o755);
  return { dir, env: { VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: join(dir, 'run'), VFPOOL_QEMU: qemu } };
}

t.test('a hotplug plan as text: the reserved port, the QMP monitor and the device_add at started', async (t) => {
  const { env } = world(t);
  await writeDomainPlan(env.VFPOOL_STATE_DIR, {
    version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: '52:54:00:11:22:33' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
  }, { uid: process.getuid!(), gid: process.getgid!() });
  const r = await runCliInProcess(['qemu-args', 'vm1'], env);
  t.same([r.exitCode, r.stderr], [0, '']);
  t.equal(r.stdout, [
    '-device pcie-root-port,id=vfpool-rp0,bus=pcie.0,addr=0x1e,chassis=128,slot=0',
    `-qmp unix:${env.VFPOOL_STATE_DIR}/qemu/vm1/qmp.sock,server=on,wait=off`,
    `# once QEMU runs (the 'started' hook, or \`vfpool plug vm1\`), device_add {"driver":"vfio-pci","id":"vfpool-vf0","bus":"vfpool-rp0","addr":"0x0","host":"0000:3b:02.0"}`,
    '',
  ].join('\n'));
});

t.test('no plan: one comment line saying the command line passes untouched', async (t) => {
  const { env } = world(t);
  t.same(await runCliInProcess(['qemu-args', 'vm9'], env), {
    exitCode: 0,
    stdout: '# domain vm9 has no vfpool plan: the wrapper passes its command line to QEMU untouched\n',
    stderr: '',
  });
});

t.test('--xml that cannot be read, or asks for no device', async (t) => {
  const { dir, env } = world(t);
  const r = await runCliInProcess(['qemu-args', '--xml', join(dir, 'missing.xml')], env);
  t.equal(r.exitCode, 2);
  t.equal(r.stderr, `vfpool: cannot read ${join(dir, 'missing.xml')}: ENOENT: give the path of a domain XML file\n`);
  const plain = join(dir, 'plain.xml');
  writeFileSync(plain, domainXml('prepare', { name: 'vm2' }));
  const j = await runCliInProcess(['qemu-args', '--xml', plain, '--json'], env);
  t.equal(j.exitCode, 0, j.stderr);
  // Nothing to add: --xml prints what QEMU starts with as it is, so not even vfpool's QMP
  // socket, whose directory only prepare makes.
  t.same(JSON.parse(j.stdout), { domain: 'vm2', args: [], edits: [], hotplug: [], placements: [], planned: true });
  t.equal((await runCliInProcess(['qemu-args', '--xml', plain], env)).stdout, '');
});

t.test('a failover pair: the primary paired with the standby, and the edit of libvirt\'s virtio-net said, not refused', async (t) => {
  const { env } = world(t);
  const mac = '52:54:00:22:00:02' as MacAddress;
  for (const delivery of ['cmdline', 'hotplug'] as const) {
    await writeDomainPlan(env.VFPOOL_STATE_DIR, {
      version: 1, domain: 'hy1', uuid: null, delivery, sriovNics: [],
      vfs: [{ id: 'vfpool-vf0', host: '0000:3c:02.0' as PciAddress, emulatedModel: null, mac, failoverStandbyMac: mac, guestAddress: null }],
    }, { uid: process.getuid!(), gid: process.getgid!() });
    const j = await runCliInProcess(['qemu-args', 'hy1', '--json'], env);
    t.same([j.exitCode, j.stderr], [0, ''], `${delivery}: exit 0`);
    const out = JSON.parse(j.stdout) as { args: string[]; edits: unknown[]; hotplug: Array<Record<string, string>> };
    t.same(out.edits, [{ device: `virtio-net device with mac=${mac}`, mac, set: { failover: 'on', id: 'vfpool-vf0-standby' } }], `${delivery}: the standby's edit`);
    const primary = delivery === 'cmdline' ? out.args.find((a) => a.startsWith('vfio-pci,')) : out.hotplug[0]?.failover_pair_id;
    t.match(primary, /vfpool-vf0-standby/, `${delivery}: the primary names the standby`);
  }
  const text = await runCliInProcess(['qemu-args', 'hy1'], env);
  t.equal(text.exitCode, 0, text.stderr);
  t.match(text.stdout, `\n# and on the virtio-net device with mac=${mac} already on the command line (the failover standby): failover=on, and id=vfpool-vf0-standby if it has none (an id it has is kept, and failover_pair_id names that one)\n`);
});

t.test('--xml with an <interface> on a hybrid pool needs its VF allocated first, as vfpool:hostdev does; on another network it is nothing of vfpool\'s', async (t) => {
  const { dir, env } = world(t);
  mkdirSync(join(dir, 'etc/networks'));
  writeFileSync(join(dir, 'etc/networks/hy.xml'), `<network><name>hy</name><forward mode='pci-passthrough-hybrid'><pf dev='eth2'/></forward></network>`);
  const nic = (net: string) => `<interface type='network'><mac address='52:54:00:22:00:02'/><source network='${net}'/><model type='virtio'/></interface>`;
  const file = join(dir, 'hy1.xml');
  writeFileSync(file, domainXml('prepare', { name: 'hy1', devices: nic('hy') }));
  t.same(await runCliInProcess(['qemu-args', '--xml', file], env), {
    exitCode: 2,
    stdout: '',
    stderr: `vfpool: domain 'hy1': <interface> #1 on pci-passthrough-hybrid pool 'hy' needs a VF allocated first: run \`vfpool prepare --xml ${file}\`, then \`vfpool qemu-args hy1\`\n`,
  });
  writeFileSync(file, domainXml('prepare', { name: 'hy1', devices: nic('default') }));
  t.equal((await runCliInProcess(['qemu-args', '--xml', file], env)).exitCode, 0, 'libvirt\'s own network');
});
