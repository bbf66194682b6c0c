import t from 'tap';
import { BadInputError, ConflictError } from '../../src/errors.js';
import type { PoolSpec } from '../../src/config/pool-xml.js';
import type { VfInfo } from '../../src/host/host.js';
import type { NetdevName, PciAddress, VfIndex } from '../../src/types.js';
import { boundByPlan, planPoolStart, planPoolStop, type PfFacts, type PoolUse } from '../../src/pool/activation.js';
import { describeAction } from '../../src/pool/plan.js';
import type { VfUse } from '../../src/pool/in-use.js';

const PF = 'eth1' as NetdevName;
const vf = (i: number, driver: string | null): VfInfo => ({ index: i as VfIndex, address: `0000:3b:02.${i}` as PciAddress, netdev: null, driver, iommuGroup: String(40 + i) });
const pool = (o: Partial<PoolSpec> = {}): PoolSpec => ({
  name: 'p', mode: 'hostdev', managed: false, pfs: [{ dev: PF, numVfs: 4 }], interfaces: [], addresses: [], vlan: null, origin: 'definition', ...o,
});
function facts(numVfs: number, vfs: VfInfo[], used: Record<string, VfUse[]> = {}): Map<NetdevName, PfFacts> {
  return new Map([[PF, { info: { name: PF, address: '0000:3b:00.0' as PciAddress, totalVfs: 8, numVfs, driver: 'ice', up: true, autoprobe: true }, vfs, uses: new Map(Object.entries(used)) }]]);
}
const guest: VfUse[] = [{ by: 'allocation', who: "domain 'vm1'" }];
const ALL: PoolUse = new Map([[PF, 'all']]);
const NOBODY = new Map<NetdevName, string[]>();

t.test('planPoolStart, case by case', async (t) => {
  const cases: Array<[string, PoolSpec, Map<NetdevName, PfFacts>, unknown[], string[]]> = [
    ['0 -> 4', pool(), facts(0, []), [
      { kind: 'write-numvfs', pf: PF, from: 0, to: 4 },
      { kind: 'await-vfs', pf: PF, count: 4, probed: true },
    ], ['eth1: write 4 to sriov_numvfs (now 0)', 'eth1: wait until 4 VFs exist with their host driver']],
    ['2 -> 4 goes through 0', pool(), facts(2, [vf(0, 'iavf'), vf(1, 'iavf')]), [
      { kind: 'write-numvfs', pf: PF, from: 2, to: 0 },
      { kind: 'write-numvfs', pf: PF, from: 0, to: 4 },
      { kind: 'await-vfs', pf: PF, count: 4, probed: true },
    ], ['eth1: write 0 to sriov_numvfs (now 2)', 'eth1: write 4 to sriov_numvfs (now 0)', 'eth1: wait until 4 VFs exist with their host driver']],
    ['N -> N: nothing', pool(), facts(4, [vf(0, 'iavf')]), [], []],
    ['no <vf num>: the count is left alone', pool({ pfs: [{ dev: PF, numVfs: null }] }), facts(2, []), [], []],
    ['managed, count changes: the VFs created are bound', pool({ managed: true }), facts(0, []), [
      { kind: 'write-numvfs', pf: PF, from: 0, to: 4 },
      { kind: 'await-vfs', pf: PF, count: 4, probed: true },
      { kind: 'bind-vfs', pf: PF, driver: 'vfio-pci', vfs: 'created', skip: [] },
    ], ['eth1: write 4 to sriov_numvfs (now 0)', 'eth1: wait until 4 VFs exist with their host driver', 'eth1: bind the VFs just created to vfio-pci']],
    ['managed, N -> N: which VFs is decided now, in-use and bound ones left out',
      pool({ managed: true }), facts(4, [vf(0, 'vfio-pci'), vf(1, 'iavf'), vf(2, 'iavf'), vf(3, null)], { '0000:3b:02.2': guest }), [
        { kind: 'bind-vfs', pf: PF, driver: 'vfio-pci', vfs: ['0000:3b:02.1', '0000:3b:02.3'], skip: ['0000:3b:02.2'] },
      ], ['eth1: bind VFs 0000:3b:02.1, 0000:3b:02.3 to vfio-pci (0000:3b:02.2 in use, left alone)']],
    ['managed passthrough: no vfio binding', pool({ managed: true, mode: 'passthrough' }), facts(4, [vf(0, 'iavf')]), [], []],
  ];
  for (const [name, p, f, actions, lines] of cases) {
    const got = planPoolStart(p, f, ALL, NOBODY);
    t.same(got, actions, name);
    t.same(got.map(describeAction), lines, `${name}: as --dry-run prints it`);
  }
});

