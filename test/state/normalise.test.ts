import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BadInputError } from '../../src/errors.js';
import { normaliseState } from '../../src/state/normalise.js';
import { STATE_VERSION } from '../../src/state/schema.js';
import { StateStore } from '../../src/state/store.js';

/**
 * A state.json as vfpool 0.1 wrote it (version 1): the first allocation predates `mode`,
 * `iommuGroup`, `pairedMac`, `worker`, `applied`, `vfioOwner`, `lastError` and `owner.via`;
 * the port predates `plug`, `mac` and `createdAt`; there is no `bindings` list.
 */
const V1_FILE = `{
  "version": 1,
  "pools": {
    "p": { "xml": "<network><name>p</name></network>", "origin": "definition", "startedAt": "2026-01-01T10:00:00.000Z", "activated": [{ "pf": "eth1", "numVfs": 4 }] }
  },
  "allocations": [
    {
      "pool": "p", "pf": "eth1", "vfIndex": 1, "vfAddr": "0000:3b:02.1", "netdev": null,
      "owner": { "domain": "vm1", "uuid": null, "pid": 4242 },
      "mac": "52:54:00:00:00:01", "vlan": 10, "alias": "vfpool-vf0", "phase": "ready",
      "saved": { "link": { "mac": "aa:bb:cc:00:00:01", "vlan": 0, "qos": 0, "spoofchk": true, "trust": false, "linkState": "auto", "minTxRate": 0, "maxTxRate": 0 }, "driver": "igbvf", "mtu": 1500, "netdev": "eth1v1" },
      "guestSlot": 0, "requestedNetdev": null, "createdAt": "2026-01-01T10:01:00.000Z"
    },
    {
      "pool": null, "mode": "passthrough", "pf": "eth1", "vfIndex": 2, "vfAddr": "0000:3b:02.2", "netdev": "eth1v2", "iommuGroup": "12",
      "owner": { "domain": "vm2", "uuid": "8f0c4a4e-7d1b-4f7e-9a51-0c1d2e3f4a5b", "pid": null, "via": "cli" },
      "mac": "52:54:00:00:00:02", "vlan": null, "alias": "vfpool-vf0", "pairedMac": null, "phase": "releasing", "worker": null,
      "saved": null, "applied": null, "vfioOwner": null, "guestSlot": 0, "requestedNetdev": "eth1v2",
      "createdAt": "2026-01-01T10:02:00.000Z", "lastError": "ip exited 2"
    }
  ],
  "ports": [
    { "network": "hostnet", "portUuid": "0b6f5c3e-1111-2222-3333-444455556666", "domain": "vm3", "domainUuid": null, "vfAddr": "0000:3b:02.3", "netdev": null }
  ]
}`;

t.test('a version 1 file is upgraded to the current version, every field present', async (t) => {
  const s = normaliseState(JSON.parse(V1_FILE), '/run/vfpool/state.json');
  t.equal(s.version, STATE_VERSION);
  t.equal(STATE_VERSION, 2);
  t.same(s.bindings, [], 'no bindings list in version 1: an empty one');
  const [old, newer] = s.allocations;
  t.equal(old!.mode, 'hostdev', 'a record from before modes was a hostdev allocation');
  t.equal(old!.owner.via, 'libvirt', 'before `via`, only the qemu hook prepared');
  t.equal(old!.iommuGroup, null);
  t.equal(old!.pairedMac, null);
  t.equal(old!.worker, null);
  t.equal(old!.vfioOwner, null);
  t.equal(old!.lastError, null);
  t.same(old!.applied, { link: { mac: 'aa:bb:cc:00:00:01' }, mtu: null, driver: null }, 'before `applied`, a restore put back the admin MAC only');
  t.equal(old!.requested, null, 'before `requested` was kept: null (a migration reads `applied`)');
  t.equal(old!.createdMonoMs, null, 'before the monotonic stamp was kept: null (the grace measures by the wall clock)');
  t.equal(newer!.mode, 'passthrough', 'fields that are there are kept');
  t.equal(newer!.owner.via, 'cli');
  t.equal(newer!.lastError, 'ip exited 2');
  t.equal(newer!.applied, null, 'nothing saved: nothing applied');
  t.same(s.ports[0], {
    network: 'hostnet', portUuid: '0b6f5c3e-1111-2222-3333-444455556666', domain: 'vm3', domainUuid: null,
    vfAddr: '0000:3b:02.3', netdev: null, plug: 'hostdev-pci', mac: null, createdAt: null, createdMonoMs: null, pid: null,
  });
  t.same(s.pools.p!.activated, [{ pf: 'eth1', numVfs: 4 }]);
  t.equal(s.pools.p!.change, null, 'a pool without a start/stop intent is settled');
  t.same(s.pools.p!.bound, [], 'a pool from before `bound` bound no VF that existed before its start');
  t.equal(s.pools.p!.libvirtStartRefused, null, 'a pool from before the mark had no refused libvirt start');
  t.same(s.leftovers, [], 'a file from before `leftovers`: no stopped pool left VFs');
  t.equal(Object.getPrototypeOf(s.pools), null, 'pools is keyed by name without a prototype');
});

