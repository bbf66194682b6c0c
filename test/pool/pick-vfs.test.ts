import t from 'tap';
import { BadInputError, ConflictError } from '../../src/errors.js';
import type { PoolSpec } from '../../src/config/pool-xml.js';
import type { Host, VfInfo } from '../../src/host/host.js';
import type { MacAddress, NetdevName, PciAddress, VfIndex } from '../../src/types.js';
import { pickVfs, type Member, type ResolvedRequest } from '../../src/pool/allocation.js';
import type { VfRequest } from '../../src/pool/requests.js';
import { emptyState, type VfpoolState } from '../../src/state/schema.js';
import { noVfSettings } from '../../src/vf-settings.js';

const PF = 'eth1' as NetdevName;
const member = (i: number, driver: string | null = 'vfio-pci'): Member => ({
  pf: PF,
  vf: { index: i as VfIndex, address: `0000:3b:02.${i}` as PciAddress, netdev: null, driver, iommuGroup: String(40 + i) } as VfInfo,
});
const POOL: PoolSpec = { name: 'p', mode: 'hostdev', managed: true, pfs: [{ dev: PF, numVfs: 4 }], interfaces: [], addresses: [], vlan: null, origin: 'definition' };
const MEMBERS = [member(0), member(1), member(2)];
const request = (index: number): VfRequest => ({
  ...noVfSettings(), index, field: `vfpool:hostdev #${index + 1}`, source: 'metadata', pool: 'p', netdev: null, address: null, mac: `52:54:00:00:00:0${index}` as MacAddress, pairedMac: null, guestSlot: null,
});
const fromPool = (index: number): ResolvedRequest => ({ request: request(index), pool: POOL, mode: 'hostdev', named: null });
const named = (index: number, m: Member, pool: PoolSpec | null = null): ResolvedRequest => ({ request: request(index), pool, mode: 'hostdev', named: m });
/** Only the vfio holder scan is asked of the host; `held42`: pid 777 holds VF 2's group open. */
const hostWith = (groups: Array<[string, number[]]>) => ({ vfioHolders: async () => new Map(groups) }) as unknown as Host;
const host = hostWith([]);
const held42 = hostWith([['42', [777]]]);
const members = async function* () {
  yield* MEMBERS;
};

function held(domain: string, i: number): VfpoolState {
  const s = emptyState();
  s.allocations.push({ vfAddr: `0000:3b:02.${i}`, owner: { domain, uuid: null, pid: null, via: 'libvirt' } } as never);
  return s;
}

t.test('pickVfs: which VF each request gets', async (t) => {
  const pick = async (state: VfpoolState, rs: ResolvedRequest[]) =>
    [...(await pickVfs(host, state, rs, members, 'vm1')).entries()].map(([i, m]) => [i, m.vf.address]);
  t.same(await pick(emptyState(), [fromPool(0)]), [[0, '0000:3b:02.0']], 'first fit');
  t.same(await pick(emptyState(), [fromPool(0), fromPool(1)]), [[0, '0000:3b:02.0'], [1, '0000:3b:02.1']], 'two requests, two VFs');
  t.same(await pick(held('other', 0), [fromPool(0)]), [[0, '0000:3b:02.1']], 'a VF another domain holds is skipped');
  t.same(await pick(emptyState(), [fromPool(0), named(1, member(0))]), [[1, '0000:3b:02.0'], [0, '0000:3b:02.1']],
    'a named VF is served first, so first fit cannot take it');
  t.same(await pick(held('other', 1), [fromPool(0), fromPool(1)]), [[0, '0000:3b:02.0'], [1, '0000:3b:02.2']], 'skips past the held one');
  t.same([...(await pickVfs(held42, emptyState(), [fromPool(0), fromPool(1)], members, 'vm1')).values()].map((m) => m.vf.address), ['0000:3b:02.0', '0000:3b:02.1'],
    'a VF whose vfio group a process holds is not picked');
});

