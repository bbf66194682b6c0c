import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { domainQmpSocketPath, readDomainPlan } from '../../src/state/domain-plan.js';
import { fileRecordStore } from '../../src/state/migration-record.js';
import { runCliInProcess as cli } from '../helpers/cli-in-process.js';
import { vfConfigs } from '../helpers/crash-common.js';
import { held, incomingGuest, MAC, runningGuest } from '../helpers/migrate-world.js';

/**
 * What `vfpool migrate` must refuse or leave alone, on hosts with a running QEMU (an in-process
 * QMP server, test/helpers/migrate-world.ts): a confirm with no migration recorded, a destination
 * confirm before the migration arrived, a `--to` that is not a migration transport; and what it
 * must print and do: one JSON document with --json, advice that works after a failed migration
 * or a crash (the source's QEMU gone: its VFs freed without QMP).
 */

const record = (stateDir: string) => fileRecordStore(stateDir).read('vm1');

t.test('confirm with no migration recorded leaves a running guest and its VF alone, whatever the role and outcome', async (t) => {
  const w = await runningGuest(t);
  const before = vfConfigs(w);
  const socket = domainQmpSocketPath(w.settings.stateDir, 'vm1');
  for (const args of [['--role', 'source'], ['--role', 'destination', '--failed'], ['--role', 'source', '--failed'], ['--role', 'destination']]) {
    const r = await cli(['migrate', 'confirm', 'vm1', ...args, '--json'], w.cliEnv);
    t.equal(r.exitCode, 0, `${args.join(' ')}: ${r.stderr}`);
    t.same(JSON.parse(r.stdout), { domain: 'vm1', stage: 'nothing-to-do', steps: [] }, `${args.join(' ')}: nothing to do`);
    t.equal(held(w).length, 1, `${args.join(' ')}: vm1 still holds its VF`);
    t.same(vfConfigs(w), before, `${args.join(' ')}: the VF configured as the guest got it`);
    t.not(readDomainPlan(w.settings.stateDir, 'vm1'), null, `${args.join(' ')}: the plan is kept`);
    t.ok(existsSync(socket), `${args.join(' ')}: QEMU's QMP socket is kept`);
    t.ok(w.qemu.devices.has('vfpool-vf0'), `${args.join(' ')}: the VF stays in the guest`);
  }
  t.same(w.qemu.received.filter((c) => c.execute === 'device_add' || c.execute === 'device_del'), [], 'no device plugged or unplugged');
});

