/**
 * The whole flow through the real entry points on a real kernel (issue 3, item 3), in the lab
 * guest: hooks/network start → hooks/qemu prepare for a domain asking for a VF with a MAC → the
 * VF has that MAC on the real PF and is on vfio-pci → release → the original MAC, VLAN and
 * driver are back → hooks/network stopped → the VFs are gone. The hooks are spawned as libvirt
 * runs them (argv, hookData/domain XML on stdin, an almost empty environment); what the kernel
 * did is read with iproute2 and sysfs directly, not through vfpool. Run only inside the lab
 * guest by test/lab/guest-suites.sh:
 *   node dist/test/entry/flow-real.lab.js
 */
import t from 'tap';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { domainXml } from '../helpers/libvirt-domains.js';
import { assertLabGuest, findLabPf, IP, labTempDir, resetLabPf, sysfsDriverOf } from '../helpers/real-host.js';
import { spawnEntry } from '../helpers/spawn.js';

assertLabGuest('flow-real.lab.js');
const lab = findLabPf();
t.setTimeout(10 * 60_000);

const NET = 'vfp-lab';
const DOM = 'lab-vm';
const MAC = '52:54:00:1a:b0:01';
const NUM = 3;

// What libvirt 11.3 hands the network hook for a hostdev network carrying a vfpool pool in its
// metadata (test/libvirt/samples/stdin-network-vfp-net-start-begin.xml), on the guest's PF.
// managed='no': the VFs stay on igbvf until a guest gets one, so release has a driver to give back.
const HOOK_DATA = `<hookData>
  <network>
    <name>${NET}</name>
    <uuid>5f1c8a52-3b8e-4d7a-9c61-0a5e2f4b7d0a</uuid>
    <metadata>
      <vfpool:pool xmlns:vfpool="https://vfpool.dev/xmlns/1">
        <vfpool:pf dev="${lab.pf}">
          <vfpool:vf num="${NUM}"/>
        </vfpool:pf>
      </vfpool:pool>
    </metadata>
    <forward mode='hostdev' managed='no'/>
  </network>
</hookData>
`;
const DOMAIN = domainXml('prepare', { name: DOM, vfpool: `<vfpool:hostdev pool='${NET}' mac='${MAC}' vlan='100'/>` });

interface VfSeen {
  address: string;
  mac: string;
  vlan: number;
  driver: string | null;
}

/** Every VF as the kernel shows it: vfinfo_list from iproute2, virtfnN and driver from sysfs. */
async function kernelVfs(): Promise<VfSeen[]> {
  const r = await execa(IP, ['-j', '-d', 'link', 'show', 'dev', lab.pf]);
  const info = (JSON.parse(r.stdout) as Array<{ vfinfo_list?: Array<{ vf: number; address: string; vlan_list?: Array<{ vlan?: number }> }> }>)[0]?.vfinfo_list ?? [];
  const dev = `/sys/class/net/${lab.pf}/device`;
  const links = readdirSync(dev).filter((e) => /^virtfn\d+$/.test(e));
  return links
    .map((l) => Number(l.slice(6)))
    .sort((a, b) => a - b)
    .map((i) => {
      const address = basename(readlinkSync(join(dev, `virtfn${i}`)));
      const vi = info.find((v) => v.vf === i);
      return { address, mac: vi?.address ?? '?', vlan: vi?.vlan_list?.[0]?.vlan ?? 0, driver: sysfsDriverOf(address) };
    });
}

const dir = labTempDir('vfpool-flow');
const env = {
  VFPOOL_HOST: 'linux',
  VFPOOL_STATE_DIR: join(dir, 'run'),
  VFPOOL_JOURNAL_DIR: join(dir, 'journal'),
  VFPOOL_CONFIG_DIR: join(dir, 'etc'),
  VFPOOL_LIBVIRT_RUN_DIR: join(dir, 'libvirt-run'),
};
mkdirSync(join(dir, 'etc'), { recursive: true });
mkdirSync(join(dir, 'libvirt-run'), { recursive: true });
const network = (op: string, sub: string) => spawnEntry('hooks/network', [NET, op, sub, '-'], { env, stdin: HOOK_DATA });
const qemuHook = (op: string, sub: string, extra: string) => spawnEntry('hooks/qemu', [DOM, op, sub, extra], { env, stdin: DOMAIN });

let before: VfSeen[] = [];
let mine: VfSeen | undefined;

t.before(() => resetLabPf(lab.pf));
t.teardown(() => resetLabPf(lab.pf));

