import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConflictError, HostError, RollbackError, type VfpoolError } from '../../src/errors.js';
import { migrateBeginXml, describeForMigration, validateDescription } from '../../src/migrate/begin.js';
import { generatedDevices } from '../../src/qemu/running-devices.js';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { migrateOverQmp } from '../../src/migrate/failover.js';
import type { MigrationPool, MigrationQmp, MigrationRecordStore, PlanStore, QmpEvent, ReservedVf } from '../../src/migrate/ports.js';
import type { MigrationRecordV1 } from '../../src/state/migration-record.js';
import { confirmStage, performStage, prepareStage, type StageDeps } from '../../src/migrate/stages.js';
import { dryRunConfirm, dryRunPerform, dryRunPrepare } from '../../src/migrate/dry-run.js';
import { DEFAULT_TIMEOUTS, plugDevice } from '../../src/migrate/qmp-steps.js';
import type { DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress } from '../../src/types.js';

const MAC = '52:54:00:9a:00:01' as MacAddress;
const MAC2 = '52:54:00:9a:00:02' as MacAddress;
const BASE = ['-name', 'guest=vm1', '-machine', 'q35', '-nodefaults', '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,id=net0,netdev=n0,mac=' + MAC2];

function planOf(vfs: DomainPlanV1['vfs']): DomainPlanV1 {
  return { version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', vfs, sriovNics: [] };
}
const PLAIN = { id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC, failoverStandbyMac: null, guestAddress: null };
const PRIMARY = { id: 'vfpool-vf1', host: null, emulatedModel: 'e1000e', mac: MAC2, failoverStandbyMac: MAC2, guestAddress: null };

/** A QEMU as QMP shows it: /machine/peripheral, device_del/add with their events, migrate. */
class FakeQemu implements MigrationQmp {
  log: string[] = [];
  listeners: Array<{ event: string; match(d: Record<string, unknown>): boolean; resolve(e: QmpEvent): void; reject(e: Error): void }> = [];
  constructor(public devices: Set<string>, public opts: { ack?: boolean; standbyNegotiated?: boolean; migrate?: 'completed' | 'failed'; hidePrimaries?: boolean } = {}) {}
  emit(event: string, data: Record<string, unknown>) {
    for (const l of [...this.listeners]) if (l.event === event && l.match(data)) { this.listeners.splice(this.listeners.indexOf(l), 1); l.resolve({ event, data }); }
  }
  async execute(command: string, args: Record<string, unknown> = {}): Promise<unknown> {
    this.log.push(command + (args.id ? ` ${String(args.id)}` : ''));
    switch (command) {
      case 'qom-list': return [...this.devices].map((name) => ({ name, type: 'child<e1000e>' })).concat([{ name: 'type', type: 'string' }]);
      case 'device_del':
        if (!this.devices.has(String(args.id))) throw new HostError(`QMP DeviceNotFound: Device '${String(args.id)}' not found`);
        // Without a guest to ask, QEMU sends the event BEFORE its reply: a listener registered after the command misses it.
        if (this.opts.ack !== false) { this.devices.delete(String(args.id)); this.emit('DEVICE_DELETED', { device: args.id }); }
        return {};
      case 'device_add':
        // A failover primary before the guest acked STANDBY: QEMU accepts it and keeps it hidden.
        if (this.opts.hidePrimaries && args.failover_pair_id !== undefined) return {};
        this.devices.add(String(args.id));
        return {};
      case 'x-query-virtio-status': return { 'guest-features': { 'dev-features': this.opts.standbyNegotiated ? ['VIRTIO_NET_F_STANDBY: …'] : ['VIRTIO_NET_F_MAC: …'] } };
      case 'migrate':
        for (const id of [...this.devices]) if (id === 'vfpool-vf1') { this.devices.delete(id); this.emit('UNPLUG_PRIMARY', { 'device-id': id }); }
        return {};
      case 'query-migrate': return { status: this.opts.migrate ?? 'completed', 'error-desc': 'Connection refused' };
      default: throw new HostError(`QMP CommandNotFound: ${command}`);
    }
  }
  listen(event: string, match: (d: Record<string, unknown>) => boolean, timeoutMs: number) {
    let entry!: FakeQemu['listeners'][number];
    let timer: NodeJS.Timeout | undefined;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      entry = { event, match, resolve: (e) => { clearTimeout(timer); resolve(e); }, reject };
      this.listeners.push(entry);
      timer = setTimeout(() => reject(new HostError(`no ${event} event within ${timeoutMs} ms`)), timeoutMs);
    });
    promise.catch(() => {});
    return { promise, cancel: () => { clearTimeout(timer); this.listeners = this.listeners.filter((l) => l !== entry); } };
  }
}