t.test('a current file reads back as written', async (t) => {
  const once = normaliseState(JSON.parse(V1_FILE), 'f');
  t.same(normaliseState(JSON.parse(JSON.stringify(once)), 'f'), once);
});

/** The version 1 file with its first allocation changed. */
function withAllocation(change: Record<string, unknown>): unknown {
  const raw = JSON.parse(V1_FILE);
  raw.allocations[0] = { ...raw.allocations[0], ...change };
  return raw;
}

t.test('a file of the wrong shape is refused with one line naming the file and the field', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['null', null, /state file F: expected a JSON object, found null/],
    ['a list', [], /expected a JSON object, found a list/],
    ['no version', {}, /'version' is missing, expected a whole number from 1 to 2/],
    ['version 0', { version: 0, pools: {}, allocations: [], ports: [] }, /'version' is number 0/],
    ['no allocations', { version: 1, pools: {}, ports: [] }, /'allocations' is missing, expected a list/],
    ['pools a list', { version: 2, pools: [], allocations: [], ports: [], bindings: [] }, /'pools' is a list, expected an object/],
    ['v2 without bindings', { version: 2, pools: {}, allocations: [], ports: [] }, /'bindings' is missing, expected a list/],
    ['an allocation without its VF', { version: 1, pools: {}, allocations: [{ pf: 'eth1' }], ports: [] }, /allocations\[0\]\.vfAddr is missing, expected a string/],
    ['an unknown phase', { version: 1, pools: {}, allocations: [{ ...JSON.parse(V1_FILE).allocations[0], phase: 'migrating' }], ports: [] }, /allocations\[0\]\.phase is string "migrating", expected one of preparing, ready, releasing/],
    ['libvirtStartRefused not a time', { version: 2, pools: { p: { xml: 'x', origin: 'definition', activated: [], libvirtStartRefused: 5 } }, allocations: [], ports: [], bindings: [] }, /pools\['p'\]\.libvirtStartRefused is number 5, expected a string/],
    ['bound not a list', { version: 2, pools: { p: { xml: 'x', origin: 'definition', activated: [], bound: {} } }, allocations: [], ports: [], bindings: [] }, /pools\['p'\]\.bound is an object, expected a list/],
    // A PF found by the wrong address would be stopped as another device: never guessed at.
    ['a PF address not a PCI address', { version: 2, pools: { p: { xml: 'x', origin: 'definition', activated: [], pfAddresses: [{ pf: 'eth1', address: '3b:00.0' }] } }, allocations: [], ports: [], bindings: [] }, /pools\['p'\]\.pfAddresses\[0\]\.address is string "3b:00\.0", expected a PCI address/],
    ['pfAddresses not a list', { version: 2, pools: { p: { xml: 'x', origin: 'definition', activated: [], pfAddresses: 'eth1' } }, allocations: [], ports: [], bindings: [] }, /pools\['p'\]\.pfAddresses is string "eth1", expected a list/],
    ['a leftover PF address not a PCI address', { version: 2, pools: {}, allocations: [], ports: [], bindings: [], leftovers: [{ pool: 'p', pf: 'eth1', pfAddr: 7, since: 'now' }] }, /leftovers\[0\]\.pfAddr is number 7, expected a string/],
    ['a leftover without its PF', { version: 2, pools: {}, allocations: [], ports: [], bindings: [], leftovers: [{ pool: 'p', since: 'now' }] }, /leftovers\[0\]\.pf is missing, expected a string/],
    ['a boot that is not a boot id', { version: 2, pools: {}, allocations: [], ports: [], bindings: [], boot: 7 }, /'boot' is number 7, expected a boot id or null/],
    ['a port without a domain', { version: 1, pools: {}, allocations: [], ports: [{ network: 'n', portUuid: 'u' }] }, /ports\[0\]\.domain is missing/],
    // Edited by hand. Read as they were, reconcile freed the VF of a running guest (process.kill
    // of a string is no process), and release dropped the record of '3b:02.1' as a VF gone from
    // the host, leaving 0000:3b:02.1 with the guest's MAC.
    ['a pid written as a string', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: '4242' } }), /allocations\[0\]\.owner\.pid is string "4242", expected a process id \(a whole number above 0\) or null/],
    ['a negative pid', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: -1 } }), /allocations\[0\]\.owner\.pid is number -1, expected a process id/],
    ['a pid start time written as a string', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: 4242, pidStart: '17' } }), /allocations\[0\]\.owner\.pidStart is string "17", expected a process start time/],
    ['a worker start time written as a string', withAllocation({ worker: 77, workerStart: 'x' }), /allocations\[0\]\.workerStart is string "x", expected a process start time/],
    ['a worker written as a string', withAllocation({ worker: '77' }), /allocations\[0\]\.worker is string "77", expected a process id/],
    ['a monotonic stamp written as a string', withAllocation({ createdMonoMs: '5' }), /allocations\[0\]\.createdMonoMs is string "5", expected a number of milliseconds or null/],
    ['a libvirt daemon pid written as a string', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: null, daemon: '1' } }), /allocations\[0\]\.owner\.daemon is string "1", expected a process id/],
    ['a libvirt daemon start time written as a string', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: null, daemon: 1, daemonStart: '9' } }), /allocations\[0\]\.owner\.daemonStart is string "9", expected a process start time/],
    ['an unknown owner kind', withAllocation({ owner: { domain: 'vm1', uuid: null, pid: null, via: 'virsh' } }), /allocations\[0\]\.owner\.via is string "virsh", expected one of libvirt, cli/],
    ['a VF address without its domain', withAllocation({ vfAddr: '3b:02.1' }), /allocations\[0\]\.vfAddr is string "3b:02\.1", expected a PCI address such as 0000:3b:02\.0/],
    ['a VF address in capitals', withAllocation({ vfAddr: '0000:3B:02.1' }), /allocations\[0\]\.vfAddr is string "0000:3B:02\.1", expected a PCI address/],
    ['a domain name that is a path', withAllocation({ owner: { domain: '../../etc/x', uuid: null, pid: null } }), /allocations\[0\]\.owner\.domain is string "\.\.\/\.\.\/etc\/x", expected a name/],
    ['a port pid written as a string', { version: 1, pools: {}, allocations: [], ports: [{ ...JSON.parse(V1_FILE).ports[0], pid: '12' }] }, /ports\[0\]\.pid is string "12", expected a process id/],
    ['a port VF address that is not one', { version: 1, pools: {}, allocations: [], ports: [{ ...JSON.parse(V1_FILE).ports[0], vfAddr: 'eth1v3' }] }, /ports\[0\]\.vfAddr is string "eth1v3", expected a PCI address/],
  ];
  for (const [name, raw, re] of cases) {
    const err = t.throws(() => normaliseState(raw, 'F'), name) as unknown;
    t.ok(err instanceof BadInputError, `${name}: exit 2`);
    t.match((err as BadInputError).toLine(), re, name);
    t.match((err as BadInputError).toLine(), /will not read it as 'nothing allocated'/, `${name}: says why and what to do`);
  }
});

