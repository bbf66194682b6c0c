import t from 'tap';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { reconcile } from '../../src/pool/reconcile.js';
import { fileRecordStore, newRecord } from '../../src/state/migration-record.js';
import { makeSimEnv } from '../helpers/env.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

/** `vfpool reconcile` and the migration records left by a migration killed half-way. */
t.test('a record with no live QEMU and no allocation is dropped; a source mid-perform whose QEMU runs is kept and reported', async (t) => {
  const w = makeSimEnv(t);
  const runDir = join(w.dir, 'libvirt-run');
  mkdirSync(runDir, { recursive: true });
  const records = fileRecordStore(w.settings.stateDir);
  const vf = { id: 'vfpool-vf0', kind: 'plain' as const, mac: '52:54:00:9a:00:01', unplugged: false, unplugMode: null, plugged: false };
  await records.write({ ...newRecord('gone', 'destination', [vf]), stage: 'prepared', reserved: true });
  // vf1: perform was killed between its device_del and the record of it (the intent alone).
  const mid = newRecord('moving', 'source', [{ ...vf, unplugged: true, unplugMode: 'device_del' }, { ...vf, id: 'vfpool-vf1', unplugMode: 'device_del' }]);
  await records.write({ ...mid, stage: 'performed' });
  w.settings.procRoot = join(w.dir, 'proc');
  fakeLibvirtQemu({ libvirtRunDir: runDir, procRoot: w.settings.procRoot }, 'moving'); // its QEMU "runs" (libvirt's pid file names it)
  t.equal(statSync(join(w.settings.stateDir, 'migrate', 'gone.json')).mode & 0o777, 0o600, 'records are 0600');

  const dry = await reconcile(w.ctx, { libvirtRunDir: runDir, graceMs: 0, dryRun: true });
  t.same(dry.migrationsDropped.map((m) => m.domain), ['gone']);
  t.ok(existsSync(join(w.settings.stateDir, 'migrate', 'gone.json')), '--dry-run removes nothing');

  const r = await reconcile(w.ctx, { libvirtRunDir: runDir, graceMs: 0 });
  t.same(r.migrationsDropped, [{ domain: 'gone', role: 'destination', stage: 'prepared', reason: 'no QEMU runs and the domain holds no VF here' }]);
  t.equal(r.migrationsKept.length, 1);
  t.match(r.migrationsKept[0], { domain: 'moving', role: 'source', stage: 'performed', reason: /its QEMU runs with vfpool-vf0, vfpool-vf1 unplugged by an unfinished migration: `vfpool migrate confirm moving --role source --failed` plugs them back/ });
  t.equal(records.read('gone'), null, 'dropped');
  t.equal(records.read('moving')?.stage, 'performed', 'kept as it was');

  // Once that QEMU is gone too (no pid file), the record describes nothing left: dropped.
  writeFileSync(join(runDir, 'moving.pid'), '');
  const again = await reconcile(w.ctx, { libvirtRunDir: runDir, graceMs: 0 });
  t.same(again.migrationsDropped.map((m) => m.domain), ['moving']);
});

t.test('the record store: update is a locked read-modify-write; null removes; a broken record is one line', async (t) => {
  const w = makeSimEnv(t);
  const records = fileRecordStore(w.settings.stateDir);
  const r0 = newRecord('vm1', 'source', []);
  await Promise.all(Array.from({ length: 8 }, () => records.update('vm1', (cur) => ({ ...(cur ?? r0), vfs: [...(cur ?? r0).vfs, { id: `vfpool-vf${(cur ?? r0).vfs.length}`, kind: 'plain', mac: null, unplugged: false, unplugMode: null, plugged: false }] }))));
  t.equal(records.read('vm1')!.vfs.length, 8, 'eight concurrent updates, none lost');
  t.same(records.list(), ['vm1']);
  await records.update('vm1', () => null);
  t.equal(records.read('vm1'), null);
  writeFileSync(join(w.settings.stateDir, 'migrate', 'vm2.json'), '{"version":2}');
  t.throws(() => records.read('vm2'), { name: 'BadInputError', message: /vm2\.json: has version 2, this vfpool reads version 1/ });
  // The advice must not be a confirm: it reads the same record and stops at the same line.
  const r = await runCliInProcess(['migrate', 'confirm', 'vm2', '--role', 'destination', '--failed'], w.env);
  t.equal(r.exitCode, 2);
  t.match(r.stderr, /^vfpool: .*vm2\.json: has version 2, this vfpool reads version 1: this is vfpool's record of a migration in progress, which `vfpool migrate confirm` needs: restore it, or remove it and finish by hand/);
  t.notMatch(r.stderr, /finish the migration with `vfpool migrate confirm/);
});
