import t from 'tap';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pausedSettleMs } from '../../src/entry/migrate-command.js';
import { connectQmp, virshQmp } from '../../src/migrate/qmp-port.js';
import { qemuArgvBySocket } from '../../src/migrate/devices.js';
import { domainQmpSocketPath, readDomainPlan, writeDomainPlan } from '../../src/state/domain-plan.js';
import { fileRecordStore } from '../../src/state/migration-record.js';
import { makeSimEnv } from '../helpers/env.js';
import { runCliInProcess as cli } from '../helpers/cli-in-process.js';
import { startFakeQemu } from '../helpers/fake-qemu.js';
import { fakeVirsh } from '../helpers/fake-virsh.js';
import { held, incomingGuest, MAC, POOL, runningGuest } from '../helpers/migrate-world.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

/**
 * The migration stages that talk to a running QEMU (perform, confirm with a plug, --wait-incoming,
 * `migrate DOMAIN URI`), and `guest-devices`, in-process: QEMU is an in-process QMP server on
 * the domain's socket (test/helpers/fake-qemu.ts), its argv in a /proc under VFPOOL_PROC, virsh
 * a shell script on PATH (the hosts: test/helpers/migrate-world.ts). The real QEMU runs them in
 * test/migrate/*.test.sh.
 */
t.test('perform unplugs the VF (device_del, DEVICE_DELETED); a failed migration plugs the same device back', async (t) => {
  const w = await runningGuest(t);
  const perform = await cli(['migrate', 'perform', 'vm1'], w.cliEnv);
  t.equal(perform.exitCode, 0, perform.stderr);
  t.equal(perform.stdout, 'vm1: device_del vfpool-vf0 on the source QEMU, wait for DEVICE_DELETED (30000 ms)\nvm1: source of \'vm1\' ready to migrate\nvm1: performed\n');
  t.notOk(w.qemu.devices.has('vfpool-vf0'), 'gone from the guest');
  const again = await cli(['migrate', 'perform', 'vm1'], w.cliEnv);
  t.same([again.exitCode, again.stdout], [0, 'vm1: source of \'vm1\' ready to migrate\nvm1: performed\n'], 're-run: nothing left to unplug');

  const undo = await cli(['migrate', 'confirm', 'vm1', '--role', 'source', '--failed', '--json'], w.cliEnv);
  t.equal(undo.exitCode, 0, undo.stderr);
  t.match(JSON.parse(undo.stdout), { domain: 'vm1', stage: 'confirmed-failure', steps: [/^device_add vfpool-vf0 \(e1000e, mac 52:54:00:aa:00:01\) on bus vfpool-rp0$/, /stays on the source/] });
  t.match(w.qemu.received.filter((c) => c.execute === 'device_add'), [{ arguments: { driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', mac: MAC } }], 'the device the wrapper generated');
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'back in the guest');
  t.equal(held(w).length, 1, 'the VF stays allocated');
});

t.test('perform --to migrates over QMP; confirm on the source then frees the VF', async (t) => {
  const w = await runningGuest(t);
  const r = await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /\nvm1: performed\nvm1: migrated to tcp:127\.0\.0\.1:4444 in \d+ ms\n$/);
  t.match(w.qemu.received.filter((c) => c.execute === 'migrate'), [{ arguments: { uri: 'tcp:127.0.0.1:4444' } }]);
  const done = await cli(['migrate', 'confirm', 'vm1', '--role', 'source'], w.cliEnv);
  t.equal(done.exitCode, 0, done.stderr);
  t.match(done.stdout, /restore and free the VFs of 'vm1' on this host \(migrated\)\nvm1: confirmed-success\n$/);
  t.same(held(w), [], 'freed');
  t.equal(readDomainPlan(w.settings.stateDir, 'vm1'), null, 'plan removed');
});

t.test('a migration QEMU reports failed: exit 1 with its reason, and the VF is plugged back', async (t) => {
  const w = await runningGuest(t);
  w.qemu.migrate = { status: 'failed', 'error-desc': 'Connection refused' };
  const r = await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444'], w.cliEnv);
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /^vfpool: migration to tcp:127\.0\.0\.1:4444 failed: Connection refused/);
  t.match(r.stdout, /vm1: device_add vfpool-vf0 .*\nvm1: 'vm1' stays on the source\nvm1: confirmed-failure\n$/);
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'plugged back');
});

