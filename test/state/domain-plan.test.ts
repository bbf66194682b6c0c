import t from 'tap';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { removeDomainPlan } from '../../src/state/plan-removal.js';
import { domainPlanPath, domainQmpSocketPath, readDomainPlan, sriovNicMacs, sriovNicPlans, validateDomainPlan, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { StateStore } from '../../src/state/store.js';
import { fileRecordStore } from '../../src/state/migration-record.js';
import { Journal } from '../../src/state/journal.js';

const plan = (over: Partial<DomainPlanV1> = {}): DomainPlanV1 => ({
  version: 1, domain: 'vm1', uuid: 'ebf70da1-98bb-421a-9158-82e2fa151c6c', delivery: 'hotplug',
  vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: '52:54:00:11:22:33' as MacAddress, failoverStandbyMac: null, guestAddress: { slot: 0x10 } }],
  sriovNics: sriovNicPlans('vm1', null, [{ vfs: 3, backend: 'user', backendOptions: null }]),
  ...over,
});

t.test('written atomically 0600 in a 0700 directory owned by the QEMU user; state dir and qemu/ traversable (0711); read back equal', async (t) => {
  const state = join(t.testdir({}), 'run');
  mkdirSync(state, { mode: 0o700 });
  chmodSync(state, 0o700);
  const owner = process.getuid!() === 0 ? { uid: 64055, gid: 64055 } : { uid: process.getuid!(), gid: process.getgid!() };
  const file = await writeDomainPlan(state, plan(), owner);
  t.equal(file, domainPlanPath(state, 'vm1'));
  const f = statSync(file);
  const d = statSync(join(state, 'qemu/vm1'));
  t.same([f.mode & 0o777, f.uid, f.gid], [0o600, owner.uid, owner.gid], 'plan.json 0600, the QEMU user\'s');
  t.same([d.mode & 0o777, d.uid, d.gid], [0o700, owner.uid, owner.gid], 'its directory 0700, the QEMU user\'s (QEMU creates the QMP socket there)');
  t.equal(statSync(state).mode & 0o777, 0o711, 'the state dir: others may traverse, never list');
  t.equal(statSync(join(state, 'qemu')).mode & 0o777, 0o711);
  t.same(readDomainPlan(state, 'vm1'), plan());
  await writeDomainPlan(state, plan({ delivery: 'cmdline' }), owner);
  t.equal(readDomainPlan(state, 'vm1')?.delivery, 'cmdline', 'rewritten in place');
  t.equal(readDomainPlan(state, 'other'), null, 'no plan: null (the wrapper adds nothing)');
  removeDomainPlan(state, 'vm1');
  removeDomainPlan(state, 'vm1');
  t.equal(readDomainPlan(state, 'vm1'), null, 'removed, idempotently');
});

