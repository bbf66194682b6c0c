import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient, QmpClosedError, QmpCommandError, QmpTimeoutError } from '../../src/qemu/qmp.js';
import { startFakeQmp, type FakeReply } from '../helpers/fake-qmp.js';

/** A short directory: a unix socket path must fit sun_path's 108 bytes, tap's fixture paths do not. */
function sockDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync('/tmp/vfpool-qmp-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const handler = (cmd: string, args: unknown): FakeReply => {
  switch (cmd) {
    case 'query-status':
      return { return: { status: 'running', running: true } };
    case 'device_del':
      // QEMU may send DEVICE_DELETED before device_del's own reply.
      return { return: {}, eventsBefore: [{ event: 'DEVICE_DELETED', data: { device: (args as { id: string }).id, path: '/machine/peripheral/x' } }] };
    case 'device_add':
      return { error: { class: 'GenericError', desc: "Duplicate device ID 'vfpool-vf0'" } };
    case 'qom-get':
      return { error: { class: 'DeviceNotFound', desc: "Device '/machine/peripheral/nope' not found" } };
    case 'stall':
      return { silent: true };
    case 'quit':
      return { hangUp: true };
    default:
      return { error: { class: 'CommandNotFound', desc: `The command ${cmd} has not been found` } };
  }
};

t.test('greeting, capabilities first, execute, version', async (t) => {
  const dir = sockDir(t);
  const fake = await startFakeQmp(join(dir, 'qmp.sock'), handler);
  t.teardown(() => fake.close());
  const c = await QmpClient.connect(fake.path);
  t.same(c.version, { major: 10, minor: 0, micro: 2 });
  t.same(await c.execute('query-status'), { status: 'running', running: true });
  t.same(fake.received.map((r) => r.execute), ['qmp_capabilities', 'query-status'], 'negotiated before the first command');
  c.close();
});

t.test('an error reply is a typed error carrying QMP\'s error class and the command', async (t) => {
  const dir = sockDir(t);
  const fake = await startFakeQmp(join(dir, 'qmp.sock'), handler);
  t.teardown(() => fake.close());
  const c = await QmpClient.connect(fake.path);
  const err = await c.execute('device_add', { driver: 'vfio-pci', id: 'vfpool-vf0' }).catch((e: unknown) => e);
  t.ok(err instanceof QmpCommandError);
  t.match(err, { command: 'device_add', errorClass: 'GenericError', desc: "Duplicate device ID 'vfpool-vf0'", exitCode: 1 });
  t.equal((err as QmpCommandError).toLine(), "QMP device_add failed: GenericError: Duplicate device ID 'vfpool-vf0'");
  t.match(await c.execute('qom-get', { path: '/machine/peripheral/nope', property: 'x' }).catch((e: unknown) => e), { errorClass: 'DeviceNotFound' });
  t.same(fake.received.at(-2), { execute: 'device_add', arguments: { driver: 'vfio-pci', id: 'vfpool-vf0' } }, 'arguments sent as given');
  c.close();
});

t.test('an event that arrives before the reply is caught by a waiter registered before the command', async (t) => {
  const dir = sockDir(t);
  const fake = await startFakeQmp(join(dir, 'qmp.sock'), handler);
  t.teardown(() => fake.close());
  const c = await QmpClient.connect(fake.path);
  const seen: string[] = [];
  c.events.listen((e) => seen.push(e.event));
  const other = c.events.waitFor('DEVICE_DELETED', (d) => d.device === 'someone-else', { timeoutMs: 200 });
  const mine = c.events.waitFor('DEVICE_DELETED', (d) => d.device === 'vfpool-vf0');
  await c.execute('device_del', { id: 'vfpool-vf0' });
  const e = await mine.promise;
  t.same(e.data, { device: 'vfpool-vf0', path: '/machine/peripheral/x' });
  t.same(seen, ['DEVICE_DELETED']);
  await t.rejects(other.promise, QmpTimeoutError, 'a waiter whose event never comes times out');
  const cancelled = c.events.waitFor('UNPLUG_PRIMARY', undefined, { timeoutMs: 50 });
  cancelled.cancel();
  fake.emit('UNPLUG_PRIMARY', { 'device-id': 'vfpool-vf0' });
  c.close();
});

t.test('a command without answer times out; the late reply is dropped', async (t) => {
  const dir = sockDir(t);
  const fake = await startFakeQmp(join(dir, 'qmp.sock'), handler);
  t.teardown(() => fake.close());
  const c = await QmpClient.connect(fake.path);
  await t.rejects(c.execute('stall', undefined, { timeoutMs: 100 }), { name: 'QmpTimeoutError', message: /^QMP stall got no answer within 100 ms on / });
  t.same(await c.execute('query-status'), { status: 'running', running: true }, 'the connection still works');
  c.close();
});

t.test('QEMU gone: pending commands and waiters fail with a clear error; so does a socket nobody listens on', async (t) => {
  const dir = sockDir(t);
  const fake = await startFakeQmp(join(dir, 'qmp.sock'), handler);
  t.teardown(() => fake.close());
  const c = await QmpClient.connect(fake.path);
  const w = c.events.waitFor('DEVICE_DELETED');
  const pending = c.execute('stall');
  await t.rejects(c.execute('quit'), { name: 'QmpClosedError', message: `QEMU closed its QMP socket ${fake.path} (QEMU is gone?)` });
  await t.rejects(pending, QmpClosedError);
  await t.rejects(w.promise, QmpClosedError);
  await t.rejects(c.execute('query-status'), QmpClosedError, 'later commands too');
  await t.rejects(QmpClient.connect(join(dir, 'absent.sock')), { name: 'QmpClosedError', message: `cannot connect to QMP socket ${join(dir, 'absent.sock')}: ENOENT (is QEMU running?)` });
});

t.test('a socket that streams a line without end is dropped at 16 MiB, not buffered in root\'s memory', async (t) => {
  // The socket's directory is the QEMU user's: whatever listens there may not be QEMU.
  const { createServer } = await import('node:net');
  const dir = sockDir(t);
  const path = join(dir, 'qmp.sock');
  const chunk = 'x'.repeat(1 << 20);
  const server = createServer((s) => {
    s.on('error', () => {});
    s.write('{"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0}}, "capabilities": []}}\n');
    const pump = () => {
      while (!s.destroyed && s.write(chunk));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(() => server.close());
  const started = Date.now();
  await t.rejects(QmpClient.connect(path, { timeoutMs: 20_000 }), { name: 'QmpClosedError', message: `QMP socket ${path} sent more than 16 MiB without a line end, which QEMU never does` });
  t.ok(Date.now() - started < 10_000, 'at once, not at the timeout');
});