function world(plan: DomainPlanV1 | null, qemu: FakeQemu, argv = BASE) {
  const plans = new Map<string, DomainPlanV1>(plan ? [[plan.domain, plan]] : []);
  const records = new Map<string, MigrationRecordV1>();
  const writes: string[] = [];
  const poolLog: string[] = [];
  let failPlanWrite = false;
  const pool: MigrationPool = {
    async reserve(domain, reqs) { poolLog.push(`reserve ${domain} ${reqs.map((r) => r.mac).join(',')}`); return reqs.map((r): ReservedVf => ({ id: r.id, host: null, emulatedModel: 'e1000e', mac: r.mac })); },
    async configure(domain) { poolLog.push(`configure ${domain}`); },
    async release(domain, reason) { poolLog.push(`release ${domain} ${reason}`); },
    async plan(_domain, reqs) {
      return reqs.map((r, i) => ({ id: r.id, pool: r.pool, vfAddr: `0000:5e:02.${i}` as never, pf: 'eth1', vfIndex: i, mac: r.mac, settings: {}, reserved: 'new' as const, steps: [], vf: { id: r.id, host: null, emulatedModel: 'e1000e', mac: r.mac } }));
    },
    async planRelease(domain) { return [`restore and free what ${domain} holds`]; },
  };
  const planStore: PlanStore = {
    read: (d) => plans.get(d) ?? null,
    write: async (p) => { if (failPlanWrite) throw new HostError('cannot write plan: ENOSPC'); plans.set(p.domain, p); },
    remove: (d) => { plans.delete(d); },
  };
  const recordStore: MigrationRecordStore = {
    read: (d) => structuredClone(records.get(d) ?? null),
    write: async (r) => { writes.push(`${r.stage} ${r.vfs.map((v) => `${v.id}:${v.unplugged ? 'u' : ''}${v.plugged ? 'p' : ''}`).join(' ')}`); records.set(r.domain, structuredClone(r)); },
    update: async (d, fn) => { const n = fn(structuredClone(records.get(d) ?? null)); if (n === null) records.delete(d); else if (n) records.set(d, structuredClone(n)); return n ?? null; },
    remove: async (d) => { records.delete(d); },
    list: () => [...records.keys()],
  };
  const deps: StageDeps = { plans: planStore, records: recordStore, pool, qmp: qemu, // What the wrapper exec'd: the given command line with vfpool's additions (its root ports, QMP monitor).
    readArgv: (d) => planQemuArgs(plans.get(d)!, parseQemuArgv(argv), { qmpSocketPath: '/run/vfpool/qemu/vm1/qmp.sock' }).argv, timeouts: { command: 1000, unplug: 200 } };
  return { deps, plans, records, writes, poolLog, failPlanWrite: () => { failPlanWrite = true; } };
}