t.test('perform when the QEMU is gone: exit 1, one line naming the socket, nothing recorded', async (t) => {
  const w = await runningGuest(t);
  await w.qemu.close();
  const r = await cli(['migrate', 'perform', 'vm1'], w.cliEnv);
  t.equal(r.exitCode, 1);
  t.match(r.stderr, /^vfpool: .*vm1\/qmp\.sock/);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.notOk(existsSync(join(w.settings.stateDir, 'migrate')), 'no migration record');
});

t.test('destination: prepare from the description, confirm --wait-incoming plugs the VF once the migration ended', async (t) => {
  const { dst, plan, qemu, env } = await incomingGuest(t);
  t.match(held(dst), [{ vfAddr: /^0000:5e:/, mac: MAC }], 'a VF of this host reserved with the source\'s MAC');
  t.match(plan.vfs, [{ id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC }], 'the simulated VF reaches QEMU as an emulated NIC');
  qemu.statuses = ['inmigrate', 'running'];
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], env);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /^vm1: device_add vfpool-vf0 \(e1000e, mac 52:54:00:aa:00:01\) on bus vfpool-rp0\nvm1: 'vm1' arrived\nvm1: confirmed-success\n$/);
  t.ok(qemu.devices.has('vfpool-vf0'), 'plugged into the arrived guest');
  t.equal(qemu.received.filter((c) => c.execute === 'query-status').length, 2, 'asked until the migration ended');
});

t.test('destination: confirm --wait-incoming plugs once libvirt resumed the arrived guest, not while it is still paused', async (t) => {
  const { qemu, env } = await incomingGuest(t);
  // The migration ends (paused: libvirt started it with -S), then libvirt's Finish resumes it.
  qemu.statuses = ['inmigrate', 'paused', 'paused', 'running'];
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], env);
  t.equal(r.exitCode, 0, r.stderr);
  const asked = qemu.received.map((c) => c.execute).filter((e) => e === 'query-status' || e === 'device_add');
  t.same(asked, ['query-status', 'query-status', 'query-status', 'query-status', 'device_add'], 'device_add only once the guest runs');
  t.ok(qemu.devices.has('vfpool-vf0'), 'plugged');
});

t.test('the paused settle time is 5 s unless the test knob VFPOOL_TEST_PAUSED_SETTLE_MS gives whole milliseconds', async (t) => {
  t.equal(pausedSettleMs({}), 5000, 'unset: 5 s');
  t.equal(pausedSettleMs({ VFPOOL_TEST_PAUSED_SETTLE_MS: '600' }), 600);
  t.equal(pausedSettleMs({ VFPOOL_TEST_PAUSED_SETTLE_MS: '0' }), 0);
  for (const bad of ['', ' 600', '6e2', '-1', '1.5', 'abc', '1234567890']) t.equal(pausedSettleMs({ VFPOOL_TEST_PAUSED_SETTLE_MS: bad }), 5000, `${JSON.stringify(bad)}: 5 s`);
});

// The settle time of the next test: 600 ms instead of 5 s (VFPOOL_TEST_PAUSED_SETTLE_MS); at
// least three 200 ms polls, the rule the same.
const SETTLE_MS = 600;

t.test('destination: a guest left paused after its migration (virsh migrate --suspend) is plugged once it has stayed paused the settle time', async (t) => {
  const { qemu, env } = await incomingGuest(t);
  qemu.statuses = ['inmigrate', 'paused'];
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], { ...env, VFPOOL_TEST_PAUSED_SETTLE_MS: String(SETTLE_MS) });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /^vm1: device_add vfpool-vf0 .*\nvm1: confirmed-success\n$/s);
  const asked = qemu.received.map((c) => c.execute).filter((e) => e === 'query-status' || e === 'device_add');
  // The first 'paused' answer starts the settle time; only a later one can end it.
  t.ok(asked.filter((e) => e === 'query-status').length >= 3, `kept asking after the first 'paused' (${asked.length - 1} query-status)`);
  t.equal(asked.at(-1), 'device_add', 'then plugged');
  t.ok(qemu.devices.has('vfpool-vf0'), 'plugged');
});

