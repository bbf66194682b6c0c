import t from 'tap';
import { spawnSync } from 'node:child_process';
import type { Test } from 'tap';
import { chmodSync, chownSync, copyFileSync, lutimesSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.js';
import { createContext } from '../../src/pool/context.js';
import { runDoctor, type Check } from '../../src/ops/doctor.js';
import { checkStateDirs } from '../../src/ops/doctor-install.js';
import { checkSecurityDriver } from '../../src/ops/doctor-security.js';
import { installRoot } from '../../src/entry/cli/install-root.js';
import { makeFixtureKernel } from '../helpers/fixture-kernel.js';
import { scratchDir } from '../helpers/scratch.js';
import { REPO } from '../helpers/spawn.js';

/**
 * vfpool doctor on a fixture host: a sysfs tree (test/helpers/fixture-kernel.ts) with an Intel
 * IOMMU, /proc with a libvirt daemon, /lib/modules, /etc/libvirt and a stand-in QEMU. The
 * well-prepared host passes every check; each case then breaks one prerequisite the way a real
 * host breaks it and expects exactly that check to fail, with its fix.
 */
interface World {
  root: string;
  settings: Settings;
  env: Record<string, string>;
}

const RELEASE = '6.12.0-test';

function fakeQemu(path: string, props: string[]): void {
  writeFileSync(path, `#!/bin/sh\ncase "$1" in\n  --version) echo 'QEMU emulator version 10.0.2'; exit 0 ;;\n  -device) printf '%s\\n' 'virtio-net-pci options:' ${props.map((p) => `'  ${p}=<bool>'`).join(' ')}; exit 0 ;;\nesac\nexit 1\n`);
  chmodSync(path, 0o755);
}

function wellPreparedHost(t: Test): World {
  const root = scratchDir(t);
  const fx = makeFixtureKernel(join(root, 'fx'), { pfs: [{ name: 'eth1', totalVfs: 8, address: '0000:3b:00.0' }] });
  const sys = fx.sysfs;
  const proc = fx.proc;
  const put = (path: string, text: string) => {
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, text);
  };
  put(join(sys, 'class/iommu/dmar0/intel-iommu/ecap'), 'f020de\n'); // bit 3 (IR) set, as on VT-d with interrupt remapping
  mkdirSync(join(sys, 'kernel/iommu_groups/0/devices'), { recursive: true });
  mkdirSync(join(sys, 'module/vfio_pci'), { recursive: true });
  put(join(proc, 'cmdline'), 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n');
  put(join(proc, 'cpuinfo'), 'processor\t: 0\nvendor_id\t: GenuineIntel\n');
  put(join(proc, 'sys/kernel/osrelease'), `${RELEASE}\n`);
  const modules = join(root, 'lib/modules');
  put(join(modules, RELEASE, 'modules.dep'), 'kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz\nkernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n');
  put(join(modules, RELEASE, 'modules.builtin'), '');
  const libvirt = join(root, 'etc/libvirt');
  for (const d of ['network', 'qemu']) {
    mkdirSync(join(libvirt, 'hooks', `${d}.d`), { recursive: true });
    symlinkSync(join(REPO, 'hooks', d), join(libvirt, 'hooks', `${d}.d`, 'vfpool'));
  }
  put(join(libvirt, 'qemu.conf'), '# as the package ships it: every line a comment\n#namespaces = [ "mount" ]\n');
  // A virtqemud that started a minute after boot, and boot a minute from now: after the hooks.
  const boot = Math.floor(Date.now() / 1000) + 60;
  put(join(proc, 'stat'), `cpu  1 2 3\nbtime ${boot}\n`);
  put(join(proc, '4242/comm'), 'virtqemud\n');
  put(join(proc, '4242/stat'), `4242 (virtqemud) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 18 0 6000 0 0\n`);
  put(join(proc, 'self/status'), 'Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n'); // root with every capability
  put(join(proc, 'self/mounts'), 'proc /proc proc rw 0 0\n');
  put(join(proc, '4242/limits'), 'Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         unlimited            unlimited            bytes\n');
  const qemu = join(root, 'qemu-system-x86_64');
  fakeQemu(qemu, ['failover', 'sriov-pf']);
  const settings: Settings = {
    ...DEFAULT_SETTINGS,
    host: 'linux',
    sysfsRoot: sys,
    procRoot: proc,
    devRoot: fx.dev,
    ipPath: fx.ipPath,
    configDir: join(root, 'etc/vfpool'),
    stateDir: join(root, 'run/vfpool'),
    journalDir: join(root, 'var/lib/vfpool'),
    modulesDir: modules,
    libvirtConfDir: libvirt,
    etcDir: join(root, 'etc'),
    libvirtRunDir: join(root, 'run/libvirt/qemu'),
    qemuPath: qemu,
  };
  mkdirSync(join(settings.configDir, 'networks'), { recursive: true });
  writeFileSync(join(settings.configDir, 'networks/p.xml'), `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='4'/></pf></forward></network>`);
  writeFileSync(join(settings.configDir, 'vfpool.conf'), '#VFPOOL_STATE_DIR=/run/vfpool\n');
  mkdirSync(settings.stateDir, { recursive: true, mode: 0o700 });
  // As on a host: the directories above the state directory let the QEMU user pass.
  for (const d of [root, join(root, 'run')]) chmodSync(d, 0o755);
  writeFileSync(join(settings.stateDir, 'vfpool.log'), '', { mode: 0o600 });
  return { root, settings, env: { VFPOOL_CONFIG_DIR: settings.configDir } };
}

async function doctor(w: World): Promise<Check[]> {
  return runDoctor(createContext(w.settings, 'test doctor'), { installDir: REPO, env: w.env, graceMs: 0 });
}

const ALL_IDS = [
  'sr-iov', 'iommu', 'interrupt-remapping', 'vfio-pci', 'vfio-iommu-type1', 'pf:eth1', 'pool:p', 'hook:network', 'hook:qemu',
  'libvirt-daemon', 'vfpool.conf', 'state-dir', 'journal-dir', 'qemu', 'qemu:failover', 'qemu:sriov-pf', 'hotplug', 'apparmor', 'stale-allocations',
];

t.test('a state directory of 0711 passes: a guest\'s QEMU plan lives under it (and install.sh creates it so)', async (t) => {
  const w = wellPreparedHost(t);
  // What writeDomainPlan leaves: the QEMU user may traverse the state directory and qemu/, never list them.
  mkdirSync(join(w.settings.stateDir, 'qemu/vm1'), { recursive: true, mode: 0o700 });
  chmodSync(w.settings.stateDir, 0o711);
  chmodSync(join(w.settings.stateDir, 'qemu'), 0o711);
  const c = (await doctor(w)).find((x) => x.id === 'state-dir')!;
  t.same([c.ok, c.fix], [true, null], c.found);
  t.match(c.found, /run\/vfpool 0711, files 0600$/);
});

t.test('a well-prepared fixture host passes every check', async (t) => {
  const checks = await doctor(wellPreparedHost(t));
  t.same(checks.map((c) => c.id), ALL_IDS);
  for (const c of checks) t.ok(c.ok && c.fix === null, `${c.id}: ${c.found}`);
  t.match(checks.find((c) => c.id === 'vfio-iommu-type1')!.found, /not loaded but available/);
  t.match(checks.find((c) => c.id === 'pf:eth1')!.found, '0000:3b:00.0 driver igb, link up, 0 of 8 VFs');
});

const s = (w: World) => w.settings;
const cases: Array<[string, string, (w: World) => void, RegExp, RegExp?]> = [
  ['no IOMMU registered', 'iommu', (w) => rmSync(join(s(w).sysfsRoot, 'class/iommu'), { recursive: true }), /intel_iommu=on iommu=pt.*GRUB_CMDLINE_LINUX.*update-grub/],
  ['interrupt remapping off on the command line', 'interrupt-remapping', (w) => writeFileSync(join(s(w).procRoot, 'cmdline'), 'intel_iommu=on intremap=off\n'), /remove 'intremap=off'/],
  ['a DMAR unit without the IR capability', 'interrupt-remapping', (w) => writeFileSync(join(s(w).sysfsRoot, 'class/iommu/dmar0/intel-iommu/ecap'), 'f020d6\n'), /intremap=on|Interrupt Remapping/, /dmar0: no interrupt-remapping capability/],
  ['vfio-pci neither loaded nor installed', 'vfio-pci', (w) => {
    rmSync(join(s(w).sysfsRoot, 'module/vfio_pci'), { recursive: true });
    writeFileSync(join(s(w).modulesDir, RELEASE, 'modules.dep'), 'kernel/drivers/vfio/vfio_iommu_type1.ko.xz:\n');
  }, /modprobe vfio_pci/],
  ['vfio_iommu_type1 missing', 'vfio-iommu-type1', (w) => writeFileSync(join(s(w).modulesDir, RELEASE, 'modules.dep'), ''), /modprobe vfio_iommu_type1/],
  ['the PF is down', 'pf:eth1', (w) => writeFileSync(join(s(w).sysfsRoot, 'class/net/eth1/flags'), '0x1002\n'), /ip link set eth1 up/],
  ['a pool asks for more VFs than the PF has', 'pool:p', (w) => writeFileSync(join(s(w).configDir, 'networks/p.xml'), `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='9'/></pf></forward></network>`), /lower <vf num> to at most 8/],
  ['a pool on a PF this host lacks', 'pool:p', (w) => writeFileSync(join(s(w).configDir, 'networks/p.xml'), `<network><name>p</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>`), /name an existing PF/],
  // The README's direct-network (<pf dev='eth2'/>) on a PF without VFs: it starts, and hands out nothing.
  ['a pool with no <vf num> on a PF without VFs', 'pool:p', (w) => writeFileSync(join(s(w).configDir, 'networks/p.xml'), `<network><name>p</name><forward mode='pci-passthrough-hybrid'><pf dev='eth1'/></forward></network>`),
    /^give <pf dev='eth1'> a <vf num='N'\/> \(N at most 8\), or create them: echo N > \S+\/class\/net\/eth1\/device\/sriov_numvfs$/, /^eth1 has no VFs, and no pool's <vf num> creates them$/],
  ['a pool whose definition does not parse', 'pool:p', (w) => writeFileSync(join(s(w).configDir, 'networks/p.xml'), `<network><name>p</name>`), /vfpool net-undefine p/],
  ['the qemu hook is not installed', 'hook:qemu', (w) => rmSync(join(s(w).libvirtConfDir, 'hooks/qemu.d/vfpool')), /install\.sh/],
  ['a hook leads to another install', 'hook:network', (w) => {
    // An older install elsewhere, its shim a copy of this one's.
    mkdirSync(join(w.root, 'old/hooks'), { recursive: true });
    symlinkSync(join(REPO, 'hooks/vfpool-hook'), join(w.root, 'old/hooks/network'));
    rmSync(join(s(w).libvirtConfDir, 'hooks/network.d/vfpool'));
    symlinkSync(join(w.root, 'old/hooks/network'), join(s(w).libvirtConfDir, 'hooks/network.d/vfpool'));
  }, /^ln -sfn .*\/hooks\/network .*network\.d\/vfpool$/],
  ['the daemon started before the hooks appeared', 'libvirt-daemon', (w) => {
    for (const d of ['network', 'qemu']) {
      const future = new Date(Date.now() + 3600_000);
      utimesLink(join(s(w).libvirtConfDir, 'hooks', `${d}.d`, 'vfpool'), future);
    }
  }, /^systemctl restart virtqemud$/],
  ['no libvirt daemon runs', 'libvirt-daemon', (w) => rmSync(join(s(w).procRoot, '4242'), { recursive: true }), /systemctl start libvirtd/],
  ['vfpool.conf has a bad line', 'vfpool.conf', (w) => writeFileSync(join(s(w).configDir, 'vfpool.conf'), 'VFPOOL_STATE_DIR /x\n'), /edit .*vfpool\.conf/, /vfpool\.conf:1: 'VFPOOL_STATE_DIR \/x' is not a KEY=value line/],
  // Only what is wrong is named: index/ and qemu/ are directories and qemu/NAME/ is the QEMU user's.
  // The QEMU wrapper runs as the domain's QEMU user and reads it.
  ['vfpool.conf is root\'s alone', 'vfpool.conf', (w) => chmodSync(join(s(w).configDir, 'vfpool.conf'), 0o600), /^chmod 0644 \S+\/etc\/vfpool\/vfpool\.conf$/, /vfpool\.conf has mode 600: the QEMU wrapper, which runs as the domain's QEMU user, cannot read/],
  ['the directory of vfpool.conf is root\'s alone', 'vfpool.conf', (w) => chmodSync(s(w).configDir, 0o700), /^chmod o\+x \S+\/etc\/vfpool$/],
  ['the state directory is readable by all', 'state-dir', (w) => chmodSync(s(w).stateDir, 0o755), /^chmod go-rw \S+\/run\/vfpool$/, /run\/vfpool has mode 755, not 700 or 711/],
  // The QEMU user walks down to qemu/NAME/plan.json through every directory above it.
  ['a directory above the state directory is 0700', 'state-dir', (w) => chmodSync(join(s(w).stateDir, '..'), 0o700), /^chmod o\+x \S+\/run$/, /\/run has no o\+x: the QEMU user cannot reach \S+\/run\/vfpool\/qemu$/],
  ['the state file is readable by all', 'state-dir', (w) => writeFileSync(join(s(w).stateDir, 'state.json'), '{"version":2,"pools":{},"allocations":[],"ports":[],"bindings":[],"leftovers":[]}', { mode: 0o644 }), /^chmod 0600 \S+\/run\/vfpool\/state\.json$/],
  ['a journal file readable by all', 'journal-dir', (w) => {
    mkdirSync(s(w).journalDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(s(w).journalDir, 'history.jsonl'), '', { mode: 0o644 });
    chmodSync(join(s(w).journalDir, 'history.jsonl'), 0o644);
  }, /chmod 0600/],
  ['VFPOOL_QEMU does not run', 'qemu', (w) => (s(w).qemuPath = join(w.root, 'no-such-qemu')), /VFPOOL_QEMU=/],
  ['a QEMU without failover', 'qemu:failover', (w) => fakeQemu(s(w).qemuPath, ['sriov-pf']), /QEMU >= 4\.2/],
  ['a QEMU without sriov-pf, and a prepared domain with an emulated SR-IOV NIC', 'qemu:sriov-pf', (w) => {
    fakeQemu(s(w).qemuPath, ['failover']);
    sriovNicPlan(w);
  }, /QEMU >= 10\.1:/, /has no 'sriov-pf' property \(needed by emulated virtio-net SR-IOV, which domain\(s\) vm1 ask for\)$/],
  ['root lacks CAP_SYS_RESOURCE (a container that drops it)', 'hotplug', (w) => writeFileSync(join(s(w).procRoot, 'self/status'), 'Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n'), /CAP_SYS_RESOURCE/, /lacks CAP_SYS_RESOURCE \(CapEff 000001fffeffffff\)/],
];

t.test('an installed vfpool\'s hook fixes name its install by the link install.sh keeps, and they make the check pass', async (t) => {
  // Reproduced: an install's doctor said \`bash PREFIX/lib/vfpool.STAMP/install.sh\`, a file
  // install.sh never copies; and its \`ln -sfn\` named that STAMP, which the next install deletes.
  const w = wellPreparedHost(t);
  const lib = join(w.root, 'usr/local/lib');
  const stamp = join(lib, 'vfpool.20261201153814.8303');
  mkdirSync(join(stamp, 'hooks'), { recursive: true });
  mkdirSync(join(stamp, 'dist/bin'), { recursive: true });
  writeFileSync(join(stamp, 'dist/bin/cli.cjs'), '');
  writeFileSync(join(stamp, 'package.json'), '{}');
  copyFileSync(join(REPO, 'hooks/vfpool-hook'), join(stamp, 'hooks/vfpool-hook'));
  chmodSync(join(stamp, 'hooks/vfpool-hook'), 0o755);
  for (const d of ['network', 'qemu']) symlinkSync('vfpool-hook', join(stamp, 'hooks', d));
  symlinkSync(basename(stamp), join(lib, 'vfpool'));
  // What the installed CLI finds as its install: its own realpath's, the STAMP.
  const installDir = installRoot(join(lib, 'vfpool/dist/bin/cli.cjs'));
  t.equal(installDir, stamp);
  const hooks = join(w.settings.libvirtConfDir, 'hooks');
  rmSync(join(hooks, 'qemu.d'), { recursive: true });
  const check = async (id: string) => (await runDoctor(createContext(w.settings, 'test doctor'), { installDir, env: w.env, graceMs: 0 })).find((c) => c.id === id)!;
  const missing = await check('hook:qemu');
  t.same([missing.ok, missing.fix], [false, `mkdir -p ${hooks}/qemu.d && ln -sfn ${lib}/vfpool/hooks/qemu ${hooks}/qemu.d/vfpool`]);
  const elsewhere = await check('hook:network'); // still the checkout's link
  t.same([elsewhere.ok, elsewhere.fix], [false, `ln -sfn ${lib}/vfpool/hooks/network ${hooks}/network.d/vfpool`]);
  for (const c of [missing, elsewhere]) t.equal(spawnSync('sh', ['-c', c.fix!]).status, 0, c.fix!);
  for (const id of ['hook:qemu', 'hook:network']) t.ok((await check(id)).ok, `${id} passes after its fix`);
});

t.test('a pool with no <vf num> on a PF without VFs: another pool\'s <vf num> counts only while that pool runs', async (t) => {
  // Reproduced: q (<pf dev='eth1'/>) showed 'ok' while eth1 had 0 VFs, because the stopped pool
  // p's <vf num='4'> on eth1 was counted as creating them; q's guests got nothing.
  const w = wellPreparedHost(t);
  writeFileSync(join(s(w).configDir, 'networks/q.xml'), `<network><name>q</name><forward mode='passthrough'><pf dev='eth1'/></forward></network>`);
  const stopped = await doctor(w);
  t.same(stopped.filter((c) => !c.ok).map((c) => c.id), ['pool:q']);
  const q = stopped.find((c) => c.id === 'pool:q')!;
  t.equal(q.found, "eth1 has no VFs: pool p's <vf num='4'> would create them, but that pool is not running");
  t.match(q.fix, /^start `vfpool net-start p` \(for a libvirt network: virsh net-start NAME, and virsh net-autostart NAME to have it at boot\), or give <pf dev='eth1'> a <vf num='N'\/>/);
  // p running, its VFs gone by hand: p's own row says so; q's would only repeat it.
  runningPool(w, 4);
  t.same((await doctor(w)).filter((c) => !c.ok).map((c) => c.id), ['pool:p'], 'p runs: its count is eth1\'s, or p fails');
});

t.test('libvirt\'s default qemu.conf and daemon limits pass: the VFs are hot-plugged at started, which needs neither', async (t) => {
  // Reproduced: doctor failed qemu.conf:namespaces, qemu.conf:device-cgroup and memlock on a
  // stock libvirt, with fixes (namespaces = [ ], /dev/vfio in the ACL, LimitMEMLOCK=infinity)
  // that only a command-line delivery needs, which vfpool never uses for a libvirt guest's VFs,
  // and that downgrade every domain's isolation (docs/libvirt-delivery.md).
  const w = wellPreparedHost(t);
  writeFileSync(join(s(w).libvirtConfDir, 'qemu.conf'), '# Master configuration file for the QEMU driver.\n#namespaces = [ "mount" ]\n');
  writeFileSync(join(s(w).procRoot, '4242/limits'), 'Max locked memory         8388608              8388608              bytes\n');
  const checks = await doctor(w);
  t.same(checks.filter((c) => !c.ok).map((c) => c.id), []);
  t.equal(checks.find((c) => c.id === 'hotplug')!.found, "the 'started' hook can hot-plug VFs into QEMU");
});

t.test('\'hotplug\' fails on cgroup2 without bpftool, and does not judge root\'s capabilities when doctor is not root', async (t) => {
  const w = wellPreparedHost(t);
  const hotplug = async (status: string, mounts: string, bpftool: boolean) => (await runDoctor(createContext(w.settings, 'test doctor'), {
    installDir: REPO, env: w.env, graceMs: 0, deliveryFacts: { selfStatus: () => status, mounts: () => mounts, hasBpftool: () => bpftool, qemuConf: () => null },
  })).find((c) => c.id === 'hotplug')!;
  const root = 'Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n';
  const cgroup2 = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
  const c = await hotplug(root, cgroup2, false);
  t.same([c.ok, c.fix], [false, 'install it: apt-get install bpftool']);
  t.match(c.found, /cgroup2.*bpftool is not installed/);
  t.equal((await hotplug(root, cgroup2, true)).ok, true, 'with bpftool');
  const user = await hotplug('Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n', '', false);
  t.same([user.ok, user.found], [true, "the 'started' hook can hot-plug VFs into QEMU (root's CAP_SYS_RESOURCE not checked: doctor runs as another user)"]);
});

t.test('\'hotplug\' is not demanded of a simulated host whose VFs are emulated stand-ins (VFPOOL_SIM_VF_DEVICE)', async (t) => {
  // Reproduced: a simulated host in a container without CAP_SYS_RESOURCE (VFPOOL_SIM_VF_DEVICE=e1000e
  // in vfpool.conf) never got a clean doctor, for a limit no stand-in's delivery raises.
  const w = wellPreparedHost(t);
  const hostFile = join(w.root, 'sim-host.json');
  writeFileSync(hostFile, JSON.stringify({ pfs: [{ name: 'eth1', totalVfs: 8 }] }));
  const noCap = { selfStatus: () => 'Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n', mounts: () => '', hasBpftool: () => false, qemuConf: () => null };
  const hotplug = async (settings: Settings) => (await runDoctor(createContext(settings, 'test doctor'), { installDir: REPO, env: w.env, graceMs: 0, deliveryFacts: noCap })).find((c) => c.id === 'hotplug')!;
  const standIns = await hotplug({ ...w.settings, host: `sim:${hostFile}`, simVfDevice: 'e1000e', simDelivery: 'hotplug' });
  t.same([standIns.ok, standIns.fix], [true, null]);
  t.match(standIns.found, /^not needed: this simulated host's VFs reach QEMU as emulated e1000e NICs/);
  t.equal((await hotplug({ ...w.settings, host: `sim:${hostFile}` })).ok, false, 'a simulated host without stand-ins plans real VF addresses: still demanded');
  t.equal((await hotplug({ ...w.settings, simVfDevice: 'e1000e' })).ok, false, 'VFPOOL_SIM_VF_DEVICE means nothing on a real host');
});

/** A prepared domain whose plan asks for an emulated SR-IOV NIC (<vfpool:sriov-nic vfs='1'/>). */
function sriovNicPlan(w: World): void {
  const nic = { id: 'vfpool-sriov0', vfs: 1, backend: 'user', backendOptions: null, macs: ['52:54:00:00:00:01', '52:54:00:00:00:02'] };
  mkdirSync(join(s(w).stateDir, 'qemu/vm1'), { recursive: true, mode: 0o700 });
  writeFileSync(join(s(w).stateDir, 'qemu/vm1/plan.json'), JSON.stringify({ version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', vfs: [], sriovNics: [nic] }), { mode: 0o600 });
}

t.test('a QEMU without sriov-pf (Debian 12\'s 10.0) passes while no domain asks for an emulated SR-IOV NIC', async (t) => {
  // Reproduced: on the README's own platform (QEMU 10.0 from bookworm-backports) doctor never
  // exited 0, for a property that only <vfpool:sriov-nic> uses.
  const w = wellPreparedHost(t);
  fakeQemu(s(w).qemuPath, ['failover']);
  const checks = await doctor(w);
  t.same(checks.filter((c) => !c.ok).map((c) => c.id), [], 'every check passes');
  t.match(checks.find((c) => c.id === 'qemu:sriov-pf')!.found, /has no 'sriov-pf': only <vfpool:sriov-nic> \(emulated virtio-net SR-IOV\) needs it, which no prepared domain asks for$/);
  sriovNicPlan(w);
  t.same((await doctor(w)).filter((c) => !c.ok).map((c) => c.id), ['qemu:sriov-pf'], 'a domain asks for one: the check fails');
});

t.test('the state directories belong to root: doctor run as another user never suggests handing them to that user', async (t) => {
  const w = wellPreparedHost(t);
  const stateDir = (euid: number) => checkStateDirs(w.settings, null, euid).find((c) => c.id === 'state-dir')!;
  // Root's, as the hooks make it, seen by `vfpool doctor` run without sudo (uid 1000): that
  // suggested \`chown 1000:0 DIR\`, letting that user rewrite what root's hooks trust.
  t.same([stateDir(1000).ok, stateDir(1000).fix], [true, null], 'root-owned: fine whoever asks');
  chownSync(w.settings.stateDir, 4242, 4242);
  for (const euid of [0, 1000]) {
    const c = stateDir(euid);
    t.same([c.ok, c.found, c.fix], [false, `${w.settings.stateDir} is owned by uid 4242, not root`, `chown 0:0 ${w.settings.stateDir}`], `doctor as uid ${euid}`);
  }
});

t.test('a setting only the shell has: the hooks, run by libvirt without it, would use another value', async (t) => {
  // Reproduced: VFPOOL_STATE_DIR exported in root's shell (or put in /etc/environment, which
  // services never read): the CLI kept one state and the hooks another, and doctor said 'ok'.
  const w = wellPreparedHost(t);
  const conf = (env: Record<string, string>) => runDoctor(createContext(w.settings, 'test doctor'), { installDir: REPO, env: { ...w.env, ...env }, graceMs: 0 }).then((cs) => cs.find((c) => c.id === 'vfpool.conf')!);
  const c = await conf({ VFPOOL_STATE_DIR: '/srv/vfpool', VFPOOL_JOURNAL_DIR: '' });
  t.same([c.ok, c.found, c.fix], [false,
    'VFPOOL_STATE_DIR=/srv/vfpool comes from the environment, but libvirt runs the hooks and the QEMU wrapper without it: they use VFPOOL_STATE_DIR=/run/vfpool',
    `put VFPOOL_STATE_DIR=/srv/vfpool in ${join(w.settings.configDir, 'vfpool.conf')} so that both agree, or unset it`]);
  writeFileSync(join(w.settings.configDir, 'vfpool.conf'), 'VFPOOL_STATE_DIR=/srv/vfpool\n');
  t.same((await conf({ VFPOOL_STATE_DIR: '/srv/vfpool' })).ok, true, 'the same value in the file: both agree');
  t.same((await conf({ VFPOOL_STATE_DIR: '/run/vfpool', VFPOOL_HOST: 'sim:/h.json' })).found,
    'VFPOOL_STATE_DIR=/run/vfpool, VFPOOL_HOST=sim:/h.json come from the environment, but libvirt runs the hooks and the QEMU wrapper without them: they use VFPOOL_STATE_DIR=/srv/vfpool, VFPOOL_HOST=linux');
  rmSync(join(w.settings.configDir, 'vfpool.conf'));
  t.same((await conf({ VFPOOL_IP: '/usr/sbin/ip' })).ok, true, 'no file, the environment names the default: both agree');
});

/** state.json with pool p running, its start having set eth1 to `numVfs` VFs (and a start or stop under way, if `change`). */
function runningPool(w: World, numVfs: number, change: unknown = null): void {
  const xml = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
  const pool = { xml, origin: 'definition', startedAt: new Date().toISOString(), activated: [{ pf: 'eth1', numVfs }], change, bound: [], libvirtStartRefused: null };
  writeFileSync(join(w.settings.stateDir, 'state.json'), JSON.stringify({ version: 2, pools: { p: pool }, allocations: [], ports: [], bindings: [], leftovers: [] }), { mode: 0o600 });
}

t.test('fails \'pool:p\' when the PF of a running pool no longer has the VFs its start made (sriov_numvfs written by hand)', async (t) => {
  const w = wellPreparedHost(t);
  runningPool(w, 0);
  t.same((await doctor(w)).filter((c) => !c.ok).map((c) => c.id), [], 'a running pool whose count is the PF\'s passes');
  runningPool(w, 4); // the fixture's eth1 has 0 VFs: someone wrote 0 to sriov_numvfs after the start
  const checks = await doctor(w);
  t.same(checks.filter((c) => !c.ok).map((c) => c.id), ['pool:p']);
  const c = checks.find((x) => x.id === 'pool:p')!;
  t.equal(c.found, 'the pool is active with 4 VF(s) on eth1, but eth1 has 0 now (sriov_numvfs changed outside vfpool)');
  t.match(c.fix, /vfpool net-destroy p && vfpool net-start p/);
});

t.test('fails \'pool:p\' when its start was killed half-way: guests are refused until reconcile mends it', async (t) => {
  const w = wellPreparedHost(t);
  const gone = spawnSync('/bin/true').pid!; // a pid that has exited
  runningPool(w, 0, { kind: 'starting', worker: gone, since: new Date().toISOString(), from: [{ pf: 'eth1', numVfs: 0 }] });
  const checks = await doctor(w);
  t.same(checks.filter((c) => !c.ok).map((c) => c.id), ['pool:p']);
  const c = checks.find((x) => x.id === 'pool:p')!;
  t.equal(c.found, `its start was interrupted (vfpool pid ${gone} is gone): guests of the pool are refused`);
  t.equal(c.fix, 'vfpool reconcile (it undoes the start; then start the pool again)');
  runningPool(w, 0, { kind: 'starting', worker: process.pid, since: new Date().toISOString(), from: [{ pf: 'eth1', numVfs: 0 }] });
  t.equal((await doctor(w)).find((x) => x.id === 'pool:p')!.ok, true, 'a start under way (its vfpool lives) is no failure');
});

t.test('a state file vfpool cannot read fails \'state-dir\' with its fix, and every other check still runs', async (t) => {
  const w = wellPreparedHost(t);
  writeFileSync(join(w.settings.stateDir, 'state.json'), '{"version":2,"pools":', { mode: 0o600 });
  const checks = await doctor(w);
  t.same(checks.map((c) => c.id), ALL_IDS, 'doctor did not stop at the state file');
  const c = checks.find((x) => x.id === 'state-dir')!;
  t.equal(c.ok, false);
  t.match(c.found, /state\.json is not valid JSON/);
  t.match(c.fix, /restore it from a copy/);
  // Judging allocations needs the state: that check says it cannot, nothing else fails.
  t.same(checks.filter((x) => !x.ok).map((x) => x.id), ['state-dir', 'stale-allocations']);
});

/** The link's own time (lutimes) is what install.sh's ln sets and what doctor reads. */
function utimesLink(path: string, when: Date): void {
  lutimesSync(path, when, when);
}

for (const [what, id, breakIt, fix, found] of cases) {
  t.test(`fails '${id}' when ${what}`, async (t) => {
    const w = wellPreparedHost(t);
    breakIt(w);
    const checks = await doctor(w);
    const failed = checks.filter((c) => !c.ok);
    t.same(failed.map((c) => c.id).filter((x) => x === id), [id], `${id} fails`);
    const c = failed.find((x) => x.id === id)!;
    t.match(c.fix, fix, 'with its fix');
    if (found) t.match(c.found, found);
    // Breaking one prerequisite fails its own check and, at most, the checks that depend on it.
    const allowed: Record<string, string[]> = { iommu: ['interrupt-remapping'] };
    t.same(failed.map((x) => x.id).filter((x) => x !== id && !(allowed[id] ?? []).includes(x)), [], 'nothing else fails');
  });
}

t.test('AppArmor: doctor says ahead that libvirt confines QEMU, which the started hook cannot deliver VFs to', async (t) => {
  // Reproduced: on a stock Debian 12 host (AppArmor on, libvirt-daemon-system's profiles loaded)
  // doctor passed every row, and the first libvirt guest with a VF failed at 'started' ("QEMU
  // process N is confined by the security label 'libvirt-UUID (enforce)'").
  const w = wellPreparedHost(t);
  const s = w.settings;
  const put = (path: string, text: string) => {
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, text);
  };
  const row = () => checkSecurityDriver(s);
  const FIX = `set security_driver = "none" in /etc/libvirt/qemu.conf and restart libvirtd (or virtqemud), or give each domain with VFs <seclabel type='none'/>`;
  t.same([row().ok, row().found], [true, 'AppArmor is not enabled in this kernel: libvirt does not confine QEMU with it'], 'no AppArmor (this machine, the lab)');
  put(join(s.sysfsRoot, 'module/apparmor/parameters/enabled'), 'Y\n');
  t.same([row().ok, row().found], [true, `AppArmor is on, but ${join(s.etcDir, 'apparmor.d/libvirt/TEMPLATE.qemu')} does not exist: libvirt does not confine QEMU with it`]);
  put(join(s.etcDir, 'apparmor.d/libvirt/TEMPLATE.qemu'), 'profile LIBVIRT_TEMPLATE flags=(attach_disconnected) {\n}\n');
  put(join(s.procRoot, '4242/attr/current'), 'unconfined\n');
  t.same([row().ok, row().found], [true, 'virtqemud (pid 4242) runs unconfined: libvirt does not confine QEMU with AppArmor'], 'the daemon unconfined: libvirt uses DAC only');
  put(join(s.procRoot, '4242/attr/apparmor/current'), 'virtqemud (enforce)\n');
  t.same(row(), { id: 'apparmor', ok: false, found: `AppArmor is on and ${join(s.etcDir, 'apparmor.d/libvirt/TEMPLATE.qemu')} exists, and virtqemud (pid 4242) runs under AppArmor profile 'virtqemud (enforce)': libvirt confines each QEMU with a profile of its own, which denies the /dev/vfio nodes the 'started' hook gives QEMU, so libvirt guests with VFs fail to start`, fix: FIX }, 'Debian 12 as shipped: AppArmor\'s own label (LSM stacking) wins');
  writeFileSync(join(s.libvirtConfDir, 'qemu.conf'), 'security_driver = "none"\n');
  t.same([row().ok, row().found], [true, `${join(s.libvirtConfDir, 'qemu.conf')} sets security_driver = "none": libvirt does not confine QEMU with AppArmor`], 'the fix');
  writeFileSync(join(s.libvirtConfDir, 'qemu.conf'), 'security_driver = [ "selinux", "apparmor" ]\n');
  t.equal(row().ok, false, 'a list naming apparmor');
  writeFileSync(join(s.libvirtConfDir, 'qemu.conf'), 'security_driver = \n');
  t.match(row(), { ok: false, found: /qemu\.conf: qemu\.conf line 1: cannot read/ }, 'a qemu.conf libvirtd would refuse');
  writeFileSync(join(s.libvirtConfDir, 'qemu.conf'), '#security_driver = "selinux"\n');
  rmSync(join(s.procRoot, '4242'), { recursive: true });
  put(join(s.etcDir, 'apparmor.d/usr.sbin.libvirtd'), 'profile libvirtd /usr/sbin/libvirtd {\n}\n');
  t.same(row(), { id: 'apparmor', ok: false, found: `AppArmor is on and ${join(s.etcDir, 'apparmor.d/libvirt/TEMPLATE.qemu')} exists and ${join(s.etcDir, 'apparmor.d/usr.sbin.libvirtd')} confines the daemon: once it starts, libvirt will confine each QEMU with a profile of its own, which denies the /dev/vfio nodes the 'started' hook gives QEMU, so libvirt guests with VFs would fail to start`, fix: FIX }, 'no daemon yet: what it will do');
  rmSync(join(s.etcDir, 'apparmor.d/usr.sbin.libvirtd'));
  t.equal(row().ok, true, 'no profile for the daemon: it will run unconfined');
});
