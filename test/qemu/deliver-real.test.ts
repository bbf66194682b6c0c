// deliverVfioToQemu against a REAL QEMU 10 set up the way libvirt 11.3 runs it (measured in
// docs/libvirt-delivery.md): its own mount namespace with a tmpfs /dev holding no /dev/vfio,
// a v1 devices cgroup with libvirt's default ACL, RLIMIT_MEMLOCK 8 MiB, an unprivileged user.
// QEMU itself proves the result: a QMP `chardev-add` with a file backend makes QEMU open the
// path inside its namespace, cgroup and uid: ENOENT before, EPERM while only the cgroup stands in
// the way, ENODEV after delivery (this machine has no vfio driver behind 10:196: the open got
// past the namespace and the cgroup). Needs root, qemu-system-x86_64, unshare/mknod/prlimit/
// setpriv, bpftool where cgroup2 is mounted (a hybrid host too) and a v1 devices controller (CI
// has all; scripts/install-lab-packages.sh).
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { defaultDeliverDeps, deliverVfioToQemu, memlockForVfio, parseMemlockLimit, splitRdev } from '../../src/qemu/deliver.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const DEVICES_MOUNT = '/sys/fs/cgroup/devices';
const NOBODY = 65534;
const MEMLOCK_8M = 8n * 1024n * 1024n;

function missing(): string | null {
  if (process.getuid!() !== 0) return 'needs root (mknod, cgroups, namespaces)';
  if (!existsSync(QEMU)) return `needs ${QEMU} (scripts/install-lab-packages.sh)`;
  if (!existsSync(join(DEVICES_MOUNT, 'devices.allow'))) return `needs a v1 devices controller at ${DEVICES_MOUNT}`;
  if (/ cgroup2 /.test(readFileSync('/proc/self/mounts', 'utf8')) && spawnSync('bpftool', ['version']).error) return 'needs bpftool: cgroup2 is mounted here, and delivery reads its BPF device programs';
  return null;
}

/** A minimal QMP exchange for this test only (vfpool's client is src/qemu/qmp.ts). */
async function qmp(path: string) {
  const sock = net.connect(path);
  let buf = '';
  const waiting: Array<(m: Record<string, unknown>) => void> = [];
  sock.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
      buf = buf.slice(i + 1);
      if (!('event' in msg)) waiting.shift()?.(msg);
    }
  });
  const next = () => new Promise<Record<string, unknown>>((res) => waiting.push(res));
  await next();
  const exec = async (execute: string, args?: object) => {
    const p = next();
    sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    return p;
  };
  await exec('qmp_capabilities');
  return { exec, close: () => sock.destroy() };
}

async function waitFor(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (existsSync(path)) return;
    if (child.exitCode !== null) throw new Error(`QEMU exited ${child.exitCode}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no QMP socket ${path} after 20 s: ${stderr()}`);
}