t.test('begin (destination hook): source-only devices mapped to their pool or refused before anything is reserved', async (t) => {
  const sample = readFileSync(join(process.cwd(), 'test/migrate/fixtures/nettest-migrate-begin.xml'), 'utf8');
  const meta = (inner: string) => sample.replace('<resource>', `<metadata><vfpool:domain xmlns:vfpool="https://vfpool.dev/xmlns/1">${inner}</vfpool:domain></metadata>\n  <resource>`);
  const plain = migrateBeginXml(sample, () => null);
  t.equal(plain.xml, sample, 'no vfpool requests: the XML passes untouched');
  const pooled = meta(`<vfpool:hostdev pool='p1' mac='${MAC}'/>`);
  t.equal(migrateBeginXml(pooled, () => null).xml, pooled, 'a pool request passes untouched');
  const withAddr = meta(`<vfpool:hostdev pool="p1" address="0000:3b:10.2" mac="${MAC}" vlan="100"/>`);
  const r = migrateBeginXml(withAddr, () => null);
  t.notMatch(r.xml, /address="0000:3b/, 'the source PCI address is gone');
  t.match(r.xml, /<vfpool:hostdev pool=.p1. mac="52:54:00:9a:00:01" vlan="100"\/>/, 'pool, MAC and VLAN kept');
  t.match(r.mapped[0], /address='0000:3b:10.2' \(source host\) replaced by pool='p1'/);
  const netdevOnly = meta(`<vfpool:hostdev netdev='eth3' mac='${MAC}'/>`);
  const mapped = migrateBeginXml(netdevOnly, (h) => (h.netdev === 'eth3' ? { pool: 'p9' } : null));
  t.match(mapped.xml, /<vfpool:hostdev mac='52:54:00:9a:00:01' pool='p9'\/>/, 'mapped through the mapper');
  t.match(mapped.xml, /<address type='pci' domain='0x0000' bus='0x00' slot='0x02'/, "libvirt's own device addresses are left alone");
  try {
    migrateBeginXml(netdevOnly, () => null);
    t.fail('refusal expected');
  } catch (err) {
    const e = err as VfpoolError;
    t.equal(e.exitCode, 2, 'bad input: exit 2');
    t.match(e.toLine(), /vfpool:hostdev #1: names netdev='eth3', a device of the source host, which the destination cannot hold: give the request a pool/);
  }
});

t.test("begin (destination hook): another application's <hostdev> in <metadata> is neither counted nor edited", async (t) => {
  // Counting every hostdev tag in <metadata> edited the other application's element and left
  // vfpool's naming the source's eth3, which on the destination is another device.
  const sample = readFileSync(join(process.cwd(), 'test/migrate/fixtures/nettest-migrate-begin.xml'), 'utf8');
  const other = `<app:inventory xmlns:app="https://example.com/app"><app:hostdev slot='3'/></app:inventory>`;
  for (const [before, after] of [[other, ''], ['', other]]) {
    const xml = sample.replace('<resource>', `<metadata>${before}<vfpool:domain xmlns:vfpool="https://vfpool.dev/xmlns/1"><vfpool:hostdev pool='p1' netdev='eth3' mac='${MAC}'/></vfpool:domain>${after}</metadata>\n  <resource>`);
    const r = migrateBeginXml(xml, () => null);
    t.equal(r.xml, xml.replace(`<vfpool:hostdev pool='p1' netdev='eth3'`, `<vfpool:hostdev pool='p1'`), 'only vfpool\'s request changed');
  }
  // A default namespace (libvirt writes it so when the author used no prefix).
  const bare = sample.replace('<resource>', `<metadata>${other}<domain xmlns="https://vfpool.dev/xmlns/1"><hostdev netdev='eth3' pool='p1' mac='${MAC}'/></domain></metadata>\n  <resource>`);
  t.equal(migrateBeginXml(bare, () => null).xml, bare.replace(`<hostdev netdev='eth3' pool='p1'`, `<hostdev pool='p1'`));
});

t.test('begin (source): the description carries requests, never host addresses', async (t) => {
  const plan = planOf([{ ...PLAIN, host: '0000:01:10.0' as never, emulatedModel: null }]);
  const d = describeForMigration(plan, () => ({ pool: 'p1', settings: { vlan: 100 } }));
  t.notMatch(JSON.stringify(d), /0000:01/, 'no PCI address in the description');
  t.same(d.vfs[0], { id: 'vfpool-vf0', pool: 'p1', mac: MAC, failoverStandbyMac: null, guestAddress: null, settings: { vlan: 100 } });
  t.throws(() => describeForMigration(plan, () => null), /vfpool-vf0 was not given from a pool/, 'a netdev=/address= VF cannot migrate');
  t.throws(() => validateDescription({ ...d, vfs: [{ ...d.vfs[0], host: '0000:01:10.0' }] }, 'desc.json'), /carries a host address/);
});

t.test('perform: device_del with the listener registered first, recorded; re-run is a no-op', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0', 'net0']));
  const w = world(planOf([PLAIN]), q);
  const r = await performStage(w.deps, 'vm1');
  t.equal(r.stage, 'performed');
  t.notOk(q.devices.has('vfpool-vf0'), 'the VF left the guest');
  t.same(w.records.get('vm1')!.vfs[0], { id: 'vfpool-vf0', kind: 'plain', mac: MAC, unplugged: true, unplugMode: 'device_del', plugged: false });
  const again = await performStage(w.deps, 'vm1');
  t.same(again.steps, ["source of 'vm1' ready to migrate"], 'nothing left to unplug');
  t.equal(q.log.filter((c) => c.startsWith('device_del')).length, 1, 'device_del sent once');
});

t.test('perform: a guest that never lets go is a bounded failure with a sentence, nothing recorded as unplugged', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0']), { ack: false });
  const w = world(planOf([PLAIN]), q);
  const err = (await performStage(w.deps, 'vm1').catch((e: unknown) => e)) as VfpoolError;
  t.equal(err.exitCode, 1);
  t.match(err.toLine(), /vfpool-vf0: QEMU did not delete vfpool-vf0 within 200 ms after device_del .*: the guest must acknowledge a PCI hot-unplug/);
  t.equal(w.records.get('vm1')!.vfs[0]!.unplugged, false);
});

