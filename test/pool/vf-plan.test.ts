import t from 'tap';
import { BadInputError, ConflictError, HostError } from '../../src/errors.js';
import type { Allocation } from '../../src/state/schema.js';
import type { MacAddress, NetdevName, PciAddress, VfIndex, VfLinkConfig } from '../../src/types.js';
import { planVfConfigure, planVfRestore, type VfFacts, type VfWant } from '../../src/pool/vf-plan.js';
import { noVfSettings } from '../../src/vf-settings.js';

const PF = 'eth1' as NetdevName;
const VF = '0000:3b:02.1' as PciAddress;
const OLD_MAC = 'aa:bb:cc:00:00:01' as MacAddress;
const NEW_MAC = '52:54:00:00:00:01' as MacAddress;
const LINK: VfLinkConfig = { mac: OLD_MAC, vlan: 0, qos: 0, spoofchk: true, trust: false, linkState: 'auto', minTxRate: 0, maxTxRate: 0 };

function facts(o: { driver?: string | null; netdev?: string | null; group?: VfFacts['group']; up?: boolean; link?: Partial<VfLinkConfig>; mtu?: number | null } = {}): VfFacts {
  const driver = o.driver === undefined ? 'iavf' : o.driver;
  return {
    pf: { name: PF, address: '0000:3b:00.0' as PciAddress, totalVfs: 8, numVfs: 4, driver: 'ice', up: o.up ?? true, autoprobe: true },
    pfMtu: 1500,
    vf: { index: 1 as VfIndex, address: VF, netdev: (o.netdev === undefined ? 'eth1v1' : o.netdev) as NetdevName | null, driver, iommuGroup: '41' },
    link: { ...LINK, ...o.link },
    mtu: o.mtu === undefined ? 1500 : o.mtu,
    group: o.group ?? [{ address: VF, driver }],
  };
}
const want = (o: Partial<VfWant> = {}): VfWant => ({ ...noVfSettings(), mac: NEW_MAC, vfio: true, ...o });
const base = { pf: PF, vfIndex: 1, vfAddr: VF };

t.test('planVfConfigure: the steps, case by case', async (t) => {
  const cases: Array<[string, VfFacts, VfWant, unknown[], unknown]> = [
    ['hostdev: MAC, read back, vfio-pci', facts(), want(), [
      { kind: 'set-link', ...base, change: { mac: NEW_MAC }, undo: { mac: OLD_MAC } },
      { kind: 'verify-link', ...base, expect: { mac: NEW_MAC } },
      { kind: 'bind-driver', vfAddr: VF, driver: 'vfio-pci', undo: 'iavf', reason: 'the guest gets the VF through vfio' },
      { kind: 'verify-driver', pf: PF, vfAddr: VF, driver: 'vfio-pci' },
    ], { link: { mac: NEW_MAC }, mtu: null, driver: 'vfio-pci' }],
    ['already on vfio-pci with the MAC: only the read-back', facts({ driver: 'vfio-pci', netdev: null, link: { mac: NEW_MAC } }), want(), [
      { kind: 'verify-link', ...base, expect: { mac: NEW_MAC } },
    ], { link: { mac: NEW_MAC }, mtu: null, driver: null }],
    ['one attribute per step: vlan+qos, spoofchk, rates', facts({ driver: 'vfio-pci', link: { mac: NEW_MAC } }), want({ vlan: 10, qos: 3, spoofchk: false, maxTxRate: 500 }), [
      { kind: 'set-link', ...base, change: { vlan: 10, qos: 3 }, undo: { vlan: 0, qos: 0 } },
      { kind: 'set-link', ...base, change: { spoofchk: false }, undo: { spoofchk: true } },
      { kind: 'set-link', ...base, change: { minTxRate: 0, maxTxRate: 500 }, undo: { minTxRate: 0, maxTxRate: 0 } },
      { kind: 'verify-link', ...base, expect: { mac: NEW_MAC, vlan: 10, qos: 3, spoofchk: false, maxTxRate: 500 } },
    ], { link: { mac: NEW_MAC, vlan: 10, qos: 3, spoofchk: false, maxTxRate: 500 }, mtu: null, driver: null }],
    ['passthrough: MAC, MTU on the netdev, reload the host driver', facts(), want({ vfio: false, mtu: 9000 }), [
      { kind: 'set-link', ...base, change: { mac: NEW_MAC }, undo: { mac: OLD_MAC } },
      { kind: 'verify-link', ...base, expect: { mac: NEW_MAC } },
      { kind: 'set-mtu', pf: PF, vfAddr: VF, mtu: 9000, undo: 1500 },
      { kind: 'bind-driver', vfAddr: VF, driver: 'iavf', undo: 'iavf', reason: 'a bound VF driver reads the admin MAC only at probe' },
      { kind: 'verify-driver', pf: PF, vfAddr: VF, driver: 'iavf' },
    ], { link: { mac: NEW_MAC }, mtu: 9000, driver: 'iavf' }],
  ];
  for (const [name, f, w, steps, applied] of cases) {
    const r = planVfConfigure(f, w, 'W');
    t.same(r.steps, steps, `${name}: steps`);
    t.same(r.applied, applied, `${name}: applied`);
  }
});

