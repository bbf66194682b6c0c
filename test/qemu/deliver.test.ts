import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, existsSync, appendFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { defaultDeliverDeps, deliverVfioToQemu, memlockForVfio, parseMemlockLimit, splitRdev, type DeliverDeps } from '../../src/qemu/deliver.js';
import type { CommandRunner } from '../../src/qemu/command.js';
import { bpfDeviceKey, findMount, parseProcCgroup, v1ListAllows } from '../../src/qemu/device-cgroup.js';

const PID = 4242;
const ROOT = process.getuid!() === 0;
/** Tests that need real device nodes in the fixture: run as root (CI is root and never skips). */
function needsRoot(t: Test): boolean {
  if (ROOT) return true;
  if (process.env.CI) t.fail('this test needs root (mknod of a character device), and CI runs as root');
  else t.plan(0, 'needs root: mknod of a character device');
  return false;
}
const MIB = 1024n * 1024n;
const LIMITS = (soft: string, hard: string) =>
  `Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \nMax locked memory         ${soft.padEnd(20)} ${hard.padEnd(20)} bytes     \n`;

/**
 * A /proc, a host /dev and cgroup mounts in a testdir. The host's vfio nodes are symlinks to
 * /dev/null (1:3) and /dev/zero (1:5): real character devices any user can stat. The fake
 * runner plays prlimit (rewrites the limits file), mknod (a symlink to the node with that
 * number, so stat sees a character device) and bpftool (answers from `bpf`).
 */
