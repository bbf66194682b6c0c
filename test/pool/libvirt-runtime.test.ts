import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostError } from '../../src/errors.js';
import { readLibvirtPid, resolveDacLabel } from '../../src/pool/libvirt-runtime.js';

t.test('readLibvirtPid: no file is "not running"; a file it cannot read is an error, not "not running"', async (t) => {
  const run = mkdtempSync(join(tmpdir(), 'vfpool-run-'));
  t.equal(readLibvirtPid({ libvirtRunDir: run }, 'vm1'), null);
  writeFileSync(join(run, 'junk.pid'), 'not a pid\n');
  t.equal(readLibvirtPid({ libvirtRunDir: run }, 'junk'), null, 'no pid in it');
  mkdirSync(join(run, 'dir.pid'));
  const err = t.throws(() => readLibvirtPid({ libvirtRunDir: run }, 'dir')) as HostError;
  t.ok(err instanceof HostError);
  t.equal(err.code, 'EISDIR');
  t.equal(err.message, `cannot read libvirt's pid file ${join(run, 'dir.pid')}: EISDIR`);
});

t.test('resolveDacLabel: numbers as they are, names from passwd/group', async (t) => {
  const etc = mkdtempSync(join(tmpdir(), 'vfpool-etc-'));
  writeFileSync(join(etc, 'passwd'), 'root:x:0:0::/root:/bin/sh\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\n');
  writeFileSync(join(etc, 'group'), 'root:x:0:\nkvm:x:108:\n');
  t.same(resolveDacLabel({ user: { uid: 107 }, group: { gid: 108 } }, etc), { uid: 107, gid: 108 });
  t.same(resolveDacLabel({ user: { name: 'libvirt-qemu' }, group: { name: 'kvm' } }, etc), { uid: 64055, gid: 108 });
  const err = t.throws(() => resolveDacLabel({ user: { name: 'nobody' }, group: { gid: 0 } }, etc)) as HostError;
  t.equal(err.message, `the domain's DAC label names user 'nobody', which ${join(etc, 'passwd')} does not list`);
  const named = t.throws(() => resolveDacLabel({ user: { uid: 0 }, group: { name: 'nogroup' } }, etc, 'vm1')) as HostError;
  t.equal(named.toLine(), `domain 'vm1': its DAC label names group 'nogroup', which ${join(etc, 'group')} does not list: create that group, or correct the <seclabel model='dac'> label (libvirt takes it from qemu.conf's user and group)`);
});