t.test('destination: an incoming migration that ends in a shut-down QEMU frees the reservation', async (t) => {
  const src = await runningGuest(t);
  const begin = await cli(['migrate', 'begin', 'vm1'], src.cliEnv);
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2, address: '0000:5e:00.0' }] });
  await dst.sim.writeNumVfs('eth1' as never, 2);
  await dst.addPool('p', POOL);
  t.equal((await cli(['migrate', 'prepare', '--description', '-'], dst.env, begin.stdout)).exitCode, 0);
  t.equal(held(dst).length, 1, 'reserved');
  const socket = domainQmpSocketPath(dst.settings.stateDir, 'vm1');
  const qemu = await startFakeQemu(socket, { procRoot: join(dst.dir, 'proc'), argv: ['-name', 'guest=vm1'] });
  t.teardown(() => qemu.close());
  qemu.statuses = ['shutdown'];
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], dst.env);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /restore and free the VFs of 'vm1' on this host \(migration-failed\)\nvm1: confirmed-failure\n$/);
  t.same(held(dst), [], 'reservation freed');
});

t.test('destination: --wait-incoming finding no QMP socket frees the reservation only if the QEMU is gone, not while it runs without vfpool-qemu', async (t) => {
  const { dst, qemu, env } = await incomingGuest(t);
  await qemu.close(); // no socket: a QEMU started without the wrapper, or one that is gone
  const runDir = join(dst.dir, 'libvirt-run');
  // `virsh restore` of a domain whose <emulator> is QEMU itself: libvirt's pid file names a live QEMU.
  fakeLibvirtQemu({ libvirtRunDir: runDir, procRoot: env.VFPOOL_PROC! }, 'vm1');
  const running = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], { ...env, VFPOOL_LIBVIRT_RUN_DIR: runDir });
  t.equal(running.exitCode, 1);
  t.match(running.stderr, new RegExp(`^vfpool: domain 'vm1': its QEMU \\(pid ${process.pid}\\) runs but does not answer on vfpool's QMP socket \\(cannot connect to QMP socket .*vm1/qmp\\.sock: ENOENT[^\\n]*\\), so its VFs cannot be plugged: start the domain through vfpool-qemu \\(its <emulator>\\); its VFs stay held until libvirt releases it\\n$`));
  t.equal(held(dst).length, 1, 'the running domain keeps its VF');
  t.equal(fileRecordStore(dst.settings.stateDir).read('vm1'), null, 'and no migration record is left to confirm');

  // The QEMU gone (no pid file): a failed incoming migration, whose reservation is freed.
  const other = await incomingGuest(t);
  await other.qemu.close();
  const noPid = join(other.dst.dir, 'libvirt-run');
  mkdirSync(noPid);
  const gone = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '60'], { ...other.env, VFPOOL_LIBVIRT_RUN_DIR: noPid });
  t.equal(gone.exitCode, 0, gone.stderr);
  t.match(gone.stdout, /confirmed-failure\n$/);
  t.same(held(other.dst), [], 'freed');
});

t.test('migrate DOMAIN URI: perform, virsh migrate --live, confirm; the destination checked through its libvirt', async (t) => {
  const w = await runningGuest(t);
  const PATH = fakeVirsh(w.dir, { destPeripherals: ['net0', 'vfpool-vf0'] });
  const r = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system', '--', '--persistent'], { ...w.cliEnv, PATH });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /^vm1: device_del vfpool-vf0 [^\n]*\n(vm1: [^\n]*\n)*vm1: virsh migrate --live to qemu\+tcp:\/\/dest\.example\/system took \d+ ms\nvm1: restore and free [^\n]*\nvm1: vfpool-vf0 plugged on qemu\+tcp:\/\/dest\.example\/system\n$/);
  t.same(held(w), [], 'the source freed its VF');
});

