import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuArgvBySocket } from '../../src/migrate/devices.js';
import { hasQmpSocket, qmpMonitorArgs } from '../../src/qemu/qmp-monitor.js';

const SOCKET = '/run/vfpool/qemu/vm1/qmp.sock';

t.test('the monitor is `-qmp unix:` (QEMU 11.1 warns that -mon is deprecated; 10.0 has no -object monitor-qmp), commas doubled', async (t) => {
  t.same(qmpMonitorArgs(SOCKET), ['-qmp', 'unix:/run/vfpool/qemu/vm1/qmp.sock,server=on,wait=off']);
  t.same(qmpMonitorArgs('/tmp/a,b/qmp.sock'), ['-qmp', 'unix:/tmp/a,,b/qmp.sock,server=on,wait=off']);
  t.notOk(qmpMonitorArgs(SOCKET).includes('-mon'));
});

t.test('hasQmpSocket: this release\'s -qmp and the -chardev of QEMUs an earlier release started, by exact path', async (t) => {
  const cases: Array<[string, string[], string, boolean]> = [
    ['-qmp', ['-qmp', `unix:${SOCKET},server=on,wait=off`], SOCKET, true],
    ['--qmp', ['--qmp', `unix:${SOCKET},server=on,wait=off`], SOCKET, true],
    ['-chardev of an earlier release', ['-chardev', `socket,id=vfpool-qmp,path=${SOCKET},server=on,wait=off`, '-mon', 'chardev=vfpool-qmp,mode=control'], SOCKET, true],
    ['escaped comma, -qmp', ['-qmp', 'unix:/tmp/a,,b/qmp.sock,server=on,wait=off'], '/tmp/a,b/qmp.sock', true],
    ['escaped comma, -chardev', ['-chardev', 'socket,id=vfpool-qmp,path=/tmp/a,,b/qmp.sock,server=on,wait=off'], '/tmp/a,b/qmp.sock', true],
    ['another socket', ['-qmp', 'unix:/run/other.sock,server=on,wait=off'], SOCKET, false],
    ['a longer path that starts with ours', ['-chardev', `socket,id=x,path=${SOCKET}.old,server=on`, '-qmp', `unix:${SOCKET}2,server=on`], SOCKET, false],
    ['a TCP monitor', ['-qmp', 'tcp:127.0.0.1:4444,server=on,wait=off'], SOCKET, false],
    ['the path as a value of another option', ['-name', `unix:${SOCKET}`, '-append', `path=${SOCKET}`], SOCKET, false],
    ['a chardev that is not kv or JSON QEMU reads', ['-chardev', '{"backend":'], SOCKET, false],
    ['libvirt\'s own monitor (by fd)', ['-chardev', 'socket,id=charmonitor,fd=21,server=on,wait=off', '-mon', 'chardev=charmonitor,id=monitor,mode=control'], SOCKET, false],
  ];
  for (const [what, argv, socket, want] of cases) t.equal(hasQmpSocket(argv, socket), want, what);
});

t.test('qemuArgvBySocket finds the QEMU with either form, and not one whose socket path only starts the same', async (t) => {
  const proc = t.testdir();
  const qemu = (pid: number, argv: string[]) => {
    mkdirSync(join(proc, String(pid)));
    writeFileSync(join(proc, String(pid), 'cmdline'), ['/usr/bin/qemu-system-x86_64', ...argv].join('\0') + '\0');
  };
  qemu(100, ['-name', 'guest=longer', '-qmp', `unix:${SOCKET}.x,server=on,wait=off`]);
  qemu(200, ['-name', 'guest=old', '-chardev', 'socket,id=vfpool-qmp,path=/run/vfpool/qemu/old/qmp.sock,server=on,wait=off', '-mon', 'chardev=vfpool-qmp,mode=control']);
  qemu(300, ['-name', 'guest=vm1', ...qmpMonitorArgs(SOCKET)]);
  t.same(qemuArgvBySocket(SOCKET, proc).slice(0, 2), ['-name', 'guest=vm1']);
  t.same(qemuArgvBySocket('/run/vfpool/qemu/old/qmp.sock', proc).slice(0, 2), ['-name', 'guest=old'], 'a QEMU started before the upgrade');
});