t.test(`network start begin: ${NUM} VFs on ${lab.pf}, on igbvf`, async (t) => {
  const r = await network('start', 'begin');
  t.same([r.exitCode, r.stderr], [0, ''], 'hooks/network exits 0 and prints nothing');
  const dev = `/sys/class/net/${lab.pf}/device`;
  t.equal(readFileSync(join(dev, 'sriov_numvfs'), 'utf8').trim(), String(NUM), `sriov_numvfs is ${NUM}`);
  // An administrator's VLANs on the VFs, so that "the VLAN is back" means something.
  for (let i = 0; i < NUM; i++) await execa(IP, ['link', 'set', 'dev', lab.pf, 'vf', String(i), 'vlan', String(40 + i)]);
  before = await kernelVfs();
  t.equal(before.length, NUM, `${NUM} virtfn links`);
  t.ok(before.every((v) => v.driver === 'igbvf'), `every VF on igbvf (unmanaged pool): ${before.map((v) => v.driver).join(', ')}`);
  t.ok(before.every((v) => v.mac !== '00:00:00:00:00:00'), 'every VF has a MAC the PF knows (probed with the PF up)');
});

t.test(`vfpool doctor on the real kernel: IOMMU, interrupt remapping, vfio and the PF ${lab.pf} pass`, async (t) => {
  // The lab guest has an emulated VT-d with intremap=on, Debian's vfio modules and the igb PF;
  // no libvirt daemon or hooks, so doctor as a whole still exits 1 there.
  const r = await spawnEntry('dist/bin/cli.cjs', ['doctor', '--json'], { env });
  const checks = (JSON.parse(r.stdout) as { checks: Array<{ id: string; ok: boolean; found: string; fix: string | null }> }).checks;
  for (const id of ['sr-iov', 'iommu', 'interrupt-remapping', 'vfio-pci', 'vfio-iommu-type1', `pf:${lab.pf}`]) {
    const c = checks.find((x) => x.id === id);
    t.ok(c?.ok, `${id}: ${c?.found ?? 'missing'}${c?.fix ? ` (fix: ${c.fix})` : ''}`);
  }
  t.equal(r.exitCode, checks.every((c) => c.ok) ? 0 : 1, 'exit 1 exactly when a check failed');
});

t.test(`qemu prepare begin: one VF gets ${MAC} and VLAN 100 on the real PF, and vfio-pci`, async (t) => {
  const r = await qemuHook('prepare', 'begin', '-');
  t.same([r.exitCode, r.stdout, r.stderr], [0, '', ''], 'hooks/qemu exits 0 and prints nothing');
  const now = await kernelVfs();
  const withMac = now.filter((v) => v.mac === MAC);
  t.equal(withMac.length, 1, `exactly one VF reports ${MAC} in the PF's vfinfo_list`);
  mine = before.find((v) => v.address === withMac[0]?.address);
  const vf = withMac[0];
  if (!vf || !mine) return;
  t.equal(vf.vlan, 100, 'its VLAN is 100');
  t.equal(vf.driver, 'vfio-pci', 'it is bound to vfio-pci');
  const group = basename(readlinkSync(`/sys/bus/pci/devices/${vf.address}/iommu_group`));
  t.ok(existsSync(`/dev/vfio/${group}`) && statSync(`/dev/vfio/${group}`).isCharacterDevice(), `/dev/vfio/${group} exists for QEMU to open`);
  t.same(now.filter((v) => v.address !== vf.address), before.filter((v) => v.address !== vf.address), 'the other VFs are untouched');
});

t.test('qemu release end: the original MAC, VLAN and driver are back; a second release is a no-op', async (t) => {
  const r = await qemuHook('release', 'end', 'destroyed');
  t.same([r.exitCode, r.stdout, r.stderr], [0, '', ''], 'hooks/qemu exits 0 and prints nothing');
  const now = await kernelVfs();
  if (!mine) {
    t.fail('prepare gave no VF to look at');
    return;
  }
  const vf = now.find((v) => v.address === mine!.address);
  t.same(vf, mine, `${mine.address}: MAC ${mine.mac}, VLAN ${mine.vlan}, driver ${mine.driver} again`);
  t.ok(readdirSync(`/sys/bus/pci/devices/${mine.address}/net`).length === 1, 'with its netdev back');
  t.same(now, before, 'every VF as it was before prepare');
  const again = await qemuHook('release', 'end', 'destroyed');
  t.same([again.exitCode, again.stderr], [0, ''], 'release again: exit 0');
  t.same(await kernelVfs(), before, 'and nothing changed');
});

t.test('network stopped end: the VFs are gone', async (t) => {
  const r = await network('stopped', 'end');
  t.same([r.exitCode, r.stderr], [0, ''], 'hooks/network exits 0 and prints nothing');
  const dev = `/sys/class/net/${lab.pf}/device`;
  t.equal(readFileSync(join(dev, 'sriov_numvfs'), 'utf8').trim(), '0', 'sriov_numvfs is 0');
  t.same(readdirSync(dev).filter((e) => e.startsWith('virtfn')), [], 'no virtfn links');
});