t.test('migrate DOMAIN URI: a failing virsh migrate plugs the VF back, exit 1 with virsh\'s reason', async (t) => {
  const w = await runningGuest(t);
  const PATH = fakeVirsh(w.dir, { migrateFails: true, destPeripherals: [] });
  const r = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system'], { ...w.cliEnv, PATH });
  t.equal(r.exitCode, 1);
  t.equal(r.stderr, 'vfpool: virsh migrate --live vm1 qemu+tcp://dest.example/system failed: error: operation failed: job: unexpectedly failed: the domain stays on this host with its VFs plugged back\n');
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'plugged back');
  t.equal(held(w).length, 1);
});

t.test('migrate DOMAIN URI without a virsh it can start: one line naming the cause and what to install, exit 1, before the VF leaves the guest', async (t) => {
  const w = await runningGuest(t);
  const noVirsh = t.testdir({});
  const missing = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system'], { ...w.cliEnv, PATH: noVirsh });
  t.equal(missing.exitCode, 1);
  t.match(missing.stderr, /^vfpool: vfpool migrate vm1: running virsh failed: [^\n]*ENOENT[^\n]*: virsh is not installed [^\n]*apt-get install libvirt-clients[^\n]*\n$/);
  // Where it looked is the PATH it was given (a person's), not the hooks' fixed one.
  t.ok(missing.stderr.includes(`virsh is not installed where vfpool looks (the PATH vfpool was run with: ${noVirsh}): `), missing.stderr);
  const notExecutable = t.testdir({ virsh: '#!/bin/sh\nexit 0\n' });
  chmodSync(join(notExecutable, 'virsh'), 0o644);
  const refused = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system'], { ...w.cliEnv, PATH: notExecutable });
  t.equal(refused.exitCode, 1);
  t.match(refused.stderr, /^vfpool: vfpool migrate vm1: running virsh failed: [^\n]*EACCES[^\n]*: virsh could not be started: it must be an executable[^\n]*\n$/);
  t.equal(missing.stdout + refused.stdout, '', 'nothing done to report');
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'the VF is still in the guest');
  t.same(w.qemu.received.filter((c) => c.execute === 'device_del'), [], 'no device_del');
  t.notOk(existsSync(join(w.settings.stateDir, 'migrate', 'vm1.json')), 'no migration record');
  t.equal(held(w).length, 1);
});

t.test('migrate DOMAIN URI to a destination that does not answer, or to this host: one line, exit 1, before the VF leaves the guest', async (t) => {
  // Reproduced on libvirt 11.3: a URI whose daemon does not listen (a typo) and qemu:///system
  // (this host) were found only by virsh migrate, after device_del had taken the VF out of the
  // running guest: its NIC went and came back for nothing.
  const w = await runningGuest(t);
  const down = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system'], { ...w.cliEnv, PATH: fakeVirsh(join(w.dir, 'down'), { destPeripherals: [], destDown: true }) });
  t.same([down.exitCode, down.stdout, down.stderr], [1, '', "vfpool: vfpool migrate vm1: the destination qemu+tcp://dest.example/system does not answer (virsh -c qemu+tcp://dest.example/system capabilities: " +
    "error: unable to connect to server at 'dest.example:16509': Connection refused): nothing changed, the VFs stay in the guest: check the URI, and that the destination's libvirt daemon runs and accepts this connection\n"]);
  const self = await cli(['migrate', 'vm1', 'qemu:///system', '--dry-run'], { ...w.cliEnv, PATH: fakeVirsh(join(w.dir, 'self'), { destPeripherals: [], destUuid: '8037112C-B8E3-4AA9-A2CA-D6876D585386' }) });
  t.same([self.exitCode, self.stdout, self.stderr], [1, '', 'vfpool: vfpool migrate vm1: the destination qemu:///system is this host (libvirt host UUID 8037112c-b8e3-4aa9-a2ca-d6876d585386): ' +
    'nothing changed, the VFs stay in the guest: name another host (libvirt refuses to migrate a guest to the host it runs on)\n'], 'the dry run refuses it alike');
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'the VF is still in the guest');
  t.same(w.qemu.received.filter((c) => c.execute === 'device_del'), [], 'no device_del');
  t.notOk(existsSync(join(w.settings.stateDir, 'migrate', 'vm1.json')), 'no migration record');
  t.equal(held(w).length, 1);
});