t.test('a confirm run again after it finished is a no-op, exit 0', async (t) => {
  const w = await runningGuest(t);
  t.equal((await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444'], w.cliEnv)).exitCode, 0);
  t.equal((await cli(['migrate', 'confirm', 'vm1', '--role', 'source'], w.cliEnv)).exitCode, 0);
  t.same(held(w), [], 'freed by the first confirm');
  const again = await cli(['migrate', 'confirm', 'vm1', '--role', 'source'], w.cliEnv);
  t.same([again.exitCode, again.stdout, again.stderr], [0, 'vm1: nothing-to-do\n', '']);
});

t.test('confirm --role destination while the incoming QEMU still waits for the migration: exit 3, one line, nothing changed', async (t) => {
  const { dst, qemu, env } = await incomingGuest(t);
  qemu.statuses = ['inmigrate'];
  const recorded = record(dst.settings.stateDir);
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination'], env);
  t.equal(r.exitCode, 3, r.stderr);
  t.equal(r.stderr, "vfpool: domain 'vm1': the migration has not arrived yet (its QEMU is in status inmigrate): run `vfpool migrate confirm vm1 --role destination` once it completed, or add --wait-incoming SECONDS to wait for it\n");
  t.equal(r.stdout, '');
  t.same(qemu.received.filter((c) => c.execute === 'device_add'), [], 'nothing plugged into the incoming QEMU');
  t.same(record(dst.settings.stateDir), recorded, 'the migration record as it was');
  t.match(held(dst), [{ mac: MAC }], 'the reservation kept');
  qemu.statuses = ['running'];
  const arrived = await cli(['migrate', 'confirm', 'vm1', '--role', 'destination'], env);
  t.equal(arrived.exitCode, 0, arrived.stderr);
  t.ok(qemu.devices.has('vfpool-vf0'), 'once it arrived, the VF is plugged');
});

t.test('perform --to accepts only the transports vfpool documents: anything else is exit 2 before the VF leaves the guest', async (t) => {
  const w = await runningGuest(t);
  for (const to of ['exec:touch /tmp/vfpool-pwned', 'fd:3', 'file:/tmp/x', 'rdma:127.0.0.1:4444', 'tcp:127.0.0.1', 'tcp:127.0.0.1:0', 'tcp:127.0.0.1:65536', 'tcp:a b:4444', 'tcp:h:4444,ipv4=on', 'unix:relative.sock', 'unix:/x,y', '']) {
    const r = await cli(['migrate', 'perform', 'vm1', '--to', to], w.cliEnv);
    t.equal(r.exitCode, 2, `${JSON.stringify(to)}: ${r.stderr}`);
    t.match(r.stderr, /^vfpool: vfpool migrate perform vm1: --to '.*' is not a migration URI vfpool accepts: give tcp:HOST:PORT or unix:\/PATH\n$/, JSON.stringify(to));
  }
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'the VF is still in the guest');
  t.same(w.qemu.received.filter((c) => ['device_del', 'migrate'].includes(c.execute)), [], 'neither device_del nor migrate sent');
  t.equal(record(w.settings.stateDir), null, 'no migration record');
  const ok = await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:[::1]:4444'], w.cliEnv);
  t.equal(ok.exitCode, 0, `an IPv6 address in brackets is a TCP URI: ${ok.stderr}`);
});

t.test('perform --to --json: stdout is one JSON document, the migration in it', async (t) => {
  const w = await runningGuest(t);
  const r = await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444', '--json'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  t.match(doc, { domain: 'vm1', stage: 'performed', steps: [/device_del vfpool-vf0/, /ready to migrate/], migration: { to: 'tcp:127.0.0.1:4444', ms: Number, unplugPrimary: [] } });
});

t.test('perform --to that fails: the VF plugged back, and the hint is a command that works (--json: still one document)', async (t) => {
  const w = await runningGuest(t);
  w.qemu.migrate = { status: 'failed', 'error-desc': 'Connection refused' };
  const r = await cli(['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444', '--json'], w.cliEnv);
  t.equal(r.exitCode, 1);
  t.equal(r.stderr, 'vfpool: migration to tcp:127.0.0.1:4444 failed: Connection refused: vm1 stays on this host with its VFs plugged back; on the destination, run `vfpool migrate confirm vm1 --role destination --failed`\n');
  t.match(JSON.parse(r.stdout), { domain: 'vm1', stage: 'confirmed-failure', migration: { to: 'tcp:127.0.0.1:4444', error: /Connection refused/ }, steps: [/device_del/, /ready to migrate/, /device_add vfpool-vf0/, /stays on the source/] });
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'plugged back');
});

t.test('the source QEMU gone after perform: reconcile advises a confirm that frees the VF without QMP', async (t) => {
  const w = await runningGuest(t);
  t.equal((await cli(['migrate', 'perform', 'vm1'], w.cliEnv)).exitCode, 0);
  await w.qemu.close(); // QEMU exits and removes its socket
  const rec = await cli(['reconcile', '--json'], w.cliEnv);
  t.equal(rec.exitCode, 0, rec.stderr);
  const kept = (JSON.parse(rec.stdout) as { migrationsKept: Array<{ domain: string; reason: string }> }).migrationsKept;
  t.equal(kept.length, 1, 'the record is kept: the domain still holds its VF');
  const advised = /`(vfpool migrate confirm [^`]+)`/.exec(kept[0]!.reason)?.[1];
  t.ok(advised, `reconcile names a command: ${kept[0]!.reason}`);
  const r = await cli(advised!.split(' ').slice(1), w.cliEnv);
  t.equal(r.exitCode, 0, `${advised}: ${r.stderr}`);
  t.same(held(w), [], 'the VF is restored and freed');
  t.equal(record(w.settings.stateDir), null, 'no migration record left');
  t.equal(readDomainPlan(w.settings.stateDir, 'vm1'), null, 'no plan left');
});

t.test('confirm --role source --failed with the source QEMU gone frees the VFs: there is no guest to plug them back into', async (t) => {
  const w = await runningGuest(t);
  t.equal((await cli(['migrate', 'perform', 'vm1'], w.cliEnv)).exitCode, 0);
  await w.qemu.close();
  const r = await cli(['migrate', 'confirm', 'vm1', '--role', 'source', '--failed'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /no QEMU of 'vm1' runs on this host: nothing to plug its VFs back into\nvm1: restore and free the VFs of 'vm1' on this host \(migration-failed\)\nvm1: confirmed-failure\n$/);
  t.same(held(w), [], 'freed');
  t.equal(record(w.settings.stateDir), null);
  t.notOk(existsSync(join(w.settings.stateDir, 'qemu', 'vm1', 'plan.json')), 'plan removed');
});
