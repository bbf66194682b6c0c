import t, { type Test } from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileRecordStore, newRecord } from '../../src/state/migration-record.js';
import { makeSimEnv, type SimEnv } from '../helpers/env.js';
import { runCliInProcess as cli, type CliResult } from '../helpers/cli-in-process.js';
import { treeText } from '../helpers/file-tree.js';
import { fakeVirsh } from '../helpers/fake-virsh.js';
import type { FakeQemu } from '../helpers/fake-qemu.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { held, incomingGuest, MAC, POOL, runningGuest } from '../helpers/migrate-world.js';

/**
 * `--dry-run` on the migration's write stages (prepare, perform, confirm, `migrate DOMAIN
 * URI`): each makes every check the real run makes, so it refuses what the real run refuses with
 * the same exit code and line, says what it would do, and changes nothing: every file of the
 * host (state directory, simulated host, configuration, history) byte for byte as it was, and
 * QEMU asked only what reads. And `vfpool migrate DOMAIN URI` on a host without a virsh it can
 * start: one line, exit 1, before the VF leaves the guest.
 */

// The QMP commands that only read; a dry run sends QEMU nothing else.
const READ_ONLY_QMP = new Set(['qmp_capabilities', 'qom-list', 'qom-get', 'query-status', 'query-pci', 'x-query-virtio-status']);
const changesSentTo = (qemu: FakeQemu, from = 0) => qemu.received.slice(from).map((c) => c.execute).filter((c) => !READ_ONLY_QMP.has(c));

/** `vfpool ARGV`, and a check that every file under `dir` (the host: state, sim host file, config, history) is as it was. */
async function unchanged(t: Test, dir: string, argv: string[], env: Record<string, string>, stdin?: string): Promise<CliResult> {
  const before = treeText(dir);
  const r = await cli(argv, env, stdin);
  t.same(treeText(dir), before, `${argv.join(' ')}: every file of the host as it was`);
  return r;
}

/** The dry run and then the real run of a refused command: the same exit code and line, and nothing on stdout. */
async function refusedAlike(t: Test, w: SimEnv, argv: string[], env: Record<string, string>, code: number, line: RegExp, stdin?: string): Promise<void> {
  const dry = await unchanged(t, w.dir, [...argv, '--dry-run'], env, stdin);
  const real = await cli(argv, env, stdin);
  t.same([dry.exitCode, dry.stdout], [code, ''], `${argv.join(' ')} --dry-run: exit ${code} (${dry.stderr.trim()})`);
  t.equal(dry.stderr, real.stderr, `${argv.join(' ')}: the dry run refuses with the real run's line`);
  t.equal(real.exitCode, code, `${argv.join(' ')}: the real run's exit code`);
  t.match(dry.stderr, line);
}

const description = (vf: Record<string, unknown> = {}) => JSON.stringify({
  version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
  vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: MAC, failoverStandbyMac: null, guestAddress: null, settings: { vlan: 12 }, ...vf }],
});

async function destination(t: Test, numVfs = 2): Promise<SimEnv> {
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs, address: '0000:5e:00.0' }] });
  await dst.sim.writeNumVfs('eth1' as never, numVfs);
  await dst.addPool('p', POOL);
  return dst;
}

t.test('migrate prepare --dry-run: the VF each of the domain\'s VFs would get, with its MAC and settings; nothing reserved, set or written', async (t) => {
  const dst = await destination(t);
  const argv = ['migrate', 'prepare', '--description', '-'];
  const dry = await unchanged(t, dst.dir, [...argv, '--dry-run'], dst.env, description());
  t.same([dry.exitCode, dry.stderr], [0, '']);
  const vf = /1\. vfpool-vf0: reserve VF (0000:5e:[0-9a-f:.]+) \(eth1 VF 0\) of pool p, mac 52:54:00:aa:00:01, vlan 12\n/.exec(dry.stdout)?.[1];
  t.match(dry.stdout, /^plan for migrate prepare vm1 \(--dry-run, nothing changed\):\n  1\. vfpool-vf0: reserve VF \S+ \(eth1 VF 0\) of pool p, mac 52:54:00:aa:00:01, vlan 12\n(  [2-9]\. [^\n]+\n)+  \d+\. write the plan of 'vm1' for the incoming QEMU's wrapper\n$/);
  t.match(dry.stdout, /  [2-9]\. eth1 VF 0 \(0000:5e:[^)]+\): set VLAN 12 qos 0\n/, "the VF's configuration steps, as `vfpool prepare --dry-run` shows them");
  const json = await unchanged(t, dst.dir, [...argv, '--dry-run', '--json'], dst.env, description());
  t.equal(json.stdout.trim().split('\n').length, 1, 'one JSON document');
  t.match(JSON.parse(json.stdout), { domain: 'vm1', stage: 'prepared', dryRun: true, vfs: [{ id: 'vfpool-vf0', pool: 'p', vfAddr: vf, pf: 'eth1', vfIndex: 0, mac: MAC, settings: { vlan: 12 }, reserved: 'new' }], steps: [/^vfpool-vf0: reserve/] });
  t.same(held(dst), [], 'nothing reserved');

  const real = await cli(argv, dst.env, description());
  t.equal(real.exitCode, 0, real.stderr);
  t.match(held(dst), [{ vfAddr: vf, mac: MAC, vlan: 12 }], 'the real run reserves the VF the dry run named');
  const rerun = await unchanged(t, dst.dir, [...argv, '--dry-run'], dst.env, description());
  t.match(rerun.stdout, new RegExp(`1\\. vfpool-vf0: keep VF ${vf!.replace(/\./g, '\\.')} \\(eth1 VF 0\\), reserved for 'vm1' by an earlier prepare of this migration\\n`), 'a re-run keeps what the first reserved');
});