t.test('migrate DOMAIN URI: a virsh migrate that outlives --timeout is said to have been stopped, not "exit undefined"; the VF plugged back', async (t) => {
  const w = await runningGuest(t);
  const bin = t.testdir({ virsh: '#!/bin/sh\ncase $1 in migrate) exec sleep 30 ;; esac\n' });
  chmodSync(join(bin, 'virsh'), 0o755);
  const r = await cli(['migrate', 'vm1', 'qemu+tcp://dest.example/system', '--timeout', '1'], { ...w.cliEnv, PATH: `${bin}:${process.env.PATH}` });
  t.equal(r.exitCode, 1);
  t.equal(r.stderr, 'vfpool: virsh migrate --live vm1 qemu+tcp://dest.example/system failed: no answer within 1 s, stopped: the domain stays on this host with its VFs plugged back\n');
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'plugged back');
});

t.test('virshQmp: a command\'s return, QMP\'s error class, virsh failing, and no events', async (t) => {
  const dir = t.testdir({});
  const saved = process.env.PATH;
  process.env.PATH = fakeVirsh(dir, { destPeripherals: ['vfpool-vf0'] });
  t.teardown(() => void (process.env.PATH = saved));
  const q = virshQmp('qemu+tcp://dest/system', 'vm1');
  t.same(await q.execute('qom-list', { path: '/machine/peripheral' }), [{ name: 'vfpool-vf0', type: 'child<e1000e>' }]);
  await t.rejects(q.execute('query-bogus'), { message: 'QMP CommandNotFound from vm1 at qemu+tcp://dest/system: The command query-bogus has not been found', code: 'CommandNotFound' });
  await t.rejects(q.execute('query-status'), { message: 'virsh -c qemu+tcp://dest/system qemu-monitor-command vm1 query-status: error: failed to connect to the hypervisor' });
  t.throws(() => q.listen('DEVICE_DELETED', () => true, 1000), { message: /waiting for DEVICE_DELETED through virsh is not possible/ });
  process.env.PATH = join(dir, 'empty');
  await t.rejects(q.execute('query-status'), { message: /^virsh -c qemu\+tcp:\/\/dest\/system qemu-monitor-command vm1 query-status: running virsh failed: .*ENOENT/, code: 'ENOENT' }, 'a virsh that cannot be started says so');
});

