import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeDomainPlan } from '../../src/state/domain-plan.js';
import type { MacAddress } from '../../src/types.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

/**
 * `vfpool migrate begin|prepare|confirm` in-process between two simulated hosts (the stages
 * that need no running QEMU): the description carries pool, MAC and VLAN but no address, the
 * destination reserves a VF with the same MAC, and a failed migration frees it again.
 */
const POOL = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`;

/** Source and destination, each with 2 VFs on eth1 in pool p, started. */
async function twoHosts(t: Parameters<typeof makeSimEnv>[0]) {
  const src = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2, address: '0000:5e:00.0' }] });
  for (const w of [src, dst]) {
    await w.sim.writeNumVfs('eth1' as never, 2);
    await w.addPool('p', POOL);
  }
  return { src, dst };
}

t.test('begin on the source, prepare and a failed confirm on the destination', async (t) => {
  const { src, dst } = await twoHosts(t);
  const xml = join(src.dir, 'vm1.xml');
  writeFileSync(xml, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='12'/>` }));
  t.equal((await runCliInProcess(['prepare', '--xml', xml], src.env)).exitCode, 0);
  // The plan the qemu hook writes at prepare under libvirt (`vfpool prepare` alone writes none).
  const vf = src.ctx.store.read().allocations[0]!;
  await writeDomainPlan(src.settings.stateDir, {
    version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: vf.vfAddr, emulatedModel: null, mac: '52:54:00:aa:00:01' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
  }, { uid: process.getuid!(), gid: process.getgid!() });

  const begin = await runCliInProcess(['migrate', 'begin', 'vm1'], src.env);
  t.equal(begin.exitCode, 0, begin.stderr);
  const desc = JSON.parse(begin.stdout);
  t.match(desc, { version: 1, domain: 'vm1', vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: '52:54:00:aa:00:01', settings: { vlan: 12 } }] });
  t.notMatch(begin.stdout, /0000:3b/, 'no source address in the description');
  const file = join(dst.dir, 'vm1.json');
  writeFileSync(file, begin.stdout);

  const wrong = await runCliInProcess(['migrate', 'prepare', 'vm2', '--description', file], dst.env);
  t.same([wrong.exitCode, wrong.stderr], [2, `vfpool: ${file} describes domain 'vm1', not 'vm2'\n`]);

  const prep = await runCliInProcess(['migrate', 'prepare', '--description', file, '--json'], dst.env);
  t.equal(prep.exitCode, 0, prep.stderr);
  t.match(JSON.parse(prep.stdout), { domain: 'vm1' });
  const held = dst.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1');
  t.match(held, [{ vfAddr: /^0000:5e:/, mac: '52:54:00:aa:00:01', vlan: 12 }], 'the same MAC and VLAN on a VF of this host');
  const again = await runCliInProcess(['migrate', 'prepare', '--description', file], dst.env);
  t.equal(again.exitCode, 0, 're-running prepare keeps the reservation');
  t.match(again.stdout, /^vm1: /m);
  t.equal(dst.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1').length, 1);

  const undo = await runCliInProcess(['migrate', 'confirm', 'vm1', '--role', 'destination', '--failed'], dst.env);
  t.equal(undo.exitCode, 0, undo.stderr);
  t.match(undo.stdout, /^vm1: /m);
  t.same(dst.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1'), [], 'freed');
  t.equal(src.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1').length, 1, 'the source keeps its VF');
});

t.test('begin --xml FILE, and the refusals', async (t) => {
  const w = makeSimEnv(t);
  const file = join(w.dir, 'in.xml');
  const xml = `<domain type='qemu'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='p1' address='0000:01:10.0' mac='52:54:00:9a:00:01'/></vfpool:domain></metadata></domain>`;
  writeFileSync(file, xml);
  t.same(await runCliInProcess(['migrate', 'begin', '--xml', file], w.env), { exitCode: 0, stdout: xml.replace(" pool='p1' address='0000:01:10.0'", " pool='p1'"), stderr: '' });
  const notJson = join(w.dir, 'x.json');
  writeFileSync(notJson, 'not json');
  const cases: Array<[string[], RegExp]> = [
    [['migrate', 'begin', '--xml', join(w.dir, 'missing.xml')], /^vfpool: cannot read .*missing\.xml: ENOENT: give the path of a domain XML, or - for stdin\n$/],
    [['migrate', 'begin'], /^vfpool: vfpool migrate begin: name the domain\n$/],
    [['migrate', 'prepare', '--description', notJson], /^vfpool: .*x\.json: is not JSON: /],
    [['migrate', 'confirm', 'vm1'], /give --role source or --role destination/],
    [['migrate', 'vm1'], /^vfpool: vfpool migrate vm1: '' is not a libvirt URI/],
    // yargs made these NaN once, and a NaN timeout never fires: a migration that never gives up.
    [['migrate', 'perform', 'vm1', '--timeout', 'abc'], /^vfpool: --timeout 'abc' is not a number of seconds above 0 to 2147482: give --timeout a plain number of seconds, e\.g\. --timeout 30\n$/],
    [['migrate', 'vm1', 'qemu+tcp://dst/system', '--timeout', '0'], /^vfpool: --timeout '0' is not a number of seconds above 0/],
    // Node fires a timer above 2^31 ms at once.
    [['migrate', 'perform', 'vm1', '--timeout', '3000000'], /^vfpool: --timeout '3000000' is not a number of seconds above 0 to 2147482/],
    [['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '-5'], /^vfpool: --wait-incoming '-5' is not a number of seconds above 0/],
    [['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', ''], /^vfpool: --wait-incoming '' is not a number of seconds/],
  ];
  for (const [argv, re] of cases) {
    const r = await runCliInProcess(argv, w.env);
    t.equal(r.exitCode, 2, argv.join(' '));
    t.match(r.stderr, re, argv.join(' '));
  }
  const c = await runCliInProcess(['migrate', 'confirm', 'vm1', '--role', 'source'], w.env);
  t.same([c.exitCode, c.stdout], [0, 'vm1: nothing-to-do\n'], 'nothing recorded: an idempotent no-op');
});

t.test('confirm --wait-incoming on the destination: an incoming QEMU already gone (its socket removed) is a failed migration, the reservation freed and logged', async (t) => {
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] });
  await dst.sim.writeNumVfs('eth1' as never, 2);
  await dst.addPool('p', POOL);
  const file = join(dst.dir, 'vm1.json');
  writeFileSync(file, JSON.stringify({ version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [], vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: '52:54:00:aa:00:02', failoverStandbyMac: null, guestAddress: null, settings: {} }] }));
  t.equal((await runCliInProcess(['migrate', 'prepare', '--description', file], dst.env)).exitCode, 0);
  t.equal(dst.ctx.store.read().allocations.length, 1);
  const wrongRole = await runCliInProcess(['migrate', 'confirm', 'vm1', '--role', 'source', '--wait-incoming', '5'], dst.env);
  t.same([wrongRole.exitCode, wrongRole.stderr], [2, "vfpool: vfpool migrate confirm vm1: --wait-incoming waits for an incoming QEMU, so it goes with --role destination\n"]);
  const r = await runCliInProcess(['migrate', 'confirm', 'vm1', '--role', 'destination', '--wait-incoming', '5'], dst.env);
  t.equal(r.exitCode, 0, r.stderr);
  t.same(dst.ctx.store.read().allocations, [], 'the reservation is freed');
  t.notOk(existsSync(join(dst.settings.stateDir, 'migrate', 'vm1.json')), 'no migration record left');
  const log = readFileSync(join(dst.settings.stateDir, 'vfpool.log'), 'utf8');
  t.match(log, /migrate vm1: the incoming QEMU is gone \(cannot connect to QMP socket .*qmp\.sock: ENOENT/);
  t.match(log, /migrate vm1: restore and free the VFs of 'vm1' on this host \(migration-failed\)/, 'the steps are in the log');
});