t.test('planPoolStart refusals', async (t) => {
  const bad = t.throws(() => planPoolStart(pool({ pfs: [{ dev: PF, numVfs: 9 }] }), facts(0, []), ALL, NOBODY)) as BadInputError;
  t.ok(bad instanceof BadInputError);
  t.equal(bad.toLine(), "pool 'p': <vf num='9'> on PF eth1 is more than its sriov_totalvfs 8: lower num to at most 8");
  const err = t.throws(() => planPoolStart(pool(), facts(2, [vf(0, 'iavf'), vf(1, 'vfio-pci')], { '0000:3b:02.1': guest }), ALL, NOBODY)) as ConflictError;
  t.ok(err instanceof ConflictError);
  t.match(err.message, /^pool 'p': cannot change eth1 from 2 to 4 VFs: /);
  // Another active pool draws from the PF: a new count would replace its VFs, free ones included.
  const shared = t.throws(() => planPoolStart(pool(), facts(2, [vf(0, 'iavf'), vf(1, 'iavf')]), ALL, new Map([[PF, ['a']]]))) as ConflictError;
  t.ok(shared instanceof ConflictError);
  t.equal(shared.toLine(), "pool 'p': cannot change eth1 from 2 to 4 VFs: active pool 'a' draws from it: stop pool 'a' first, or give both pools the same <vf num>");
  t.same(planPoolStart(pool({ pfs: [{ dev: PF, numVfs: 2 }] }), facts(2, [vf(0, 'iavf'), vf(1, 'iavf')]), ALL, new Map([[PF, ['a']]])), [], 'the same count as now: nothing changes, nothing to refuse');
});

t.test('planPoolStart, managed: every member is bound, a listed VF only itself', async (t) => {
  const listed = (...i: number[]): PoolUse => new Map([[PF, i.map((n) => `0000:3b:02.${n}` as PciAddress)]]);
  const members = pool({ managed: true, pfs: [], interfaces: ['eth1v1' as NetdevName], addresses: ['0000:3b:02.3' as PciAddress] });
  const f = facts(4, [vf(0, 'iavf'), vf(1, 'iavf'), vf(2, 'iavf'), vf(3, 'iavf')]);
  const actions = planPoolStart(members, f, listed(1, 3), NOBODY);
  t.same(actions, [{ kind: 'bind-vfs', pf: PF, driver: 'vfio-pci', vfs: ['0000:3b:02.1', '0000:3b:02.3'], skip: [] }], 'only the listed VFs, not their PF\'s others');
  t.same(boundByPlan(actions, f), [
    { pf: PF, vf: '0000:3b:02.1', driver: 'iavf', netdev: null },
    { pf: PF, vf: '0000:3b:02.3', driver: 'iavf', netdev: null },
  ], 'recorded with the driver they had, for the stop');
  const created = planPoolStart(pool({ managed: true }), facts(0, []), ALL, NOBODY);
  t.same(boundByPlan(created, facts(0, [])), [], 'VFs the start creates are removed at the stop, not rebound');
  t.same(planPoolStart(pool({ managed: true, pfs: [{ dev: PF, numVfs: null }] }), facts(0, []), ALL, NOBODY), [], 'a PF with no VFs: nothing to bind, no step that says they are bound');
});

