import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readLibvirtPid } from '../../src/pool/guests.js';
import { qemuGuestName } from '../../src/pool/libvirt-runtime.js';
import { ownerEnv, judgeAllocation } from '../../src/pool/owners.js';
import type { Allocation } from '../../src/state/schema.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';
import { spawnSleeper } from '../helpers/processes.js';

t.test('readLibvirtPid reads libvirt\'s NAME.pid and refuses a name that is no file name', async (t) => {
  const dir = t.testdir({});
  const where = { libvirtRunDir: join(dir, 'run'), procRoot: join(dir, 'proc') };
  fakeLibvirtQemu(where, 'vm1');
  writeFileSync(join(dir, 'secret.pid'), `${process.pid}\n`);
  t.equal(readLibvirtPid(where, 'vm1'), process.pid, 'a live pid');
  t.equal(readLibvirtPid(where, 'vm2'), null, 'no pid file: not running');
  t.throws(() => readLibvirtPid(where, '../secret'), { exitCode: 2, message: "domain name '../secret' is not a name vfpool accepts" },
    'a name that would leave the run directory is refused, not read');
});

/**
 * libvirtd down (or killed) when a guest's QEMU exited: its NAME.pid stays, and its pid may be
 * another process's by the time vfpool reads the file. Adopted, that process held the guest's
 * VFs (its pid and start time recorded as QEMU's) for as long as it ran. libvirt trusts a pid
 * file only for the binary it started; vfpool, only for a process named as the domain.
 */
t.test('a stale pid file whose pid another process holds now names no QEMU of the domain', async (t) => {
  const dir = t.testdir({});
  const where = { libvirtRunDir: join(dir, 'run'), procRoot: '/proc' };
  const other = spawnSleeper();
  t.teardown(other.kill);
  mkdirSync(where.libvirtRunDir);
  writeFileSync(join(where.libvirtRunDir, 'vm1.pid'), `${other.pid}\n`);
  t.equal(readLibvirtPid(where, 'vm1'), null, '`sleep` is not vm1\'s QEMU');
  const a = { owner: { domain: 'vm1', uuid: null, pid: null, via: 'libvirt' }, phase: 'ready', worker: null, createdAt: new Date(Date.now() - 600_000).toISOString() } as unknown as Allocation;
  t.match(judgeAllocation(a, ownerEnv(where)), { keep: false, adoptPid: undefined }, 'nor is it adopted as the guest\'s QEMU');

  const fake = { ...where, procRoot: join(dir, 'proc') };
  fakeLibvirtQemu(fake, 'vm2', other.pid);
  t.equal(readLibvirtPid(fake, 'vm2'), other.pid, 'a process named as the domain is its QEMU');
  fakeLibvirtQemu(fake, 'vm1', other.pid);
  t.equal(readLibvirtPid({ ...fake, libvirtRunDir: where.libvirtRunDir }, 'vm2'), null, 'another domain\'s QEMU is not');
});

t.test('qemuGuestName: the name on a QEMU command line, as QEMU parses -name', async (t) => {
  const cases: Array<[string[], string | null]> = [
    [['qemu', '-name', 'guest=vm1,debug-threads=on'], 'vm1'],
    [['qemu', '-name', 'vm1'], 'vm1'],
    [['qemu', '-name', 'vm1,process=q'], 'vm1'],
    [['qemu', '-name', 'debug-threads=on,guest=vm1'], 'vm1'],
    [['qemu', '--name', 'guest=a,,b,debug-threads=on'], 'a,b'],
    [['qemu', '-name', 'process=q'], null],
    [['qemu', '-name'], null],
    [['sleep', '600'], null],
  ];
  for (const [argv, name] of cases) t.equal(qemuGuestName(argv), name, argv.join(' '));
});