t.test('perform: a device_del the guest completes after vfpool gave up still counts: confirm --failed plugs the VF back', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0']), { ack: false });
  const w = world(planOf([PLAIN]), q);
  await t.rejects(performStage(w.deps, 'vm1'), /QEMU did not delete vfpool-vf0/);
  t.match(w.records.get('vm1')!.vfs[0], { unplugged: false, unplugMode: 'device_del' }, 'the device_del was recorded before it was sent');
  q.devices.delete('vfpool-vf0'); // the guest's eject completes late
  const c = await confirmStage(w.deps, 'vm1', 'source', 'failure');
  t.same([c.stage, q.devices.has('vfpool-vf0')], ['confirmed-failure', true], 'the migration given up: the VF is back in the guest');
});

t.test('perform: failover primaries — hidden, negotiated (QEMU unplugs), not negotiated (vfpool unplugs)', async (t) => {
  const argv = [...BASE, '-device', 'virtio-net-pci,id=net1,netdev=n0,mac=' + MAC2];
  const hidden = world(planOf([PRIMARY]), new FakeQemu(new Set(['net0'])), BASE);
  const h = await performStage(hidden.deps, 'vm1');
  t.equal(hidden.records.get('vm1')!.vfs[0]!.unplugMode, 'hidden', 'never shown to the guest: nothing to unplug');
  t.same(h.failoverPrimaries, []);
  const qn = new FakeQemu(new Set(['net0', 'vfpool-vf1']), { standbyNegotiated: true });
  const neg = world(planOf([PRIMARY]), qn, BASE);
  const n = await performStage(neg.deps, 'vm1');
  t.same(n.failoverPrimaries, ['vfpool-vf1'], 'left to QEMU');
  t.ok(qn.devices.has('vfpool-vf1'), 'not unplugged by vfpool');
  const m = await migrateOverQmp(qn, 'vm1', 'tcp:127.0.0.1:1', n.failoverPrimaries, 2000);
  t.same(m.unplugPrimary, ['vfpool-vf1'], 'UNPLUG_PRIMARY seen (listener registered before migrate)');
  const qx = new FakeQemu(new Set(['net0', 'vfpool-vf1']), { standbyNegotiated: false });
  const not = world(planOf([PRIMARY]), qx, argv.slice(0, BASE.length));
  await performStage(not.deps, 'vm1');
  t.notOk(qx.devices.has('vfpool-vf1'), 'never negotiated: unplugged explicitly');
  t.equal(not.records.get('vm1')!.vfs[0]!.unplugMode, 'device_del');
});