function world(t: Test, opts: { cgroup?: 'v1' | 'v2' | 'hybrid' | 'none'; privateNs?: boolean; label?: string; bpf?: Record<string, unknown> } = {}) {
  const dir = t.testdir({});
  const proc = join(dir, 'proc');
  const pidDir = join(proc, String(PID));
  mkdirSync(join(pidDir, 'ns'), { recursive: true });
  mkdirSync(join(pidDir, 'root/dev'), { recursive: true });
  mkdirSync(join(pidDir, 'attr'), { recursive: true });
  mkdirSync(join(proc, 'self/ns'), { recursive: true });
  writeFileSync(join(pidDir, 'stat'), `${PID} (qemu-system-x86) S 1`);
  writeFileSync(join(pidDir, 'limits'), LIMITS('8388608', '8388608'));
  writeFileSync(join(pidDir, 'attr/current'), opts.label ?? 'unconfined\n');
  symlinkSync('mnt:[4026531841]', join(proc, 'self/ns/mnt'));
  symlinkSync(opts.privateNs === false ? 'mnt:[4026531841]' : 'mnt:[4026532999]', join(pidDir, 'ns/mnt'));
  const dev = join(dir, 'dev');
  mkdirSync(join(dev, 'vfio'), { recursive: true });
  symlinkSync('/dev/null', join(dev, 'vfio/vfio'));
  symlinkSync('/dev/zero', join(dev, 'vfio/7'));

  const cg = join(dir, 'cgroup');
  const domain = '/machine/qemu-1-vm1.libvirt-qemu';
  const mounts: string[] = ['proc /proc proc rw 0 0'];
  const cgroupLines: string[] = [];
  const kind = opts.cgroup ?? 'v1';
  if (kind === 'v1' || kind === 'hybrid') {
    const v1Path = kind === 'v1' ? domain : '/';
    mkdirSync(join(cg, 'devices', v1Path), { recursive: true });
    writeFileSync(join(cg, 'devices', v1Path, 'devices.list'), kind === 'v1' ? 'c 136:* rw\nc 1:3 rw\nc 1:7 rw\n' : 'a *:* rwm\n');
    writeFileSync(join(cg, 'devices', v1Path, 'devices.allow'), '');
    mounts.push(`cgroup ${join(cg, 'devices')} cgroup rw,nosuid,relatime,devices 0 0`);
    cgroupLines.push(`5:devices:${v1Path}`, `3:cpuset:${domain}/emulator`);
  }
  if (kind === 'v2' || kind === 'hybrid') {
    const unified = kind === 'v2' ? join(cg, 'v2') : join(cg, 'unified');
    mkdirSync(join(unified, domain, 'emulator'), { recursive: true });
    mounts.push(`cgroup2 ${unified} cgroup2 rw,nosuid,relatime 0 0`);
    cgroupLines.push(`0::${domain}/emulator`);
  }
  writeFileSync(join(pidDir, 'cgroup'), cgroupLines.join('\n') + '\n');
  writeFileSync(join(dir, 'mounts'), mounts.join('\n') + '\n');

  const calls: string[][] = [];
  const run: CommandRunner = async (file, args) => {
    calls.push([file, ...args]);
    if (file === 'prlimit') {
      const m = /^--memlock=([0-9]+):([0-9]+)$/.exec(args[1]!);
      writeFileSync(join(pidDir, 'limits'), LIMITS(m![1]!, m![2]!));
      return { exitCode: 0, stdout: '', stderr: '' };
    }
    if (file === 'mknod') {
      // Root (CI): the real mknod, so the module's lstat sees a real node. Unprivileged: a
      // symlink stands in (the tests that need a real node say so).
      if (ROOT) {
        const r = spawnSync('mknod', args, { encoding: 'utf8' });
        return { exitCode: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
      }
      symlinkSync(args[5] === '3' ? '/dev/null' : '/dev/zero', args[2]!);
      return { exitCode: 0, stdout: '', stderr: '' };
    }
    if (file === 'bpftool') {
      const key = args.slice(1, 5).join(' ');
      const answer = opts.bpf?.[key] ?? opts.bpf?.[args.slice(1, 4).join(' ')];
      if (answer === undefined) return { exitCode: 0, stdout: args[1] === 'map' ? '' : '[]', stderr: '' };
      return { exitCode: 0, stdout: JSON.stringify(answer), stderr: '' };
    }
    return { exitCode: 127, stdout: '', stderr: `${file}: not in this test` };
  };
  const deps: DeliverDeps = { procRoot: proc, devRoot: dev, mountsFile: join(dir, 'mounts'), run, prlimitPath: 'prlimit', mknodPath: 'mknod', bpftoolPath: 'bpftool' };
  return { dir, proc, pidDir, dev, cg, domain, calls, deps, run };
}

// The QEMU user: ours, so that chown works when the suite runs unprivileged as well as in CI (root).
const owner = { uid: process.getuid!(), gid: process.getgid!() };
const request = (over: Partial<Parameters<typeof deliverVfioToQemu>[0]> = {}) => ({ pid: PID, groups: ['7'], ...owner, memlockBytes: memlockForVfio(128n * MIB), ...over });

t.test('memlockForVfio: guest memory plus 1 GiB, as libvirt sets for a VFIO hostdev', async (t) => {
  t.equal(memlockForVfio(128n * MIB), 1152n * MIB);
  t.equal(memlockForVfio(4096n * MIB), 5120n * MIB);
  t.throws(() => memlockForVfio(0n), { exitCode: 2, message: 'guest memory must be positive, got 0 bytes' });
});

t.test('splitRdev decodes the kernel\'s dev_t, minors above 255 included', async (t) => {
  t.same(splitRdev(statSync('/dev/null').rdev), { major: 1, minor: 3 });
  t.same(splitRdev(statSync('/dev/zero').rdev), { major: 1, minor: 5 });
  // new_encode_dev(MKDEV(511, 300)) = (300 & 0xff) | (511 << 8) | ((300 & ~0xff) << 12)
  t.same(splitRdev((300 & 0xff) | (511 << 8) | ((300 & ~0xff) << 12)), { major: 511, minor: 300 });
});

t.test('parseMemlockLimit reads the soft limit of /proc/PID/limits', async (t) => {
  t.equal(parseMemlockLimit(LIMITS('8388608', '8388608')), 8388608n);
  t.equal(parseMemlockLimit(LIMITS('unlimited', 'unlimited')), 'unlimited');
  t.equal(parseMemlockLimit('Max open files 1024 1024 files\n'), null);
});

t.test('cgroup parsing: /proc/PID/cgroup, mount points with escapes, v1 device rules', async (t) => {
  t.same(parseProcCgroup('5:devices:/machine/a\n0::/machine/a/emulator\n'), [
    { controllers: ['devices'], path: '/machine/a' },
    { controllers: [], path: '/machine/a/emulator' },
  ]);
  t.throws(() => parseProcCgroup('garbage'), { message: "unexpected line in /proc/PID/cgroup: 'garbage'" });
  t.equal(findMount('cgroup /sys/fs/cgroup/my\\040dir cgroup rw,devices 0 0\n', 'cgroup', (o) => o.includes('devices')), '/sys/fs/cgroup/my dir');
  t.equal(findMount('cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n', 'cgroup', (o) => o.includes('devices')), null);
  const dev = { path: '/dev/vfio/7', major: 243, minor: 7, mode: 0o600 };
  const table: Array<[string, boolean]> = [
    ['a *:* rwm', true],
    ['c 243:7 rw', true],
    ['c 243:* rwm', true],
    ['c *:7 rw', true],
    ['c 243:7 r', false],
    ['b 243:7 rw', false],
    ['c 243:8 rw', false],
    ['c 136:* rw\nc 1:3 rw', false],
  ];
  for (const [list, allowed] of table) t.equal(v1ListAllows(list, dev), allowed, `'${list.replace('\n', '; ')}'`);
});

t.test("bpfDeviceKey is libvirt's (major << 32) | minor in little-endian bytes", async (t) => {
  // 10:196 is /dev/vfio/vfio; this key was accepted by libvirt 11.3's map on a real host.
  t.equal(bpfDeviceKey({ path: '/dev/vfio/vfio', major: 10, minor: 196, mode: 0o666 }).join(' '), 'c4 00 00 00 0a 00 00 00');
  t.equal(bpfDeviceKey({ path: '/dev/vfio/300', major: 511, minor: 300, mode: 0o600 }).join(' '), '2c 01 00 00 ff 01 00 00');
});

t.test('cgroup v1: memlock raised, both nodes made in QEMU\'s /dev, the missing rule allowed; a second call changes nothing', async (t) => {
  if (!needsRoot(t)) return;
  const w = world(t, { cgroup: 'v1' });
  const r = await deliverVfioToQemu(request(), w.deps);
  const inside = join(w.pidDir, 'root/dev/vfio');
  t.same(w.calls, [
    ['prlimit', `--pid=${PID}`, '--memlock=1207959552:1207959552'],
    ['mknod', '-m', '666', join(inside, 'vfio'), 'c', '1', '3'],
    ['mknod', '-m', '600', join(inside, '7'), 'c', '1', '5'],
  ]);
  t.equal(r.cgroup, 'v1');
  t.equal(r.privateMountNamespace, true);
  t.same(r.steps.map((s) => s.kind), ['memlock', 'mknod', 'mknod', 'cgroup-v1-allow']);
  // /dev/null (1:3) was in the list already: only the group's node is added.
  t.equal(readFileSync(join(w.cg, 'devices', w.domain, 'devices.allow'), 'utf8'), 'c 1:5 rw');
  t.equal(parseMemlockLimit(readFileSync(join(w.pidDir, 'limits'), 'utf8')), 1207959552n);

  appendFileSync(join(w.cg, 'devices', w.domain, 'devices.list'), 'c 1:5 rw\n'); // what the kernel does
  w.calls.length = 0;
  const again = await deliverVfioToQemu(request(), w.deps);
  t.same(again.steps, [], 'nothing left to do');
  t.same(w.calls, [], 'no command run');
});

t.test('cgroup v2: the device map of libvirt\'s BPF program, found from QEMU\'s cgroup upwards', async (t) => {
  const w = world(t, {
    cgroup: 'v2',
    bpf: {
      // QEMU sits in the domain's emulator child; libvirt attached its program to the domain.
      [`cgroup show ${'__domain__'}`]: null,
      'prog show id 14': { id: 14, type: 'cgroup_device', map_ids: [13] },
    },
  });
  const domainDir = join(w.cg, 'v2', w.domain);
  const run = w.deps.run;
  w.deps.run = async (file, args) => {
    if (file === 'bpftool' && args[1] === 'cgroup' && args[3] === domainDir) {
      w.calls.push([file, ...args]);
      return { exitCode: 0, stdout: JSON.stringify([{ id: 14, attach_type: 'cgroup_device', attach_flags: '' }]), stderr: '' };
    }
    return run(file, args);
  };
  const r = await deliverVfioToQemu(request(), w.deps);
  t.equal(r.cgroup, 'v2');
  const bpf = w.calls.filter((c) => c[0] === 'bpftool');
  t.same(bpf, [
    ['bpftool', '-j', 'cgroup', 'show', join(domainDir, 'emulator')],
    ['bpftool', '-j', 'cgroup', 'show', domainDir],
    ['bpftool', '-j', 'prog', 'show', 'id', '14'],
    ['bpftool', '-j', 'map', 'update', 'id', '13', 'key', 'hex', '03', '00', '00', '00', '01', '00', '00', '00', 'value', 'hex', '02', '00', '06', '00'],
    ['bpftool', '-j', 'map', 'update', 'id', '13', 'key', 'hex', '05', '00', '00', '00', '01', '00', '00', '00', 'value', 'hex', '02', '00', '06', '00'],
  ]);
});

t.test('hybrid host (v1 devices at the root, libvirt\'s program on cgroup2): the BPF map is what restricts', async (t) => {
  const w = world(t, { cgroup: 'hybrid' });
  const domainDir = join(w.cg, 'unified', w.domain);
  const run = w.deps.run;
  w.deps.run = async (file, args) => {
    if (file === 'bpftool' && args[1] === 'cgroup' && args[3] === domainDir) return { exitCode: 0, stdout: JSON.stringify([{ id: 9, attach_type: 'cgroup_device' }]), stderr: '' };
    if (file === 'bpftool' && args[1] === 'prog') return { exitCode: 0, stdout: JSON.stringify({ id: 9, map_ids: [8] }), stderr: '' };
    return run(file, args);
  };
  const r = await deliverVfioToQemu(request(), w.deps);
  t.equal(r.cgroup, 'v2');
  t.same(r.steps.filter((s) => s.kind.startsWith('cgroup')).map((s) => s.kind), ['cgroup-v2-map', 'cgroup-v2-map'], 'v1 root allows all: no v1 write');
  t.equal(readFileSync(join(w.cg, 'devices', 'devices.allow'), 'utf8'), '');
});

t.test('cgroup v2 without any device program, and no cgroup at all: nothing to allow', async (t) => {
  for (const kind of ['v2', 'none'] as const) {
    const w = world(t, { cgroup: kind });
    const r = await deliverVfioToQemu(request(), w.deps);
    t.equal(r.cgroup, 'none', kind);
    t.notOk(w.calls.some((c) => c[1] === '-j' && c[2] === 'map'), `${kind}: no map update`);
  }
});

t.test('QEMU in the host\'s mount namespace (namespaces = [ ]): no node is made', async (t) => {
  const w = world(t, { privateNs: false });
  const r = await deliverVfioToQemu(request(), w.deps);
  t.equal(r.privateMountNamespace, false);
  t.notOk(w.calls.some((c) => c[0] === 'mknod'));
  t.notOk(existsSync(join(w.pidDir, 'root/dev/vfio')));
});

t.test('memlock already high enough (or unlimited) is left alone, never lowered', async (t) => {
  const w = world(t);
  writeFileSync(join(w.pidDir, 'limits'), LIMITS('unlimited', 'unlimited'));
  await deliverVfioToQemu(request(), w.deps);
  t.notOk(w.calls.some((c) => c[0] === 'prlimit'));
  const w2 = world(t);
  writeFileSync(join(w2.pidDir, 'limits'), LIMITS('4294967296', '4294967296'));
  await deliverVfioToQemu(request(), w2.deps);
  t.notOk(w2.calls.some((c) => c[0] === 'prlimit'));
});

t.test('refusals: one sentence each, exit code, and no change', async (t) => {
  const cases: Array<{ name: string; setup?: (w: ReturnType<typeof world>) => void; req?: Partial<Parameters<typeof deliverVfioToQemu>[0]>; opts?: Parameters<typeof world>[1]; want: { exitCode: number; message: string | RegExp; code?: string; hint?: RegExp } }> = [
    { name: 'a group that is no number', req: { groups: ['../7'] }, want: { exitCode: 2, message: "IOMMU group '../7' is not a group number (expected digits, as in /dev/vfio/7)" } },
    { name: 'no group', req: { groups: [] }, want: { exitCode: 2, message: 'no IOMMU group to deliver: expected at least one VF group' } },
    { name: 'a bad pid', req: { pid: 1 }, want: { exitCode: 2, message: 'QEMU pid must be an integer above 1, got 1' } },
    { name: 'a negative uid', req: { uid: -1 }, want: { exitCode: 2, message: 'QEMU uid must be a non-negative integer, got -1' } },
    { name: 'a VF not bound to vfio-pci', req: { groups: ['8'] }, want: { exitCode: 1, message: /\/dev\/vfio\/8 does not exist on the host$/, code: 'ENOENT', hint: /bind the VF to vfio-pci first/ } },
    {
      name: 'QEMU gone',
      req: { pid: 4343 },
      want: { exitCode: 1, message: /^QEMU process 4343 is gone \(no .*\/4343\/stat\)$/, code: 'ESRCH' },
    },
    {
      name: 'a confined QEMU',
      opts: { label: 'libvirt-0d5f3a (enforce)\n' },
      want: { exitCode: 1, message: "QEMU process 4242 is confined by the security label 'libvirt-0d5f3a (enforce)', which would deny vfpool's /dev/vfio nodes", code: 'EACCES', hint: /security_driver/ },
    },
    {
      name: 'a node in QEMU\'s /dev that is another device',
      setup: (w) => {
        mkdirSync(join(w.pidDir, 'root/dev/vfio'));
        symlinkSync('/dev/full', join(w.pidDir, 'root/dev/vfio/7'));
      },
      want: { exitCode: 1, message: /root\/dev\/vfio\/7 exists but is not the character device 1:5 of .*\/dev\/vfio\/7$/, code: 'EEXIST' },
    },
  ];
  for (const c of cases) {
    const w = world(t, c.opts);
    c.setup?.(w);
    const before = readFileSync(join(w.pidDir, 'limits'), 'utf8');
    await t.rejects(deliverVfioToQemu(request(c.req), w.deps), c.want, c.name);
    t.same(w.calls, [], `${c.name}: no command run`);
    t.equal(readFileSync(join(w.pidDir, 'limits'), 'utf8'), before, `${c.name}: memlock untouched`);
  }
});

t.test('prlimit refused (no CAP_SYS_RESOURCE, as in an unprivileged container): says so, makes no node', async (t) => {
  const w = world(t);
  w.deps.run = async (file, args) => {
    w.calls.push([file, ...args]);
    return { exitCode: 1, stdout: '', stderr: 'prlimit: failed to set the MEMLOCK resource limit: Operation not permitted\n' };
  };
  await t.rejects(deliverVfioToQemu(request(), w.deps), {
    exitCode: 1,
    code: 'EPERM',
    message: `raising the locked-memory limit of QEMU process ${PID} from 8388608 to 1207959552 bytes failed: prlimit: failed to set the MEMLOCK resource limit: Operation not permitted`,
    hint: /CAP_SYS_RESOURCE/,
  });
  t.notOk(existsSync(join(w.pidDir, 'root/dev/vfio')));
});

t.test('cgroup v2 without bpftool: the hint says what to install', async (t) => {
  const w = world(t, { cgroup: 'v2' });
  const run = w.deps.run;
  w.deps.run = async (file, args) => {
    if (file === 'bpftool') throw Object.assign(new Error('spawn bpftool ENOENT'), { code: 'ENOENT' });
    return run(file, args);
  };
  await t.rejects(deliverVfioToQemu(request(), w.deps), { exitCode: 1, code: 'ENOENT', hint: /apt-get install bpftool/ });
  t.same(w.calls, [], 'found out before any change: no prlimit, no mknod');
  t.notOk(existsSync(join(w.pidDir, 'root/dev/vfio')));
});

// The production runner, not a fake: execa with reject:false resolves for a command that never
// started, and the runner once passed that on as exit 128 with an empty stderr, so a hybrid
// cgroup host without bpftool was told "bpftool … failed (exit 128): " and not what to install.
t.test('the production runner: a command that is not installed rejects with its errno', async (t) => {
  const { run } = defaultDeliverDeps();
  await t.rejects(run('vfpool-test-no-such-command', []), { code: 'ENOENT', message: /vfpool-test-no-such-command/ });
  t.same(await run('sh', ['-c', 'echo out; echo err >&2; exit 3']), { exitCode: 3, stdout: 'out', stderr: 'err' }, 'a command that ran: its status and output');
});

t.test('hybrid cgroups, bpftool not installed, the real runner: the hint says what to install', async (t) => {
  const w = world(t, { cgroup: 'hybrid' });
  const deps = { ...w.deps, run: defaultDeliverDeps().run, bpftoolPath: 'vfpool-test-no-bpftool' };
  await t.rejects(deliverVfioToQemu(request(), deps), { exitCode: 1, code: 'ENOENT', hint: /not installed where vfpool looks .*: apt-get install bpftool/ });
  t.notOk(existsSync(join(w.pidDir, 'root/dev/vfio')), 'nothing done');
  // There but not executable: not "install it", which would send the administrator the wrong way.
  const notExecutable = join(w.dir, 'bpftool-not-executable');
  writeFileSync(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
  await t.rejects(deliverVfioToQemu(request(), { ...deps, bpftoolPath: notExecutable }), { code: 'EACCES', hint: /^(?!.*apt-get install).*could not be started: it must be an executable/ });
  t.notOk(existsSync(join(w.pidDir, 'root/dev/vfio')), 'nothing done');
});

t.test('mknod not installed, the real runner: one sentence naming the step and the command', async (t) => {
  const w = world(t, { cgroup: 'v1' });
  // memlock already high enough: mknod is the first command the delivery runs.
  const deps = { ...w.deps, run: defaultDeliverDeps().run, mknodPath: 'vfpool-test-no-mknod' };
  await t.rejects(deliverVfioToQemu(request({ memlockBytes: 1024n }), deps), {
    exitCode: 1,
    code: 'ENOENT',
    message: /^making .*vfio.* in the mount namespace of QEMU process \d+: running vfpool-test-no-mknod failed: spawn vfpool-test-no-mknod ENOENT$/,
    hint: /not installed where vfpool looks/,
  });
  // There but not executable: EACCES, for root too (execve wants an x bit), and not "not installed".
  const notExecutable = join(w.dir, 'mknod-not-executable');
  writeFileSync(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
  await t.rejects(deliverVfioToQemu(request({ memlockBytes: 1024n }), { ...deps, mknodPath: notExecutable }), { code: 'EACCES', hint: /could not be started: it must be an executable/ });
});

t.test('mknod and bpftool that run and fail: the step, the command line as run, its exit status and first stderr line', async (t) => {
  const v1 = world(t, { cgroup: 'v1' });
  const mknodFails: CommandRunner = async (file, args) => (file === 'mknod' ? { exitCode: 1, stdout: '', stderr: `mknod: ${args[2]}: Read-only file system\nmore` } : v1.run(file, args));
  await t.rejects(deliverVfioToQemu(request({ memlockBytes: 1024n }), { ...v1.deps, run: mknodFails }), {
    exitCode: 1,
    code: 'ECOMMAND',
    message: /^making .*\/dev\/vfio\/vfio in the mount namespace of QEMU process \d+: mknod -m 666 \S+\/root\/dev\/vfio\/vfio c 1 3 failed \(exit 1\): mknod: \S+: Read-only file system$/,
  });
  const v2 = world(t, { cgroup: 'v2' });
  const bpftoolFails: CommandRunner = async (file, args) => (file === 'bpftool' ? { exitCode: 255, stdout: '', stderr: `Error: can't query cgroup ${args[3]}\nmore` } : v2.run(file, args));
  await t.rejects(deliverVfioToQemu(request(), { ...v2.deps, run: bpftoolFails }), {
    exitCode: 1,
    code: 'ECOMMAND',
    message: /^listing the BPF programs of (\S+): bpftool -j cgroup show \1 failed \(exit 255\): Error: can't query cgroup \1$/,
  });
  t.notOk(existsSync(join(v2.pidDir, 'root/dev/vfio')), 'bpftool fails before any node is made');
});

t.test('cgroup v1 refusing the rule: the file, the rule and what to do', async (t) => {
  const w = world(t, { cgroup: 'v1' });
  const allow = join(w.cg, 'devices', w.domain, 'devices.allow');
  rmSync(allow);
  mkdirSync(allow); // a write the kernel refuses, as a parent cgroup's deny would
  await t.rejects(deliverVfioToQemu(request(), w.deps), {
    exitCode: 1,
    code: 'EISDIR',
    message: new RegExp(`^writing 'c 1:5 rw' to ${allow.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} failed`),
    hint: /parent cgroup denies the device/,
  });
});

t.test('the nodes are made with the host\'s numbers and modes, and the QEMU user owns the group node', async (t) => {
  if (!needsRoot(t)) return;
  const w = world(t);
  const qemuUser = { uid: 64055, gid: 64056 };
  await deliverVfioToQemu(request(qemuUser), w.deps);
  const inside = join(w.pidDir, 'root/dev/vfio');
  const group = lstatSync(join(inside, '7'));
  const container = lstatSync(join(inside, 'vfio'));
  t.ok(group.isCharacterDevice() && container.isCharacterDevice());
  t.same(splitRdev(group.rdev), { major: 1, minor: 5 });
  t.same(splitRdev(container.rdev), { major: 1, minor: 3 });
  t.same([group.uid, group.gid, group.mode & 0o777], [64055, 64056, 0o600]);
  t.same([container.uid, container.gid, container.mode & 0o777], [0, 0, 0o666]);
});

t.test('a link planted in QEMU\'s /dev is refused, not followed', async (t) => {
  const w = world(t);
  mkdirSync(join(w.pidDir, 'root/dev/vfio'));
  symlinkSync('/dev/zero', join(w.pidDir, 'root/dev/vfio/7'));
  await t.rejects(deliverVfioToQemu(request(), w.deps), { exitCode: 1, code: 'EEXIST', message: /root\/dev\/vfio\/7 exists but is not the character device 1:5/ });
});