t.test('planPoolStop, case by case', async (t) => {
  t.same(planPoolStop(pool(), [PF], facts(4, [vf(0, 'iavf')]), { refuse: true }), {
    actions: [{ kind: 'write-numvfs', pf: PF, from: 4, to: 0 }, { kind: 'await-vfs', pf: PF, count: 0, probed: false }],
    kept: [],
    shared: [],
  }, 'free VFs are removed');
  t.same(planPoolStop(pool(), [PF], facts(0, []), { refuse: true }), { actions: [], kept: [], shared: [] }, 'no VFs: nothing to do');
  t.same(planPoolStop(pool(), [], facts(4, []), { refuse: true }), { actions: [], kept: [], shared: [] }, 'a PF vfpool did not activate is left alone');
  t.same(planPoolStop(pool(), [PF], facts(4, [vf(0, 'iavf')]), { refuse: true, sharers: new Map([[PF, ['a']]]) }), {
    actions: [],
    kept: [],
    shared: [{ pf: PF, reason: "eth1 keeps its 4 VFs: active pool 'a' draws from it" }],
  }, 'another active pool draws from the PF: its VFs stay, and that is no refusal');
  const busy = facts(4, [vf(0, 'vfio-pci')], { '0000:3b:02.0': guest });
  const kept = planPoolStop(pool(), [PF], busy, { refuse: false });
  t.same(kept.actions, [], 'libvirt\'s stop cannot fail: the PF is kept');
  t.equal(kept.kept.length, 1);
  t.match(kept.kept[0]!.reason, /^eth1 keeps its 4 VFs: /);
  const err = t.throws(() => planPoolStop(pool(), [PF], busy, { refuse: true })) as ConflictError;
  t.equal(err.exitCode, 3);
  t.match(err.message, /^pool 'p': cannot remove VFs: eth1 keeps its 4 VFs/);
});

t.test('planPoolStop gives the VFs the start bound their driver back, unless they go or are in use', async (t) => {
  const bound = [0, 1, 2].map((i) => ({ pf: PF, vf: `0000:3b:02.${i}` as PciAddress, driver: i === 2 ? null : 'iavf', netdev: `eth1v${i}` as NetdevName }));
  const f = facts(4, [vf(0, 'vfio-pci'), vf(1, 'vfio-pci'), vf(2, 'vfio-pci'), vf(3, 'vfio-pci')], { '0000:3b:02.1': guest });
  const noCount = pool({ managed: true, pfs: [{ dev: PF, numVfs: null }] });
  const plan = planPoolStop(noCount, [], f, { refuse: true, bound });
  t.same(plan.actions, [
    { kind: 'bind-vfs', pf: PF, driver: 'iavf', vfs: ['0000:3b:02.0'], skip: [] },
    { kind: 'bind-vfs', pf: PF, driver: null, vfs: ['0000:3b:02.2'], skip: [] },
  ], 'the free ones, each to its own driver; the one in use stays (its release puts back what it saved)');
  t.same(plan.actions.map(describeAction), ['eth1: bind VF 0000:3b:02.0 to iavf', 'eth1: bind VF 0000:3b:02.2 to no driver (as before the start)']);
  t.same(planPoolStop(pool({ managed: true }), [PF], facts(4, [vf(0, 'vfio-pci')]), { refuse: true, bound }).actions.map((a) => a.kind), ['write-numvfs', 'await-vfs'], 'VFs that are removed are not rebound first');
  t.same(planPoolStop(noCount, [], f, { refuse: true, bound, sharers: new Map([[PF, ['a']]]), vfioKept: new Map([[PF, 'all']]) }).actions, [], 'another active pool binds the PF\'s VFs to vfio-pci: left as they are');
  // A pool that only shares the PF (passthrough: macvtap needs the VF's host netdev) gets them back.
  t.same(planPoolStop(noCount, [], f, { refuse: true, bound, sharers: new Map([[PF, ['mvtap']]]), vfioKept: new Map() }).actions, plan.actions, 'a sharer that wants no vfio-pci: given back');
  t.same(planPoolStop(noCount, [], f, { refuse: true, bound, sharers: new Map([[PF, ['a']]]), vfioKept: new Map([[PF, ['0000:3b:02.0' as PciAddress]]]) }).actions,
    [{ kind: 'bind-vfs', pf: PF, driver: null, vfs: ['0000:3b:02.2'], skip: [] }], 'only the VFs the other pool lists stay on vfio-pci');
});
