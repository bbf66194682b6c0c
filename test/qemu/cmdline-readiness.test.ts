import t from 'tap';
import { readFileSync, existsSync } from 'node:fs';
import { checkCmdlineReadiness, parseQemuConf } from '../../src/qemu/cmdline-readiness.js';

const MEM = 131072n; // 128 MiB in KiB
const NEED = MEM + 1048576n;
const ACL_LINE = 'cgroup_device_acl = [ "/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd", "/dev/vfio/vfio", "/dev/vfio/6" ]';

t.test('parseQemuConf: strings, numbers, multi-line lists, comments (also inside lists), last one wins', async (t) => {
  const conf = parseQemuConf(
    [
      '# user = "root"',
      'user = "libvirt-qemu"  # trailing',
      'max_files = 4096',
      'cgroup_device_acl = [',
      '    "/dev/null", "/dev/full", # a comment in a list',
      '    "/dev/vfio/vfio"',
      ']',
      'namespaces = [ "mount" ]',
      'namespaces = [ ]',
      'security_driver = "a#b"',
    ].join('\n'),
  );
  t.equal(conf.get('user'), 'libvirt-qemu');
  t.equal(conf.get('max_files'), 4096);
  t.same(conf.get('cgroup_device_acl'), ['/dev/null', '/dev/full', '/dev/vfio/vfio']);
  t.same(conf.get('namespaces'), []);
  t.equal(conf.get('security_driver'), 'a#b', 'a # inside a string is no comment');
  t.throws(() => parseQemuConf('user = "a"\nnamespaces [ ]\n'), { exitCode: 2, message: "qemu.conf line 2: cannot read 'namespaces [ ]'" });
});

t.test('the default qemu.conf cannot carry a vfio device on the command line: the exact lines to add', async (t) => {
  const r = checkCmdlineReadiness('', { groups: ['6'], hardLimitKiB: null, guestMemoryKiB: MEM });
  t.equal(r.ok, false);
  t.same(r.qemuConfLines, ['namespaces = [ ]', ACL_LINE]);
  t.equal(r.domainXml, `<memtune><hard_limit unit='KiB'>${NEED}</hard_limit></memtune>`);
  t.equal(r.problems.length, 3);
  t.match(r.problems[0], /own mount namespace/);
});

// libvirt is not among what npm test installs for itself (QEMU only: scripts/install-lab-packages.sh
// qemu), so a fresh machine running `npm test` alone, CI=true or not, has no qemu.conf: the skip
// says so. .ci/run installs libvirt before npm test, so there it runs.
const SHIPPED_QEMU_CONF = '/etc/libvirt/qemu.conf';
t.test("Debian's shipped /etc/libvirt/qemu.conf (all comments) reads as the default", { skip: !existsSync(SHIPPED_QEMU_CONF) && `needs libvirt's ${SHIPPED_QEMU_CONF}, not installed here (bash scripts/install-lab-packages.sh libvirt; .ci/run installs it)` }, async (t) => {
  const r = checkCmdlineReadiness(readFileSync(SHIPPED_QEMU_CONF, 'utf8'), { groups: ['6'], hardLimitKiB: null, guestMemoryKiB: MEM });
  t.same(r.qemuConfLines, ['namespaces = [ ]', ACL_LINE]);
});

t.test('what the lab measured working: namespaces = [ ], the ACL with the group, memtune hard_limit', async (t) => {
  const conf = `namespaces = [ ]\n${ACL_LINE}\n`;
  t.same(checkCmdlineReadiness(conf, { groups: ['6'], hardLimitKiB: NEED, guestMemoryKiB: MEM }), { ok: true, problems: [], qemuConfLines: [], domainXml: null });
  const lowLimit = checkCmdlineReadiness(conf, { groups: ['6'], hardLimitKiB: NEED - 1n, guestMemoryKiB: MEM });
  t.same([lowLimit.ok, lowLimit.qemuConfLines], [false, []], 'a hard_limit below RAM + 1 GiB is not enough');
  const otherGroup = checkCmdlineReadiness(conf, { groups: ['6', '7'], hardLimitKiB: NEED, guestMemoryKiB: MEM });
  t.same(otherGroup.qemuConfLines, [ACL_LINE.replace(' ]', ', "/dev/vfio/7" ]')], 'a group not in the ACL is added to it');
});

t.test('no devices controller in cgroup_controllers: no ACL needed', async (t) => {
  const r = checkCmdlineReadiness('namespaces = [ ]\ncgroup_controllers = [ "cpu", "memory" ]\n', { groups: ['6'], hardLimitKiB: NEED, guestMemoryKiB: MEM });
  t.equal(r.ok, true);
});

t.test('a group that is no number is refused', async (t) => {
  t.throws(() => checkCmdlineReadiness('', { groups: ['6/../x'], hardLimitKiB: null, guestMemoryKiB: MEM }), { exitCode: 2, message: "IOMMU group '6/../x' is not a group number" });
});