t.test('validated on read: the wrapper takes nothing from the file on trust', async (t) => {
  const state = t.testdir({ qemu: { vm1: {} } });
  const put = (v: unknown) => writeFileSync(join(state, 'qemu/vm1/plan.json'), typeof v === 'string' ? v : JSON.stringify(v));
  const vf = plan().vfs[0]!;
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{', /plan.json: is not valid JSON/],
    ['another version', { ...plan(), version: 2 }, /has version 2, this vfpool reads version 1/],
    ['another domain\'s plan', plan({ domain: 'vm2' }), /is the plan of domain 'vm2', not 'vm1'/],
    ['a bad delivery', { ...plan(), delivery: 'carrier-pigeon' }, /delivery "carrier-pigeon" is not 'cmdline' or 'hotplug'/],
    ['an id that is not vfpool-vfN', plan({ vfs: [{ ...vf, id: 'x,bus=pci.0' }] }), /vfs\[0\]\.id "x,bus=pci.0" is not a unique 'vfpool-vfN'/],
    ['two VFs with one id', plan({ vfs: [vf, vf] }), /vfs\[1\]\.id "vfpool-vf0" is not a unique/],
    ['a host that is no BDF', plan({ vfs: [{ ...vf, host: '0000:3b:02.0,x=1' as PciAddress }] }), /vfs\[0\]\.host '0000:3b:02.0,x=1' is not a PCI address/],
    ['a model with a comma', plan({ vfs: [{ ...vf, emulatedModel: 'e1000e,romfile=/etc/shadow' }] }), /emulatedModel "e1000e,romfile=\/etc\/shadow" is not a QEMU device name/],
    ['neither host nor model', plan({ vfs: [{ ...vf, host: null }] }), /vfs\[0\] has neither host nor emulatedModel/],
    ['a bad MAC', plan({ vfs: [{ ...vf, mac: 'ff:ff:ff:ff:ff:ff' as MacAddress }] }), /multicast MAC/],
    ['slot 0', plan({ vfs: [{ ...vf, guestAddress: { slot: 0 } }] }), /guestAddress \{"slot":0\} is not \{slot: 1..31\}/],
    ['256 VFs', plan({ sriovNics: [{ ...plan().sriovNics[0]!, vfs: 256 }] }), /sriovNics\[0\]\.vfs 256 is not 1..255/],
    ['too few MACs', plan({ sriovNics: [{ ...plan().sriovNics[0]!, macs: [] }] }), /macs must list 4 MACs/],
    ['backend options with an id', plan({ sriovNics: [{ ...plan().sriovNics[0]!, backendOptions: 'id=x' }] }), /backend-options='id=x' is not a list of key=value without id=/],
  ];
  for (const [name, v, msg] of cases) {
    put(v);
    t.throws(() => readDomainPlan(state, 'vm1'), { name: 'BadInputError', message: msg }, name);
  }
  t.throws(() => validateDomainPlan(null, 'f'), /f: is not a JSON object/);
  t.throws(() => readDomainPlan(state, '../etc'), /is not a name vfpool accepts/, 'a domain name never leaves the state dir');
});

t.test('emulated SR-IOV MACs: stable per domain, distinct, locally administered, clear of the domain\'s other NICs', async (t) => {
  const a = sriovNicMacs('vm1', null, 0, 8);
  t.same(sriovNicMacs('vm1', null, 0, 8), a, 'same every boot');
  // From one release to the next too: a guest's emulated NIC keeps its MACs across an upgrade.
  t.equal(a[0], '52:54:00:ef:f0:6f', 'the PF of vm1\'s first emulated NIC: sha256 of its identity, as every release derives it');
  t.equal(new Set(a).size, 9);
  t.ok(a.every((m) => m.startsWith('52:54:00:')));
  t.notSame(sriovNicMacs('vm2', null, 0, 8), a, 'another domain, other MACs');
  t.notOk(sriovNicMacs('vm1', null, 0, 8, [a[3]!]).includes(a[3]!), 'a MAC the domain already uses is skipped');
  const two = sriovNicPlans('vm1', null, [{ vfs: 2, backend: 'user', backendOptions: null }, { vfs: 2, backend: 'tap', backendOptions: null }]);
  t.same(two.map((n) => n.id), ['vfpool-sriov0', 'vfpool-sriov1']);
  t.equal(new Set(two.flatMap((n) => n.macs)).size, 6);
});

t.test('a state write after the plan (start begin, between prepare and QEMU\'s exec) keeps the state dir traversable for the wrapper', async (t) => {
  const { StateStore } = await import('../../src/state/store.js');
  const state = join(t.testdir({}), 'run');
  const store = new StateStore(state);
  await store.update(() => undefined);
  t.equal(statSync(state).mode & 0o777, 0o700, 'no plan yet: root\'s 0700');
  const owner = { uid: process.getuid!(), gid: process.getgid!() };
  await writeDomainPlan(state, plan(), owner);
  await store.update(() => undefined);
  t.equal(statSync(state).mode & 0o777, 0o711, 'still 0711 after the store wrote: the QEMU user reaches qemu/NAME/plan.json');
  chmodSync(state, 0o755);
  await store.update(() => undefined);
  t.equal(statSync(state).mode & 0o777, 0o700, 'anything readable by others goes back to 0700');
});