t.test('migrate prepare --dry-run refuses what prepare refuses, with its exit code and line, and journals nothing', async (t) => {
  const dst = await destination(t, 1);
  const other = join(dst.dir, 'other.xml');
  writeFileSync(other, domainXml('prepare', { name: 'other', vfpool: "<vfpool:hostdev pool='p' mac='52:54:00:aa:00:09'/>" }));
  t.equal((await cli(['prepare', '--xml', other], dst.env)).exitCode, 0, 'the only VF taken');
  const argv = ['migrate', 'prepare', '--description', '-'];
  await refusedAlike(t, dst, argv, dst.env, 3, /^vfpool: domain 'vm1'.*\n$/, description());
  await refusedAlike(t, dst, argv, dst.env, 2, /unknown pool 'nope'/, description({ pool: 'nope' }));
  await refusedAlike(t, dst, argv, dst.env, 2, /vfs\[0\]\.settings\.vlan: vlan='5000'/, description({ settings: { vlan: 5000 } }));
  t.equal((await cli(['release', 'other'], dst.env)).exitCode, 0);
  // This host is the source of an unfinished migration of vm1.
  await fileRecordStore(dst.settings.stateDir).write(newRecord('vm1', 'source', []));
  await refusedAlike(t, dst, argv, dst.env, 3, /a migration record says this host is the source of an unfinished migration/, description());
});

t.test('migrate perform --dry-run: what it would unplug and where it would migrate; QEMU only asked', async (t) => {
  const w = await runningGuest(t);
  const dry = await unchanged(t, w.dir, ['migrate', 'perform', 'vm1', '--dry-run'], w.cliEnv);
  t.same(dry, {
    exitCode: 0, stderr: '',
    stdout: "plan for migrate perform vm1 (--dry-run, nothing changed):\n  1. device_del vfpool-vf0 on the source QEMU, wait for DEVICE_DELETED (30000 ms)\n  2. source of 'vm1' ready to migrate\n",
  });
  const to = await unchanged(t, w.dir, ['migrate', 'perform', 'vm1', '--to', 'tcp:127.0.0.1:4444', '--timeout', '60', '--dry-run', '--json'], w.cliEnv);
  t.equal(to.exitCode, 0, to.stderr);
  t.equal(to.stdout.trim().split('\n').length, 1, 'one JSON document');
  t.match(JSON.parse(to.stdout), {
    domain: 'vm1', stage: 'performed', dryRun: true, unplug: ['vfpool-vf0'], qemuUnplugs: [],
    migration: { to: 'tcp:127.0.0.1:4444', timeoutSeconds: 60 },
    steps: [/^device_del vfpool-vf0/, /ready to migrate/, /^migrate to tcp:127\.0\.0\.1:4444 over QMP and wait until it completed \(up to 60 s\); if it fails, plug the VFs back$/],
  });
  t.ok(w.qemu.devices.has('vfpool-vf0'), 'the VF is still in the guest');
  t.same(changesSentTo(w.qemu), [], 'only read-only QMP commands sent');
  t.equal(fileRecordStore(w.settings.stateDir).read('vm1'), null, 'no migration record');

  await refusedAlike(t, w, ['migrate', 'perform', 'vm1', '--to', 'exec:touch /tmp/x'], w.cliEnv, 2, /--to 'exec:touch \/tmp\/x' is not a migration URI vfpool accepts/);
  t.same(changesSentTo(w.qemu), [], 'the dry run of a refused --to: nothing sent');
});