t.test('every VF setting the request had, and the uuid, reach the destination: described, reserved, applied', async (t) => {
  const uuid = '0b7f6e2a-4c1d-4a8e-9f3b-2d5c6e7f8a91';
  const { src, dst } = await twoHosts(t);
  const xml = join(src.dir, 'vm1.xml');
  writeFileSync(xml, domainXml('prepare', { name: 'vm1', uuid, vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01' vlan='100' qos='3' spoofchk='off' trust='on' max-tx-rate='500' mtu='1500'/>` }));
  t.equal((await runCliInProcess(['prepare', '--xml', xml], src.env)).exitCode, 0);
  const vf = src.ctx.store.read().allocations[0]!;
  await writeDomainPlan(src.settings.stateDir, {
    version: 1, domain: 'vm1', uuid, delivery: 'hotplug', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: vf.vfAddr, emulatedModel: null, mac: '52:54:00:aa:00:01' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
  }, { uid: process.getuid!(), gid: process.getgid!() });

  const begin = await runCliInProcess(['migrate', 'begin', 'vm1'], src.env);
  t.equal(begin.exitCode, 0, begin.stderr);
  const settings = { vlan: 100, qos: 3, spoofchk: false, trust: true, maxTxRate: 500, mtu: 1500 };
  t.match(JSON.parse(begin.stdout), { uuid, vfs: [{ settings }] });
  t.same(JSON.parse(begin.stdout).vfs[0].settings, settings, 'the settings asked for, and only those');
  // A record from before `requested` was kept: what prepare set on the VF (the MTU of a vfio VF never is).
  await src.ctx.store.update((s) => { s.allocations[0]!.requested = null; });
  const older = await runCliInProcess(['migrate', 'begin', 'vm1'], src.env);
  t.same(JSON.parse(older.stdout).vfs[0].settings, { vlan: 100, qos: 3, spoofchk: false, trust: true, maxTxRate: 500 }, 'an older record: its applied link settings');

  const prep = await runCliInProcess(['migrate', 'prepare', '--description', '-'], dst.env, begin.stdout);
  t.equal(prep.exitCode, 0, prep.stderr);
  const [a] = dst.ctx.store.read().allocations;
  t.equal(a!.owner.uuid, uuid, 'the owner keeps its uuid');
  t.same(a!.requested, { vlan: 100, qos: 3, spoofchk: false, trust: true, linkState: null, minTxRate: null, maxTxRate: 500, mtu: 1500 }, 'recorded as asked, so it migrates on');
  const link = (await dst.sim.getVfLinks('eth1' as never)).get(a!.vfIndex)!;
  t.match(link, { mac: '52:54:00:aa:00:01', vlan: 100, qos: 3, spoofchk: false, trust: true, maxTxRate: 500 }, "the destination's VF set as the source's was");
});

t.test('a prepare the destination refuses (pool exhausted): exit 3, no migration record left, the refusal in the history', async (t) => {
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 1 }] });
  await dst.sim.writeNumVfs('eth1' as never, 1);
  await dst.addPool('p', POOL);
  const other = join(dst.dir, 'other.xml');
  writeFileSync(other, domainXml('prepare', { name: 'other', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:09'/>` }));
  t.equal((await runCliInProcess(['prepare', '--xml', other], dst.env)).exitCode, 0, 'the only VF taken');
  const desc = JSON.stringify({ version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', sriovNics: [], vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: '52:54:00:aa:00:02', failoverStandbyMac: null, guestAddress: null, settings: { vlan: 7 } }] });
  const r = await runCliInProcess(['migrate', 'prepare', '--description', '-'], dst.env, desc);
  t.equal(r.exitCode, 3, r.stderr);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.notOk(existsSync(join(dst.settings.stateDir, 'migrate', 'vm1.json')), 'no migration record left');
  t.equal(dst.ctx.store.read().allocations.filter((x) => x.owner.domain === 'vm1').length, 0, 'nothing held');
  const hist = await runCliInProcess(['history', 'vm1', '--json'], dst.env);
  t.match(hist.stdout.trim().split('\n').map((l) => JSON.parse(l)), [{ op: 'prepare-failed', domain: 'vm1', exitCode: 3, error: /vm1/ }], 'journaled like a plain prepare refusal');
  // Later, with the VF free, the same migration prepares as if the refusal never happened.
  t.equal((await runCliInProcess(['release', 'other'], dst.env)).exitCode, 0);
  const again = await runCliInProcess(['migrate', 'prepare', '--description', '-'], dst.env, desc);
  t.equal(again.exitCode, 0, again.stderr);
  t.match(JSON.parse(readFileSync(join(dst.settings.stateDir, 'migrate', 'vm1.json'), 'utf8')), { role: 'destination', stage: 'prepared', reserved: true });
});