t.test('a file from a newer vfpool is refused, naming both versions', async (t) => {
  const err = t.throws(() => normaliseState({ version: 3, pools: {}, allocations: [], ports: [], bindings: [] }, 'F')) as BadInputError;
  t.equal(err.exitCode, 2);
  t.equal(err.toLine(), 'state file F: was written by a newer vfpool (state version 3; this vfpool reads versions 1 to 2): run the vfpool that wrote it, or upgrade this one');
});

t.test('the store reads through the normaliser and writes the current version', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vfpool-state-'));
  writeFileSync(join(dir, 'state.json'), V1_FILE);
  const store = new StateStore(dir);
  t.equal(store.read().allocations[0]!.mode, 'hostdev');
  await store.update((s) => {
    s.bindings.push({ domain: 'vm1', netdev: 'eth1v1' as never, vfAddr: '0000:3b:02.1' as never, since: 'now' });
  });
  const { readFileSync } = await import('node:fs');
  const written = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
  t.equal(written.version, 2, 'the upgrade is written back with the next update');
  t.equal(written.allocations[0].owner.via, 'libvirt');
  t.equal(written.bindings.length, 1);

  writeFileSync(join(dir, 'state.json'), 'null');
  t.throws(() => store.read(), { exitCode: 2, message: /state\.json: expected a JSON object, found null/ }, "null is not 'nothing allocated'");
  const upd = await store.update(() => undefined).then(() => null, (e: unknown) => e as BadInputError);
  t.equal(upd?.exitCode, 2, 'nor is it overwritten by an update');
  t.equal(readFileSync(join(dir, 'state.json'), 'utf8'), 'null', 'the file is left as it was');
});