const why = missing();
if (why) {
  if (process.env.CI) t.fail(`deliver-real: ${why}; CI must provide it`);
  else t.plan(0, why);
} else {
  t.test('a real QEMU in its own mount namespace and devices cgroup gets the vfio nodes, the cgroup rule and (with CAP_SYS_RESOURCE) the memlock', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vfpool-deliver-'));
    chmodSync(dir, 0o755);
    const sockDir = join(dir, 'qmp');
    mkdirSync(sockDir, { mode: 0o700 });
    spawnSync('chown', [`${NOBODY}:${NOBODY}`, sockDir]);
    const qmpPath = join(sockDir, 'qmp.sock');
    // The host's nodes: vfio's container (10:196) and a group with an unused char major.
    const dev = join(dir, 'dev');
    mkdirSync(join(dev, 'vfio'), { recursive: true });
    t.equal(spawnSync('mknod', ['-m', '666', join(dev, 'vfio/vfio'), 'c', '10', '196']).status, 0, 'host node vfio');
    t.equal(spawnSync('mknod', ['-m', '600', join(dev, 'vfio/77'), 'c', '511', '77']).status, 0, 'host node 77');
    // libvirt's default cgroup_device_acl, nothing else.
    const cgroup = join(DEVICES_MOUNT, `vfpool-deliver-test-${process.pid}`);
    mkdirSync(cgroup);
    writeFileSync(join(cgroup, 'devices.deny'), 'a');
    for (const rule of ['c 1:3 rw', 'c 1:5 rw', 'c 1:7 rw', 'c 1:8 rw', 'c 1:9 rw', 'c 5:2 rw', 'c 136:* rw', 'c 10:232 rw', 'c 10:126 rw']) {
      writeFileSync(join(cgroup, 'devices.allow'), rule);
    }
    // What libvirt's namespace helper does: a private mount namespace with a tmpfs /dev holding a
    // few nodes; then join the cgroup, drop the memlock limit and the uid, exec QEMU (same pid).
    const script = [
      'set -e',
      'mount -t tmpfs -o mode=755 tmpfs /dev',
      'mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/urandom c 1 9',
      'echo $$ > "$1/tasks"',
      'exec prlimit --memlock=8388608:8388608 setpriv --reuid=65534 --regid=65534 --clear-groups "$2" -machine none -accel tcg -S -nodefaults -display none -qmp "unix:$3,server=on,wait=off"',
    ].join('\n');
    let err = '';
    const child = spawn('unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', cgroup, QEMU, qmpPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => (err += d));
    t.teardown(() => {
      child.kill('SIGKILL');
      return new Promise<void>((res) => {
        const done = () => {
          spawnSync('rmdir', [cgroup]); // a cgroup goes with rmdir, never with unlink of its files
          rmSync(dir, { recursive: true, force: true });
          res();
        };
        if (child.exitCode !== null || child.signalCode !== null) done();
        else child.once('exit', () => setTimeout(done, 50));
      });
    });
    await waitFor(qmpPath, child, () => err);
    const pid = child.pid!;
    t.equal(parseMemlockLimit(readFileSync(`/proc/${pid}/limits`, 'utf8')), MEMLOCK_8M, 'QEMU starts with libvirt\'s 8 MiB');
    const q = await qmp(qmpPath);
    t.teardown(() => q.close());
    const open = async (id: string, path: string) => {
      const r = await q.exec('chardev-add', { id, backend: { type: 'file', data: { out: path } } });
      return r.error ? String((r.error as { desc: string }).desc) : 'opened';
    };

    t.match(await open('c0', '/dev/vfio/vfio'), /No such file or directory/, 'before: no /dev/vfio in QEMU\'s namespace');
    // A node made by hand in QEMU's /dev: now only the cgroup refuses it.
    t.equal(spawnSync('mknod', ['-m', '666', `/proc/${pid}/root/dev/probe`, 'c', '10', '196']).status, 0);
    t.match(await open('c1', '/dev/probe'), /Operation not permitted/, 'before: the devices cgroup refuses 10:196');

    const deps = { ...defaultDeliverDeps(), devRoot: dev };
    const wanted = memlockForVfio(128n * 1024n * 1024n);
    const request = { pid, groups: ['77'], uid: NOBODY, gid: NOBODY, memlockBytes: wanted };
    const capSysResource = (BigInt('0x' + (/CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0')) >> 24n) & 1n;
    let result;
    if (capSysResource) {
      result = await deliverVfioToQemu(request, deps);
      t.equal(parseMemlockLimit(readFileSync(`/proc/${pid}/limits`, 'utf8')), wanted, 'memlock raised to guest RAM + 1 GiB');
    } else {
      // This machine's root lacks CAP_SYS_RESOURCE (a container): libvirt could not raise it either.
      await t.rejects(deliverVfioToQemu(request, deps), { code: 'EPERM', hint: /CAP_SYS_RESOURCE/ }, 'memlock refused with the reason');
      t.notOk(existsSync(`/proc/${pid}/root/dev/vfio`), 'and nothing else was done');
      result = await deliverVfioToQemu({ ...request, memlockBytes: MEMLOCK_8M }, deps);
    }
    t.same(result.steps.filter((s) => s.kind !== 'memlock').map((s) => (s.kind === 'cgroup-v1-allow' ? s.rule : s.kind)), ['mknod', 'mknod', 'c 10:196 rw', 'c 511:77 rw']);
    t.equal(result.cgroup, 'v1');
    t.equal(result.privateMountNamespace, true);
    const group = lstatSync(`/proc/${pid}/root/dev/vfio/77`);
    t.same([group.isCharacterDevice(), splitRdev(group.rdev), group.uid, group.mode & 0o777], [true, { major: 511, minor: 77 }, NOBODY, 0o600]);
    t.notOk(existsSync(join(dev, '..', 'probe')), 'the host\'s /dev is untouched');

    t.match(await open('c2', '/dev/vfio/vfio'), /No such device/, 'after: QEMU reaches the (absent) vfio driver');
    t.match(await open('c3', '/dev/vfio/77'), /No such device/, 'after: the group node too, as the QEMU user');
    const again = await deliverVfioToQemu({ ...request, memlockBytes: capSysResource ? wanted : MEMLOCK_8M }, deps);
    t.same(again.steps, [], 'a second delivery changes nothing');
  });
}
