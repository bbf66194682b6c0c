import t from 'tap';
import { BadInputError, ConflictError } from '../../src/errors.js';
import type { PoolSpec } from '../../src/config/pool-xml.js';
import type { VfInfo } from '../../src/host/host.js';
import type { NetdevName, PciAddress, VfIndex } from '../../src/types.js';
import { planPoolStart, planPoolStop, type PfFacts } from '../../src/pool/activation.js';
import { describeAction } from '../../src/pool/plan.js';
import type { VfUse } from '../../src/pool/in-use.js';

const PF = 'eth1' as NetdevName;
const vf = (i: number, driver: string | null): VfInfo => ({ index: i as VfIndex, address: `0000:3b:02.${i}` as PciAddress, netdev: null, driver, iommuGroup: String(40 + i) });
const pool = (o: Partial<PoolSpec> = {}): PoolSpec => ({
  name: 'p', mode: 'hostdev', managed: false, pfs: [{ dev: PF, numVfs: 4 }], interfaces: [], addresses: [], origin: 'definition', ...o,
});
function facts(numVfs: number, vfs: VfInfo[], used: Record<string, VfUse[]> = {}): Map<NetdevName, PfFacts> {
  return new Map([[PF, { info: { name: PF, address: '0000:3b:00.0' as PciAddress, totalVfs: 8, numVfs, driver: 'ice', up: true, autoprobe: true }, vfs, uses: new Map(Object.entries(used)) }]]);
}
const guest: VfUse[] = [{ by: 'allocation', who: "domain 'vm1'" }];

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
    const got = planPoolStart(p, f);
    t.same(got, actions, name);
    t.same(got.map(describeAction), lines, `${name}: as --dry-run prints it`);
  }
});

t.test('planPoolStart refusals', async (t) => {
  const bad = t.throws(() => planPoolStart(pool({ pfs: [{ dev: PF, numVfs: 9 }] }), facts(0, []))) as BadInputError;
  t.ok(bad instanceof BadInputError);
  t.equal(bad.toLine(), "pool 'p': <vf num='9'> on PF eth1 is more than its sriov_totalvfs 8: lower num to at most 8");
  const err = t.throws(() => planPoolStart(pool(), facts(2, [vf(0, 'iavf'), vf(1, 'vfio-pci')], { '0000:3b:02.1': guest }))) as ConflictError;
  t.ok(err instanceof ConflictError);
  t.match(err.message, /^pool 'p': cannot change eth1 from 2 to 4 VFs: /);
});

t.test('planPoolStop, case by case', async (t) => {
  t.same(planPoolStop(pool(), [PF], facts(4, [vf(0, 'iavf')]), { refuse: true }), {
    actions: [{ kind: 'write-numvfs', pf: PF, from: 4, to: 0 }, { kind: 'await-vfs', pf: PF, count: 0, probed: false }],
    kept: [],
  }, 'free VFs are removed');
  t.same(planPoolStop(pool(), [PF], facts(0, []), { refuse: true }), { actions: [], kept: [] }, 'no VFs: nothing to do');
  t.same(planPoolStop(pool(), [], facts(4, []), { refuse: true }), { actions: [], kept: [] }, 'a PF vfpool did not activate is left alone');
  const busy = facts(4, [vf(0, 'vfio-pci')], { '0000:3b:02.0': guest });
  const kept = planPoolStop(pool(), [PF], busy, { refuse: false });
  t.same(kept.actions, [], 'libvirt\'s stop cannot fail: the PF is kept');
  t.equal(kept.kept.length, 1);
  t.match(kept.kept[0]!.reason, /^eth1 keeps its 4 VFs: /);
  const err = t.throws(() => planPoolStop(pool(), [PF], busy, { refuse: true })) as ConflictError;
  t.equal(err.exitCode, 3);
  t.match(err.message, /^pool 'p': cannot remove VFs: eth1 keeps its 4 VFs/);
});