t.test('a list a newer vfpool added within version 2 is kept by this one\'s writes', async (t) => {
  // As `leftovers` was added within version 2: a vfpool from before it dropped the list at its
  // next write (a downgrade, or its hook still running during an upgrade), and the VFs it
  // listed were never removed.
  const dir = mkdtempSync(join(tmpdir(), 'vfpool-state-'));
  const future = [{ pool: 'p', pf: 'eth1', since: '2026-01-01T10:00:00.000Z', note: 'from a newer vfpool' }];
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ version: 2, pools: {}, allocations: [], ports: [], bindings: [], leftovers: [], quarantined: future }));
  const store = new StateStore(dir);
  await store.update((s) => {
    s.leftovers.push({ pool: 'q', pf: 'eth2' as never, since: 'now' });
  });
  const { readFileSync } = await import('node:fs');
  const written = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
  t.same(written.quarantined, future, 'the unknown list is written back as it was');
  t.equal(written.leftovers.length, 1, 'next to this vfpool\'s own change');
  t.equal(written.version, 2);
});

t.test('a state file that is a directory, a state dir that is a file: a sentence with the fix', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vfpool-state-'));
  mkdirSync(join(dir, 'state.json'));
  const err = t.throws(() => new StateStore(dir).read()) as BadInputError;
  t.equal(err.exitCode, 2);
  t.equal(err.toLine(), `the state file ${join(dir, 'state.json')} is a directory: remove or rename that directory, or point VFPOOL_STATE_DIR elsewhere`);

  const file = join(dir, 'plain');
  writeFileSync(file, '');
  const e2 = await new StateStore(file).update(() => undefined).then(() => null, (e: unknown) => e as BadInputError);
  t.equal(e2?.exitCode, 2);
  t.equal(e2?.message, `the state directory ${file} exists and is not a directory`);
});