t.test('dry runs: perform names what vfpool unplugs and what QEMU unplugs itself, prepare and confirm their steps; nothing recorded, reserved or sent', async (t) => {
  const q = new FakeQemu(new Set(['net0', 'vfpool-vf0', 'vfpool-vf1']), { standbyNegotiated: true });
  const w = world(planOf([PLAIN, PRIMARY]), q);
  const p = await dryRunPerform(w.deps, 'vm1');
  t.same(p, {
    domain: 'vm1', stage: 'performed', dryRun: true, unplug: ['vfpool-vf0'], qemuUnplugs: ['vfpool-vf1'],
    steps: [
      'device_del vfpool-vf0 on the source QEMU, wait for DEVICE_DELETED (200 ms)',
      'vfpool-vf1: a failover primary the guest negotiated: QEMU unplugs it itself when the migration starts (UNPLUG_PRIMARY)',
      "source of 'vm1' ready to migrate",
    ],
  });
  t.same(q.log, ['qom-list', 'x-query-virtio-status'], 'QEMU only asked');
  t.same([w.writes, w.poolLog], [[], []], 'nothing recorded, the pool untouched');

  await performStage(w.deps, 'vm1');
  const writes = w.writes.length;
  const back = await dryRunConfirm(w.deps, 'vm1', 'source', 'failure');
  t.same(back.steps, ['device_add vfpool-vf0 (e1000e, mac 52:54:00:9a:00:01) on bus vfpool-rp0', "'vm1' stays on the source"]);
  const freed = await dryRunConfirm(w.deps, 'vm1', 'source', 'success');
  t.same(freed.steps, ["restore and free the VFs of 'vm1' on this host (migrated)", 'restore and free what vm1 holds'], "the release's own plan after its line");
  t.ok(w.records.has('vm1'), 'the record kept');
  t.equal(w.writes.length, writes, 'nothing written');
  t.notOk(q.devices.has('vfpool-vf0'), 'nothing plugged');

  const d = world(null, new FakeQemu(new Set()));
  const desc = describeForMigration(planOf([PLAIN]), () => ({ pool: 'p1', settings: { vlan: 7 } }));
  const prep = await dryRunPrepare(d.deps, desc);
  t.match(prep, { stage: 'prepared', dryRun: true, vfs: [{ id: 'vfpool-vf0', vfAddr: '0000:5e:02.0', mac: MAC }] });
  t.same(prep.steps, [`vfpool-vf0: reserve VF 0000:5e:02.0 (eth1 VF 0) of pool p1, mac ${MAC}`, "write the plan of 'vm1' for the incoming QEMU's wrapper"]);
  t.same([d.writes, d.poolLog, [...d.plans.keys()]], [[], [], []], 'no record, no reservation, no plan');
  // What the real run checks after the pool answered: a reservation with another MAC is refused.
  d.deps.pool.plan = async (_domain, reqs) => reqs.map((r) => ({ id: r.id, pool: r.pool, vfAddr: '0000:5e:02.0' as never, pf: 'eth1', vfIndex: 0, mac: MAC2, settings: {}, reserved: 'new' as const, steps: [], vf: { id: r.id, host: null, emulatedModel: null, mac: MAC2 } }));
  await t.rejects(dryRunPrepare(d.deps, desc), { message: `domain 'vm1': vfpool-vf0 reserved with MAC ${MAC2}, the source's is ${MAC}` });
});