t.test('a domain name too long for a socket in its own directory: QEMU\'s socket there, reached through a short link in qemu/', async (t) => {
  // As deep as /run/vfpool: 128 characters of name would put qemu/NAME/qmp.sock at 155 bytes.
  const state = mkdtempSync('/tmp/vfpool-dp-');
  t.teardown(() => rmSync(state, { recursive: true, force: true }));
  const owner = { uid: process.getuid!(), gid: process.getgid!() };
  const long = `${'a'.repeat(100)}.b+c:d-${'e'.repeat(21)}`;
  t.equal(long.length, 128);
  t.equal(domainQmpSocketPath(state, 'vm1'), join(state, 'qemu/vm1/qmp.sock'), 'a name that fits keeps its path');
  const sock = domainQmpSocketPath(state, long);
  t.ok(Buffer.byteLength(sock) <= 107, `${sock} fits sun_path`);
  t.equal(domainQmpSocketPath(state, long), sock, 'the same on every call: QEMU and the tools that connect agree');
  t.not(domainQmpSocketPath(state, `${long.slice(0, 127)}f`), sock, 'another long name, another link');

  await writeDomainPlan(state, plan({ domain: long }), owner);
  const link = join(sock, '..');
  t.ok(lstatSync(link).isSymbolicLink(), 'root made the link');
  t.equal(readlinkSync(link), long, 'relative, to the domain\'s directory');
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(sock, resolve));
  t.ok(lstatSync(join(state, 'qemu', long, 'qmp.sock')).isSocket(), 'bound: the socket is in the domain\'s own directory');
  await new Promise<void>((resolve, reject) => createConnection(sock).once('connect', function (this: import('node:net').Socket) { this.end(); resolve(); }).once('error', reject));
  await new Promise((resolve) => server.close(resolve));
  await writeDomainPlan(state, plan({ domain: long, delivery: 'cmdline' }), owner);
  t.equal(readlinkSync(link), long, 'a second write keeps the link');
  removeDomainPlan(state, long);
  t.notOk(existsSync(join(state, 'qemu', long)), 'the directory is removed');
  t.throws(() => lstatSync(link), { code: 'ENOENT' }, 'and so is the link');
  removeDomainPlan(state, long);
});

t.test('a state directory made under new parents: the parents are 0755 (as mkdir -p makes them), so the QEMU user reaches its plan', async (t) => {
  // Reproduced: VFPOOL_STATE_DIR=/srv/vfpool/run on a host without /srv/vfpool: the store made
  // /srv/vfpool 0700 along with run/, and the wrapper (the QEMU user) could not reach
  // qemu/NAME/plan.json: guests started without their VFs, and nothing said so. Under a
  // daemon's umask 077 too.
  const base = t.testdir({});
  const old = process.umask(0o077);
  t.teardown(() => void process.umask(old));
  const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
  const viaStore = join(base, 'a/b/run');
  await new StateStore(viaStore).update(() => undefined);
  t.same([mode(join(base, 'a')), mode(join(base, 'a/b')), mode(viaStore), mode(join(viaStore, 'index'))], ['755', '755', '700', '700'], 'the store: parents 0755, its own directories 0700');
  const viaPlan = join(base, 'c/d/run');
  const owner = process.getuid!() === 0 ? { uid: 64055, gid: 64055 } : { uid: process.getuid!(), gid: process.getgid!() };
  await writeDomainPlan(viaPlan, plan(), owner);
  t.same([mode(join(base, 'c')), mode(join(base, 'c/d')), mode(viaPlan), mode(join(viaPlan, 'qemu'))], ['755', '755', '711', '711'], 'a plan first: parents 0755, the state directory and qemu/ 0711 (never 0755)');
  const viaRecord = join(base, 'e/run');
  await fileRecordStore(viaRecord).update('vm1', () => null);
  t.same([mode(join(base, 'e')), mode(viaRecord)], ['755', '700'], 'a migration record first: the state directory 0700, not 0755 as migrate/\'s parent');
  const journal = join(base, 'f/g/journal');
  new Journal(journal).record({ op: 'pool-start', pool: 'p' });
  t.same([mode(join(base, 'f')), mode(join(base, 'f/g')), mode(journal)], ['755', '755', '700'], 'the history: parents 0755, itself 0700');
  const existing = join(base, 'kept');
  mkdirSync(existing, { mode: 0o750 });
  chmodSync(existing, 0o750);
  await new StateStore(join(existing, 'run')).update(() => undefined);
  t.equal(mode(existing), '750', 'a parent that was there is left as it is');
});