t.test('migrate perform --dry-run refuses what perform refuses: a destination record (exit 3), no QEMU (exit 1)', async (t) => {
  const w = await runningGuest(t);
  await fileRecordStore(w.settings.stateDir).write(newRecord('vm1', 'destination', []));
  await refusedAlike(t, w, ['migrate', 'perform', 'vm1'], w.cliEnv, 3, /this host is the destination of an unfinished migration/);
  await fileRecordStore(w.settings.stateDir).remove('vm1');
  await w.qemu.close(); // QEMU exits and removes its socket
  await refusedAlike(t, w, ['migrate', 'perform', 'vm1'], w.cliEnv, 1, /QMP socket .*vm1\/qmp\.sock/);
});

t.test('migrate confirm --dry-run on the source: what it would free or plug back, from the record and the state', async (t) => {
  const w = await runningGuest(t);
  t.equal((await cli(['migrate', 'perform', 'vm1'], w.cliEnv)).exitCode, 0);
  const sent = w.qemu.received.length;
  const ok = await unchanged(t, w.dir, ['migrate', 'confirm', 'vm1', '--role', 'source', '--dry-run'], w.cliEnv);
  t.equal(ok.exitCode, 0, ok.stderr);
  t.match(ok.stdout, /^plan for migrate confirm vm1 --role source \(--dry-run, nothing changed\):\n  1\. restore and free the VFs of 'vm1' on this host \(migrated\)\n  2\. domain 'vm1', pool 'p', VF 0000:3b:[^ ]+ \(eth1 VF 0\): restore \(\d+ step\(s\)\) and free\n(  \d+\. [^\n]+\n)+$/);
  const failed = await unchanged(t, w.dir, ['migrate', 'confirm', 'vm1', '--role', 'source', '--failed', '--dry-run', '--json'], w.cliEnv);
  t.equal(failed.exitCode, 0, failed.stderr);
  t.same(JSON.parse(failed.stdout), { domain: 'vm1', stage: 'confirmed-failure', dryRun: true, steps: ['device_add vfpool-vf0 (e1000e, mac 52:54:00:aa:00:01) on bus vfpool-rp0', "'vm1' stays on the source"] });
  t.same(changesSentTo(w.qemu, sent), [], 'nothing plugged');
  t.notOk(w.qemu.devices.has('vfpool-vf0'), 'the VF stays out of the guest');
  t.equal(held(w).length, 1, 'the VF stays held');
  await refusedAlike(t, w, ['migrate', 'confirm', 'vm1', '--role', 'destination'], w.cliEnv, 3, /this host is the source of the migration, not the destination/);
});

t.test('migrate confirm --dry-run with no migration recorded: nothing to do', async (t) => {
  const w = await runningGuest(t);
  const r = await unchanged(t, w.dir, ['migrate', 'confirm', 'vm1', '--role', 'source', '--dry-run'], w.cliEnv);
  t.same(r, { exitCode: 0, stderr: '', stdout: "plan for migrate confirm vm1 --role source (--dry-run, nothing changed):\n  1. nothing to do: no migration of 'vm1' is recorded on this host (its VFs, if any, are left as they are)\n" });
  const json = await unchanged(t, w.dir, ['migrate', 'confirm', 'vm1', '--role', 'destination', '--failed', '--dry-run', '--json'], w.cliEnv);
  t.same(JSON.parse(json.stdout), { domain: 'vm1', stage: 'nothing-to-do', dryRun: true, steps: [] });
});