t.test('a failed migration: source confirm plugs back only what vfpool unplugged', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0', 'net0']), { migrate: 'failed' });
  const w = world(planOf([PLAIN]), q);
  await performStage(w.deps, 'vm1');
  await t.rejects(migrateOverQmp(q, 'vm1', 'tcp:127.0.0.1:1', [], 2000), {
    message: 'migration to tcp:127.0.0.1:1 failed: Connection refused',
    // Commands that work as written: confirm refuses to guess the role.
    hint: 'the domain stays on the source: give the migration up with `vfpool migrate confirm vm1 --role source --failed` there and `vfpool migrate confirm vm1 --role destination --failed` on the destination',
  });
  await t.rejects(migrateOverQmp(q, 'vm1', 'exec:touch /tmp/x', [], 2000), { message: /--to 'exec:touch \/tmp\/x' is not a migration URI vfpool accepts/ }, 'refused here too, whoever calls it');
  const c = await confirmStage(w.deps, 'vm1', 'source', 'failure');
  t.equal(c.stage, 'confirmed-failure');
  t.ok(q.devices.has('vfpool-vf0'), 'plugged back');
  t.same(w.poolLog, [], 'the source keeps its VF');
  t.notOk(w.records.has('vm1'), 'record gone once confirmed');
  const again = await confirmStage(w.deps, 'vm1', 'source', 'failure');
  t.equal(again.stage, 'nothing-to-do', 're-run: nothing to do');
});

t.test('prepare + confirm on the destination: same ids and MACs, plain VF plugged after; failure releases', async (t) => {
  const desc = describeForMigration(planOf([PLAIN, PRIMARY]), () => ({ pool: 'p1', settings: {} }));
  const q = new FakeQemu(new Set(['net0']));
  const w = world(null, q, [...BASE, '-incoming', 'tcp:127.0.0.1:4444']);
  const p = await prepareStage(w.deps, desc);
  t.equal(p.stage, 'prepared');
  t.same(w.poolLog, [`reserve vm1 ${MAC},${MAC2}`, 'configure vm1']);
  t.same(w.plans.get('vm1')!.vfs.map((v) => [v.id, v.mac, v.failoverStandbyMac]), [['vfpool-vf0', MAC, null], ['vfpool-vf1', MAC2, MAC2]]);
  const c = await confirmStage(w.deps, 'vm1', 'destination', 'success');
  t.ok(q.devices.has('vfpool-vf0'), 'plain VF plugged');
  t.notOk(q.devices.has('vfpool-vf1'), 'the failover primary is left to QEMU');
  t.match(c.steps[0], /device_add vfpool-vf0 \(e1000e, mac 52:54:00:9a:00:01\) on bus vfpool-rp0/);

  const w2 = world(null, new FakeQemu(new Set()));
  await prepareStage(w2.deps, desc);
  const f = await confirmStage(w2.deps, 'vm1', 'destination', 'failure');
  t.equal(f.stage, 'confirmed-failure');
  t.same(w2.poolLog.slice(-1), ['release vm1 migration-failed']);
  t.notOk(w2.plans.has('vm1'), 'plan removed');
});

t.test('prepare undoes its reservation when a later step fails', async (t) => {
  const desc = describeForMigration(planOf([PLAIN]), () => ({ pool: 'p1', settings: {} }));
  const w = world(null, new FakeQemu(new Set()));
  w.failPlanWrite();
  await t.rejects(prepareStage(w.deps, desc), /cannot write plan: ENOSPC/);
  t.same(w.poolLog, [`reserve vm1 ${MAC}`, 'configure vm1', 'release vm1 migration-failed'], 'reserved, then released');
  t.notOk(w.records.has('vm1'), 'no record left: the stage undid everything it did');
});

t.test('a prepare the pool refuses leaves no migration record (a failed stage undoes its own steps)', async (t) => {
  const desc = describeForMigration(planOf([PLAIN]), () => ({ pool: 'p1', settings: {} }));
  const w = world(null, new FakeQemu(new Set()));
  w.deps.pool.reserve = async () => { throw new ConflictError("pool 'p1' has no free VF"); };
  const err = (await prepareStage(w.deps, desc).catch((e: unknown) => e)) as VfpoolError;
  t.equal(err.exitCode, 3);
  t.same([...w.records.keys()], [], 'no record');
  t.notOk(w.plans.has('vm1'), 'no plan');
});