t.test('planVfConfigure: every refusal comes before any step, with its exit code', async (t) => {
  const cases: Array<[string, VfFacts, VfWant, new (...a: never[]) => Error, number, RegExp]> = [
    ['PF down', facts({ up: false }), want(), HostError, 1, /^W: PF eth1 is down/],
    ['an MTU above the PF\'s is bad input', facts(), want({ mtu: 9000 }), BadInputError, 2, /^W: mtu 9000 is above PF eth1's MTU 1500/],
    ['a shared IOMMU group is a conflict', facts({ group: [{ address: VF, driver: 'iavf' }, { address: '0000:3b:02.2' as PciAddress, driver: 'iavf' }] }), want(), ConflictError, 3,
      /^W: IOMMU group 41 also holds 0000:3b:02\.2 \(driver iavf\), bound to a host driver/],
    ['passthrough without a netdev', facts({ netdev: null, driver: null }), want({ vfio: false }), HostError, 1, /^W: the VF has no host netdev \(driver none\)/],
  ];
  for (const [name, f, w, cls, code, re] of cases) {
    const err = t.throws(() => planVfConfigure(f, w, 'W'), name) as Error & { exitCode: number };
    t.ok(err instanceof cls, `${name}: ${cls.name}`);
    t.equal(err.exitCode, code, `${name}: exit ${code}`);
    t.match(err.message, re, name);
  }
});

function alloc(o: Partial<Allocation>): Allocation {
  return {
    pool: 'p', mode: 'hostdev', pf: PF, vfIndex: 1, vfAddr: VF, netdev: null, iommuGroup: '41',
    owner: { domain: 'vm1', uuid: null, pid: null, via: 'libvirt' }, mac: NEW_MAC, vlan: null, alias: 'vfpool-vf0', pairedMac: null,
    phase: 'releasing', worker: null,
    saved: { link: LINK, driver: 'iavf', mtu: 1500, netdev: 'eth1v1' as NetdevName },
    applied: { link: { mac: NEW_MAC }, mtu: null, driver: 'vfio-pci' },
    vfioOwner: null, guestSlot: 0, requestedNetdev: null, requested: null, createdAt: '2026-01-01T00:00:00Z', createdMonoMs: null, lastError: null, ...o,
  };
}

t.test('planVfRestore: only what vfpool changed and still differs, admin MAC before the driver', async (t) => {
  const onVfio = facts({ driver: 'vfio-pci', netdev: null, link: { mac: NEW_MAC, vlan: 10, qos: 3 } });
  const cases: Array<[string, Allocation, VfFacts, unknown[]]> = [
    ['nothing saved: nothing to do', alloc({ saved: null, applied: null }), onVfio, []],
    ['hostdev: vfio owner back, MAC, host driver', alloc({ vfioOwner: { saved: { uid: 0, gid: 0 }, granted: { uid: 64055, gid: 64055 } } }), onVfio, [
      { kind: 'set-vfio-owner', vfAddr: VF, group: '41', owner: { uid: 0, gid: 0 }, undo: { uid: 64055, gid: 64055 } },
      { kind: 'set-link', ...base, change: { mac: OLD_MAC }, undo: { mac: NEW_MAC } },
      { kind: 'verify-link', ...base, expect: { mac: OLD_MAC } },
      { kind: 'bind-driver', vfAddr: VF, driver: 'iavf', undo: 'vfio-pci', reason: 'its driver before vfpool' },
      { kind: 'verify-driver', pf: PF, vfAddr: VF, driver: 'iavf' },
    ]],
    ['vlan applied: put back after the driver, then read back', alloc({ applied: { link: { mac: NEW_MAC, vlan: 10, qos: 3 }, mtu: null, driver: 'vfio-pci' } }), onVfio, [
      { kind: 'set-link', ...base, change: { mac: OLD_MAC }, undo: { mac: NEW_MAC } },
      { kind: 'verify-link', ...base, expect: { mac: OLD_MAC } },
      { kind: 'bind-driver', vfAddr: VF, driver: 'iavf', undo: 'vfio-pci', reason: 'its driver before vfpool' },
      { kind: 'verify-driver', pf: PF, vfAddr: VF, driver: 'iavf' },
      { kind: 'set-link', ...base, change: { vlan: 0, qos: 0 }, undo: { vlan: 10, qos: 3 } },
      { kind: 'verify-link', ...base, expect: { vlan: 0, qos: 0 } },
    ]],
    ['a second restore finds nothing left', alloc({}), facts(), []],
    ['passthrough: the MAC back needs a reload of the host driver', alloc({ mode: 'passthrough', applied: { link: { mac: NEW_MAC }, mtu: 9000, driver: 'iavf' } }), facts({ link: { mac: NEW_MAC }, mtu: 9000 }), [
      { kind: 'set-link', ...base, change: { mac: OLD_MAC }, undo: { mac: NEW_MAC } },
      { kind: 'verify-link', ...base, expect: { mac: OLD_MAC } },
      { kind: 'bind-driver', vfAddr: VF, driver: 'iavf', undo: 'iavf', reason: 'reload so the netdev takes the MAC back' },
      { kind: 'verify-driver', pf: PF, vfAddr: VF, driver: 'iavf' },
      { kind: 'set-mtu', pf: PF, vfAddr: VF, mtu: 1500, undo: null },
    ]],
  ];
  for (const [name, a, f, steps] of cases) t.same(planVfRestore(a, f), steps, name);
});