t.test('migrate confirm --dry-run on the destination: refused while the migration has not arrived, then what it would plug; --failed what it would free', async (t) => {
  const { dst, qemu, env } = await incomingGuest(t);
  const sent = qemu.received.length;
  qemu.statuses = ['inmigrate'];
  await refusedAlike(t, dst, ['migrate', 'confirm', 'vm1', '--role', 'destination'], env, 3, /the migration has not arrived yet \(its QEMU is in status inmigrate\)/);
  const waiting = await unchanged(t, dst.dir, ['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '600', '--dry-run'], env);
  t.equal(waiting.exitCode, 0, waiting.stderr);
  t.match(waiting.stdout, /^plan for migrate confirm vm1 --role destination \(--dry-run, nothing changed\):\n  1\. wait up to 600 s for the incoming migration to end \(its QEMU is in status inmigrate now\), then, once it arrived:\n  2\. device_add vfpool-vf0 \(e1000e, mac 52:54:00:aa:00:01\) on bus vfpool-rp0\n  3\. 'vm1' arrived\n  4\. if it fails instead: restore and free the VFs of 'vm1' on this host \(migration-failed\)\n$/, 'said at once, without waiting');
  await refusedAlike(t, dst, ['migrate', 'confirm', 'vm1', '--role', 'source', '--wait-incoming', '5'], env, 2, /--wait-incoming waits for an incoming QEMU, so it goes with --role destination/);
  qemu.statuses = ['running'];
  const arrived = await unchanged(t, dst.dir, ['migrate', 'confirm', 'vm1', '--role', 'destination', '--dry-run'], env);
  t.equal(arrived.stdout, "plan for migrate confirm vm1 --role destination (--dry-run, nothing changed):\n  1. device_add vfpool-vf0 (e1000e, mac 52:54:00:aa:00:01) on bus vfpool-rp0\n  2. 'vm1' arrived\n");
  const failed = await unchanged(t, dst.dir, ['migrate', 'confirm', 'vm1', '--role', 'destination', '--failed', '--dry-run'], env);
  t.match(failed.stdout, /^plan for migrate confirm vm1 --role destination --failed \(--dry-run, nothing changed\):\n  1\. restore and free the VFs of 'vm1' on this host \(migration-failed\)\n  2\. domain 'vm1', pool 'p', VF 0000:5e:[^ ]+ \(eth1 VF 0\): restore \(\d+ step\(s\)\) and free\n/);
  t.same(changesSentTo(qemu, sent), [], 'nothing plugged into the incoming QEMU');
  t.equal(held(dst).length, 1, 'the reservation kept');
});

t.test('migrate DOMAIN URI --dry-run: the steps and the virsh command line, virsh only asked its version', async (t) => {
  const w = await runningGuest(t);
  const bin = t.testdir({}); // not under the host's directory: the fake virsh logs its calls there
  const env = { ...w.cliEnv, PATH: fakeVirsh(bin, { destPeripherals: ['vfpool-vf0'] }) };
  const argv = ['migrate', 'vm1', 'qemu+tcp://dest.example/system', '--dry-run'];
  const r = await unchanged(t, w.dir, [...argv, '--', '--persistent'], env);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, new RegExp([
    '^plan for migrate vm1 qemu\\+tcp://dest\\.example/system \\(--dry-run, nothing changed\\):',
    '  1\\. device_del vfpool-vf0 on the source QEMU, wait for DEVICE_DELETED \\(30000 ms\\)',
    "  2\\. source of 'vm1' ready to migrate",
    '  3\\. run virsh migrate --live --persistent vm1 qemu\\+tcp://dest\\.example/system \\(up to 300 s\\); if it fails, plug the VFs back',
    "  4\\. restore and free the VFs of 'vm1' on this host \\(migrated\\)",
    "  5\\. domain 'vm1', pool 'p', VF [^\\n]+: restore \\(\\d+ step\\(s\\)\\) and free",
    '(  \\d+\\. [^\\n]+\\n)*  \\d+\\. check through qemu\\+tcp://dest\\.example/system \\(virsh qemu-monitor-command\\) that vfpool-vf0 is plugged there, up to 60 s\\n$',
  ].join('\n')));
  const json = await unchanged(t, w.dir, [...argv, '--json'], env);
  t.equal(json.stdout.trim().split('\n').length, 1, 'one JSON document');
  t.match(JSON.parse(json.stdout), { domain: 'vm1', to: 'qemu+tcp://dest.example/system', dryRun: true, virsh: ['virsh', 'migrate', '--live', 'vm1', 'qemu+tcp://dest.example/system'], steps: [/^device_del/] });
  const asked = '--version\n-c qemu+tcp://dest.example/system capabilities\ncapabilities\n';
  t.equal(readFileSync(join(bin, 'virsh.log'), 'utf8'), asked + asked, 'virsh was only asked its version and both hosts\' capabilities');
  t.same(changesSentTo(w.qemu), [], 'only read-only QMP commands sent');
  await refusedAlike(t, w, ['migrate', 'vm1', 'not-a-uri'], env, 2, /'not-a-uri' is not a libvirt URI/);
  await refusedAlike(t, w, ['migrate', 'vm1', 'qemu+tcp://dest.example/system'], { ...w.cliEnv, PATH: t.testdir({}) }, 1, /^vfpool: vfpool migrate vm1: running virsh failed: [^\n]*ENOENT[^\n]*libvirt-clients/);
  t.same(changesSentTo(w.qemu), [], 'no virsh: nothing sent, by the dry run nor by the real run');
});

t.test('migrate begin changes nothing, so it has no --dry-run', async (t) => {
  const w = await runningGuest(t);
  const r = await unchanged(t, w.dir, ['migrate', 'begin', 'vm1'], w.cliEnv);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { domain: 'vm1' });
  const dry = await unchanged(t, w.dir, ['migrate', 'begin', 'vm1', '--dry-run'], w.cliEnv);
  t.same(dry, { exitCode: 2, stdout: '', stderr: 'vfpool: vfpool migrate begin: --dry-run: begin changes nothing (it prints what it read), so it has no dry run: run it without\n' });
  t.notOk(existsSync(join(w.settings.stateDir, 'migrate')), 'no migration record');
});