t.test('confirm with no migration record touches nothing: neither the pool nor the plan nor QEMU', async (t) => {
  for (const [role, outcome] of [['source', 'success'], ['source', 'failure'], ['destination', 'success'], ['destination', 'failure']] as const) {
    const q = new FakeQemu(new Set(['vfpool-vf0', 'net0']));
    const w = world(planOf([PLAIN]), q);
    const r = await confirmStage(w.deps, 'vm1', role, outcome);
    t.same([r.stage, r.steps], ['nothing-to-do', []], `${role} ${outcome}`);
    t.same(w.poolLog, [], `${role} ${outcome}: the pool untouched`);
    t.ok(w.plans.has('vm1'), `${role} ${outcome}: the plan kept`);
    t.same(q.log, [], `${role} ${outcome}: QEMU not asked`);
  }
});

t.test('confirm --failed on a source whose QEMU is gone frees its VFs without QMP (no guest to plug them back into)', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0', 'net0']));
  const w = world(planOf([PLAIN]), q);
  await performStage(w.deps, 'vm1');
  const gone: StageDeps = { ...w.deps, qmp: undefined, readArgv: undefined, qemuGone: true };
  const c = await confirmStage(gone, 'vm1', 'source', 'failure');
  t.equal(c.stage, 'confirmed-failure');
  t.same(w.poolLog, ['release vm1 migration-failed'], 'restored and freed');
  t.notOk(w.plans.has('vm1'), 'plan removed');
  t.notOk(w.records.has('vm1'), 'record removed');
});

t.test('an undo that fails too is reported with both causes', async (t) => {
  const q = new FakeQemu(new Set(['vfpool-vf0', 'vfpool-vf2']), {});
  const plan = planOf([PLAIN, { ...PLAIN, id: 'vfpool-vf2', mac: MAC2 }]);
  const w = world(plan, q);
  const orig = q.execute.bind(q);
  q.execute = async (c, a) => {
    if (c === 'device_del' && a?.id === 'vfpool-vf2') throw new HostError('QMP GenericError: Bus busy');
    if (c === 'device_add') throw new HostError('QMP GenericError: no slot');
    return orig(c, a);
  };
  const err = await performStage(w.deps, 'vm1').catch((e: unknown) => e);
  t.type(err, RollbackError);
  t.match((err as RollbackError).message, /Bus busy; rollback also failed: undo of 'device_del vfpool-vf0.*no slot/);
});

t.test('generatedDevices: the device the wrapper would give, from the running argv (vfpool\'s own parts and -incoming stripped)', async (t) => {
  const plan = planOf([PLAIN]);
  const d = generatedDevices(plan, [...BASE, '-incoming', 'defer', '-device', 'pcie-root-port,id=vfpool-rp0,bus=pcie.0,addr=0x2,chassis=1,slot=0', '-chardev', 'socket,id=vfpool-qmp,path=/x,server=on,wait=off', '-mon', 'chardev=vfpool-qmp,mode=control']);
  t.same(d.get('vfpool-vf0'), { driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', mac: MAC, romfile: '' });
});

t.test('plugDevice: a failover primary QEMU accepts but hides (no guest acked STANDBY) is plugged, hidden; a plain device QEMU does not list is an error', async (t) => {
  const qemu = new FakeQemu(new Set(['net0']), { hidePrimaries: true });
  const plan = planOf([PLAIN, PRIMARY]);
  const devices = generatedDevices(plan, planQemuArgs(plan, parseQemuArgv(BASE), { qmpSocketPath: '/run/vfpool/qemu/vm1/qmp.sock' }).argv);
  t.equal(await plugDevice(qemu, devices.get('vfpool-vf1')!, 'vm1', DEFAULT_TIMEOUTS), 'hidden');
  t.equal(await plugDevice(qemu, devices.get('vfpool-vf1')!, 'vm1', DEFAULT_TIMEOUTS), 'hidden', 'a re-run adds it again, as QEMU accepts the same id');
  const lost = new FakeQemu(new Set(['net0']));
  lost.execute = async function (command, args = {}) { return command === 'device_add' ? {} : FakeQemu.prototype.execute.call(this, command, args); };
  await t.rejects(plugDevice(lost, devices.get('vfpool-vf0')!, 'vm1', DEFAULT_TIMEOUTS), { message: /vm1: device_add vfpool-vf0 returned but QEMU does not list it under \/machine\/peripheral/ });
});