t.test('pickVfs refusals', async (t) => {
  const run = (state: VfpoolState, rs: ResolvedRequest[], m = members, h = host) => pickVfs(h, state, rs, m, 'vm1').then(() => null, (e: unknown) => e as Error & { exitCode: number });
  let e = await run(emptyState(), [named(0, member(1)), named(1, member(1))]);
  t.ok(e instanceof BadInputError);
  t.equal(e?.message, "vfpool:hostdev #2: 0000:3b:02.1 is asked for twice in domain 'vm1'");
  e = await run(emptyState(), [named(0, member(5), POOL)]);
  t.equal(e?.message, "vfpool:hostdev #1: 0000:3b:02.5 is not a member of pool 'p'");
  e = await run(held('vm9', 1), [named(0, member(1))]);
  t.ok(e instanceof ConflictError);
  t.equal(e?.message, "vfpool:hostdev #1: VF 0000:3b:02.1 is in use by domain 'vm9'");
  e = await run(emptyState(), [named(0, member(2))], members, held42);
  t.equal(e?.message, 'vfpool:hostdev #1: VF 0000:3b:02.2 is in use by pid 777 holding /dev/vfio/42', 'a process holding the vfio group');
  e = await run(held('a', 0), [fromPool(0), fromPool(1), fromPool(2)]);
  t.equal(e?.exitCode, 3);
  t.match(e?.message, /^domain 'vm1': pool 'p' is exhausted, all 3 VFs are held \(VF 0000:3b:02\.0: domain 'a'; VF 0000:3b:02\.1: another request of this domain;/);
  e = await run(emptyState(), [fromPool(0)], async function* () {});
  t.equal(e?.message, "domain 'vm1': pool 'p' has no VFs on this host");
  // Active, but its VFs are gone (sriov_numvfs written by hand): starting it is no fix.
  const active = emptyState();
  active.pools.p = { xml: '<network/>', origin: 'definition', startedAt: '2026-12-01T00:00:00Z', activated: [], change: null, bound: [], libvirtStartRefused: null };
  e = await run(active, [fromPool(0)], async function* () {});
  t.equal(e?.exitCode, 3);
  t.equal(e?.message, "domain 'vm1': pool 'p' is active but has no VFs on this host (its PFs' sriov_numvfs changed outside vfpool, or its members are gone)");
  t.match((e as Error & { hint?: string }).hint, /^restart it \(`vfpool net-destroy p` then `vfpool net-start p`/);
  // Active on a PF without VFs, with no <vf num> to create any (the README's direct-network):
  // a restart changes nothing, so that is not the advice.
  const uncounted = { ...POOL, pfs: [{ dev: 'eth2' as NetdevName, numVfs: null }] };
  e = await pickVfs(host, active, [{ ...fromPool(0), pool: uncounted }], async function* () {}, 'vm1').then(() => null, (x: unknown) => x as Error & { exitCode: number });
  t.same([e?.exitCode, e?.message, (e as Error & { hint?: string }).hint], [3,
    "domain 'vm1': pool 'p' is active but has no VFs on this host (eth2 has none, and vfpool creates VFs only for a <pf> with <vf num>)",
    "give <pf dev='eth2'> a <vf num='N'/>, then restart the pool (`vfpool net-define FILE`, `vfpool net-destroy p`, `vfpool net-start p`)"]);
  e = await pickVfs(host, active, [{ ...fromPool(0), pool: { ...uncounted, origin: 'libvirt-metadata' } }], async function* () {}, 'vm1').then(() => null, (x: unknown) => x as Error & { exitCode: number });
  t.equal((e as Error & { hint?: string }).hint, "give <pf dev='eth2'> a <vf num='N'/>, then restart the pool (in its <vfpool:pool>: `virsh net-edit p`, `virsh net-destroy p`, `virsh net-start p`)", 'a pool a libvirt network carries');
  const listed = { ...POOL, pfs: [], interfaces: ['eth20' as NetdevName] };
  e = await pickVfs(host, active, [{ ...fromPool(0), pool: listed }], async function* () {}, 'vm1').then(() => null, (x: unknown) => x as Error & { exitCode: number });
  t.same([e?.message, (e as Error & { hint?: string }).hint], [
    "domain 'vm1': pool 'p' is active but has no VFs on this host (its <interface> and <address> members name no VF here)", 'check them against `vfpool status`']);
});

t.test('pickVfs reads the pool only up to the first free VF', async (t) => {
  let consumed = 0;
  const counting = async function* () {
    for (const m of MEMBERS) {
      consumed++;
      yield m;
    }
  };
  await pickVfs(host, held('other', 0), [fromPool(0)], counting, 'vm1');
  t.equal(consumed, 2, 'the held VF 0, then the free VF 1: VF 2 (and any later PF) is never read');
});