t.test('guest-devices: a failover primary QEMU keeps hidden is said, not left out silently', async (t) => {
  // Reproduced on libvirt 11.3: a guest with an <interface> on a pci-passthrough-hybrid pool
  // and no OS yet showed net0 and vfpool-rp0 but no VF, with nothing saying why: QEMU creates
  // the primary only once the guest's virtio-net driver acks failover.
  const w = await runningGuest(t);
  const plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  await writeDomainPlan(w.settings.stateDir, { ...plan, vfs: plan.vfs.map((v) => ({ ...v, failoverStandbyMac: MAC })) }, { uid: process.getuid!(), gid: process.getgid!() });
  w.qemu.devices.delete('vfpool-vf0');
  const r = await cli(['guest-devices', 'vm1'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.stdout.split('\n').at(-2), `# vfpool-vf0 (mac ${MAC}) is not on the bus: the failover primary of the virtio-net NIC with mac ${MAC}, ` +
    "which QEMU adds only once the guest's virtio-net driver acks failover (a guest with no OS or driver yet never shows it)");
  const json = await cli(['guest-devices', 'vm1', '--json'], w.cliEnv);
  t.same(JSON.parse(json.stdout).map((d: { id: string }) => d.id), ['net0', 'vfpool-rp0'], '--json: the devices QEMU shows, as before');
  w.qemu.devices.set('vfpool-vf0', { driver: 'e1000e', mac: MAC, behind: 'vfpool-rp0' });
  t.notMatch((await cli(['guest-devices', 'vm1'], w.cliEnv)).stdout, /is not on the bus/, 'once QEMU shows it, nothing more is said');
});

t.test('connectQmp: commands and events over the socket; qemuArgvBySocket finds its QEMU or says none runs', async (t) => {
  const w = await runningGuest(t);
  const socket = domainQmpSocketPath(w.settings.stateDir, 'vm1');
  const q = await connectQmp(socket, 5000);
  t.teardown(() => q.close());
  const waiter = q.listen('DEVICE_DELETED', (d) => d.device === 'vfpool-vf0', 5000);
  await q.execute('device_del', { id: 'vfpool-vf0' });
  t.match(await waiter.promise, { event: 'DEVICE_DELETED', data: { device: 'vfpool-vf0' } });
  t.match(qemuArgvBySocket(socket, w.cliEnv.VFPOOL_PROC), ['-name', 'guest=vm1,debug-threads=on']);
  t.throws(() => qemuArgvBySocket(join(w.dir, 'other.sock'), w.cliEnv.VFPOOL_PROC), { message: /no running QEMU has vfpool's QMP socket .*other\.sock on its command line/ });
});

t.test('guest-devices: the PCI devices QEMU shows, with MACs; one behind a root port not numbered yet', async (t) => {
  const w = await runningGuest(t);
  const r = await cli(['guest-devices', 'vm1'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.stdout, [
    "# the PCI devices QEMU shows domain 'vm1' (bus:slot.function  vendor:device  id  mac)",
    '00:01.0  8086:10d3  net0                   52:54:00:aa:bb:01',
    '00:03.0  8086:000c  vfpool-rp0',
    'vfpool-vf0             e1000e behind vfpool-rp0 (bus not numbered yet: the firmware has not run)  52:54:00:aa:00:01',
  ].join('\n') + '\n');
  const json = await cli(['guest-devices', 'vm1', '--json'], w.cliEnv);
  t.match(JSON.parse(json.stdout), [{ id: 'net0', address: '00:01.0', mac: '52:54:00:aa:bb:01' }, { id: 'vfpool-rp0', mac: null, class: 'PCI bridge' }, { id: 'vfpool-vf0', mac: MAC }]);
  // A QEMU a guest broke out of answers what it likes: nothing of it reaches root's terminal raw.
  w.qemu.devices.set('evil\x1b]0;owned\x07', { driver: 'e1000e\x1b[2J', mac: '52:54:00:aa:bb:02\r\x1b[1A', slot: 5 });
  w.qemu.devices.set('late\x1b[31m', { driver: 'e1000e\x1b[2J', behind: 'vfpool-rp0' });
  const hostile = await cli(['guest-devices', 'vm1'], w.cliEnv);
  t.equal(hostile.exitCode, 0, hostile.stderr);
  t.notMatch(hostile.stdout, /[\x00-\x09\x0b-\x1f\x7f]/, 'no control character but the newlines');
  t.match(hostile.stdout, /\n00:05\.0  8086:10d3  evil\\x1b\]0;owned\\x07 +52:54:00:aa:bb:02\\r\\x1b\[1A\n/);
  t.match(hostile.stdout, /\nlate\\x1b\[31m +e1000e\\x1b\[2J behind vfpool-rp0 /);
  w.qemu.devices.delete('evil\x1b]0;owned\x07');
  w.qemu.devices.delete('late\x1b[31m');
  await w.qemu.close();
  const gone = await cli(['guest-devices', 'vm1'], w.cliEnv);
  t.equal(gone.exitCode, 1);
  t.match(gone.stderr, /^vfpool: domain 'vm1': no QEMU answers on vfpool's QMP socket: cannot connect to QMP socket .*vm1\/qmp\.sock: ENOENT \(is QEMU running\?\): start it through vfpool-qemu/);
  const bad = await cli(['guest-devices', '../x'], w.cliEnv);
  t.equal(bad.exitCode, 2);
  t.notOk(existsSync(join(w.dir, 'x')));
});
