/**
 * The Host behavioural suite: what vfpool relies on the kernel to do. It runs against the
 * simulated host, LinuxHost on a fixture sysfs tree, and LinuxHost on a real kernel's igb PF in
 * the lab (test/lab), so the simulation is held to the kernel's behaviour by the same assertions.
 */
import type { Test } from 'tap';
import { eachWithFresh } from '../helpers/suite.js';
import { HostError } from '../../src/errors.js';
import type { Host, VfInfo } from '../../src/host/host.js';
import type { MacAddress, NetdevName, VfIndex } from '../../src/types.js';

const ZERO_MAC = '00:00:00:00:00:00' as MacAddress;
const VF0 = 0 as VfIndex;
const VF1 = 1 as VfIndex;

/**
 * What the PF's driver does with VF settings, beyond what the kernel's core decides: the
 * suite's expectations, per driver, written from what the lab's real kernel did (test/lab).
 */
export interface PfDriverFacts {
  /** The errno of `vf N state …`, or null when link-state can be set. */
  linkStateError: string | null;
  /** The errno of a non-zero min_tx_rate, or null when it can be set. */
  minTxRateError: string | null;
  /** max_tx_rate is checked against the PF's link: EINVAL while it is down, and above this speed (Mb/s). null: no such check. */
  rateLinkMbps: number | null;
  /** A VF probed while its PF is down is reported with the zero MAC (its driver could not tell the PF the MAC it chose). */
  vfMacNeedsPfUp: boolean;
  /** Each probe of the host VF driver brings a new random MAC when the PF set none. */
  newMacPerProbe: boolean;
  /** A VF netdev's MTU may be set above its PF's. */
  vfMtuAbovePf: boolean;
}

/**
 * Intel 82576, igb PF with igbvf VFs, Linux 6.12 (the lab): link-state "Operation not
 * supported"; igb_ndo_set_vf_bw refuses any min_tx_rate and checks max_tx_rate against the
 * link (EINVAL while down, even for 0); igbvf talks to the PF through a mailbox that is dead
 * while the PF is down ("PF still in reset state"); igb forgets a MAC the VF chose when the VF
 * resets, so igbvf makes up another at every probe; a VF's MTU is its own.
 */
export const IGB_FACTS: PfDriverFacts = {
  linkStateError: 'EOPNOTSUPP',
  minTxRateError: 'EINVAL',
  rateLinkMbps: 1000,
  vfMacNeedsPfUp: true,
  newMacPerProbe: true,
  vfMtuAbovePf: true,
};

export interface HostUnderTest {
  host: Host;
  /** An SR-IOV PF that is up and has 0 VFs (its link may still be coming up: see setPfUp). */
  pf: NetdevName;
  totalVfs: number;
  facts: PfDriverFacts;
  /** `ip link set PF up|down`; up waits (bounded) until the PF has its link. */
  setPfUp(up: boolean): Promise<void>;
  /** Makes a process hold the VF's /dev/vfio/GROUP open (QEMU in the lab); returns its pid and a release. */
  holdVfio(vf: VfInfo): Promise<{ pid: number; release: () => Promise<void> }>;
  /** Stacks a device on a VF's netdev (a macvtap in passthrough mode, as libvirt's `<interface type='direct'>` makes). */
  stackOnNetdev(netdev: NetdevName): Promise<{ upper: string; release: () => Promise<void> }>;
  /** Called after a test to put the PF back: up, 0 VFs. */
  cleanup?: () => Promise<void>;
}

export type HostFactory = (t: Test) => Promise<HostUnderTest>;

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err instanceof HostError ? err.code : `not a HostError: ${(err as Error).message}`;
  }
}

/** The kernel creates VFs asynchronously on real hardware: wait (bounded) for the links. */
export async function waitForVfs(host: Host, pf: NetdevName, count: number, probed: boolean): Promise<VfInfo[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const vfs = await host.listVfs(pf);
    if (vfs.length === count && (!probed || vfs.every((v) => v.netdev !== null))) return vfs;
    if (Date.now() > deadline) return vfs;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function hostSuite(t: Test, make: HostFactory): void {
  const withHost = eachWithFresh(t, make);

  withHost('the PF is found with its SR-IOV capability and no VFs', async (t, h) => {
    const pf = await h.host.getPf(h.pf);
    t.equal(pf.name, h.pf);
    t.equal(pf.totalVfs, h.totalVfs, 'sriov_totalvfs');
    t.equal(pf.numVfs, 0, 'sriov_numvfs');
    t.match(pf.address, /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/);
    t.ok((await h.host.listPfs()).includes(h.pf), 'listPfs names it');
    t.same(await h.host.listVfs(h.pf), []);
  });

  withHost('a missing PF is ENOENT', async (t, h) => {
    t.equal(await codeOf(h.host.getPf('nosuchpf0' as NetdevName)), 'ENOENT');
  });

  withHost('0 -> 2 creates VFs with links both ways, netdevs, drivers and own IOMMU groups', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    const vfs = await waitForVfs(h.host, h.pf, 2, true);
    t.equal((await h.host.getPf(h.pf)).numVfs, 2);
    t.same(vfs.map((v) => v.index), [0, 1]);
    t.not(vfs[0]!.address, vfs[1]!.address);
    for (const vf of vfs) {
      t.ok(vf.netdev, `VF ${vf.index} has a netdev`);
      t.ok(vf.driver, `VF ${vf.index} has a host driver`);
      t.ok(vf.iommuGroup, `VF ${vf.index} has an IOMMU group`);
      t.equal(await h.host.physfnOf(vf.address), h.pf, 'physfn leads back to the PF');
      t.equal(await h.host.netdevDevice(vf.netdev!), vf.address, 'the netdev\'s device is the VF');
    }
    t.not(vfs[0]!.iommuGroup, vfs[1]!.iommuGroup, 'each VF in its own IOMMU group');
    for (const vf of vfs) {
      t.same(await h.host.iommuGroupDevices(vf.iommuGroup!), [{ address: vf.address, driver: vf.driver }],
        `VF ${vf.index}'s IOMMU group lists it, with its driver, and nothing else`);
    }
    t.equal(await h.host.physfnOf((await h.host.getPf(h.pf)).address), null, 'a PF has no physfn');
  });

  withHost('a different non-zero count over a non-zero count is EBUSY and changes nothing', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    await waitForVfs(h.host, h.pf, 2, true);
    t.equal(await codeOf(h.host.writeNumVfs(h.pf, 3)), 'EBUSY');
    t.equal((await h.host.getPf(h.pf)).numVfs, 2);
    t.equal((await h.host.listVfs(h.pf)).length, 2);
  });

  withHost('the same count again is accepted and changes nothing', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    const before = await waitForVfs(h.host, h.pf, 2, true);
    await h.host.writeNumVfs(h.pf, 2);
    t.same(await h.host.listVfs(h.pf), before);
  });

  withHost('a count above sriov_totalvfs is ERANGE', async (t, h) => {
    t.equal(await codeOf(h.host.writeNumVfs(h.pf, h.totalVfs + 1)), 'ERANGE');
    t.equal((await h.host.getPf(h.pf)).numVfs, 0);
  });

  withHost('0 removes every VF, then a new count works', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    await waitForVfs(h.host, h.pf, 2, true);
    await h.host.writeNumVfs(h.pf, 0);
    t.same(await waitForVfs(h.host, h.pf, 0, false), []);
    await h.host.writeNumVfs(h.pf, 3);
    t.equal((await waitForVfs(h.host, h.pf, 3, true)).length, 3);
  });

  withHost('VF settings are set through the PF and read back', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    await waitForVfs(h.host, h.pf, 2, true);
    const mac = '52:54:00:12:34:56' as MacAddress;
    await h.host.setVfLink(h.pf, 0 as never, { mac, vlan: 100, qos: 3, spoofchk: false, trust: true });
    const links = await h.host.getVfLinks(h.pf);
    const vf0 = links.get(0)!;
    t.equal(vf0.mac, mac);
    t.equal(vf0.vlan, 100);
    t.equal(vf0.qos, 3);
    t.equal(vf0.spoofchk, false);
    t.equal(vf0.trust, true);
    t.equal(links.get(1)!.vlan, 0, 'the other VF is untouched');
    // iproute2 sends a VLAN with qos 0 when none is given: a new VLAN does not inherit the old qos.
    await h.host.setVfLink(h.pf, 0 as never, { vlan: 200 });
    t.same([(await h.host.getVfLinks(h.pf)).get(0)!.vlan, (await h.host.getVfLinks(h.pf)).get(0)!.qos], [200, 0], 'VLAN 200 alone: qos back to 0');
    await h.host.setVfLink(h.pf, 0 as never, { vlan: 0, spoofchk: true, trust: false });
    const after = (await h.host.getVfLinks(h.pf)).get(0)!;
    t.equal(after.vlan, 0, 'VLAN 0 clears the VLAN');
    t.equal(after.qos, 0, 'and its qos');
    t.equal(after.spoofchk, true);
    t.equal(after.trust, false);
    t.equal(after.mac, mac, 'MAC kept');
  });

  withHost('settings made through the PF are gone after 0 -> N', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    await waitForVfs(h.host, h.pf, 1, true);
    await h.host.setVfLink(h.pf, 0 as never, { mac: '52:54:00:12:34:57' as MacAddress, vlan: 7 });
    await h.host.writeNumVfs(h.pf, 0);
    await waitForVfs(h.host, h.pf, 0, false);
    await h.host.writeNumVfs(h.pf, 1);
    await waitForVfs(h.host, h.pf, 1, true);
    const vf0 = (await h.host.getVfLinks(h.pf)).get(0)!;
    t.not(vf0.mac, '52:54:00:12:34:57');
    t.equal(vf0.vlan, 0);
  });

  withHost('binding to a driver that is not loaded fails before anything changes', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    const [vf] = await waitForVfs(h.host, h.pf, 1, true);
    t.equal(await codeOf(h.host.bindDriver(vf!.address, 'vfpool-no-such-driver')), 'ENODEV');
    const after = (await h.host.listVfs(h.pf))[0]!;
    t.same([after.driver, after.netdev], [vf!.driver, vf!.netdev], 'still on its host driver, netdev and all');
  });

  withHost('binding to vfio-pci and back through driver_override', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    const [vf] = await waitForVfs(h.host, h.pf, 1, true);
    const hostDriver = vf!.driver;
    await h.host.bindDriver(vf!.address, 'vfio-pci');
    const bound = (await h.host.listVfs(h.pf))[0]!;
    t.equal(bound.driver, 'vfio-pci');
    t.equal(bound.netdev, null, 'no netdev while on vfio-pci');
    t.ok(await h.host.getVfioGroupOwner(bound.iommuGroup!), '/dev/vfio/GROUP exists');
    await h.host.bindDriver(vf!.address, hostDriver);
    const back = (await waitForVfs(h.host, h.pf, 1, true))[0]!;
    t.equal(back.driver, hostDriver);
    t.ok(back.netdev, 'netdev back with the host driver');
  });

  withHost('a process holding /dev/vfio/GROUP is seen as its holder', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    const [vf] = await waitForVfs(h.host, h.pf, 1, true);
    await h.host.bindDriver(vf!.address, 'vfio-pci');
    const group = (await h.host.listVfs(h.pf))[0]!.iommuGroup!;
    t.same(await h.host.vfioGroupHolders(group), [], 'nobody holds it yet');
    const holder = await h.holdVfio((await h.host.listVfs(h.pf))[0]!);
    try {
      t.ok((await h.host.vfioGroupHolders(group)).includes(holder.pid), 'the holder is listed');
      t.ok((await h.host.vfioHolders()).get(group)?.includes(holder.pid), 'and in the one-pass map of every held group');
    } finally {
      await holder.release();
    }
    t.notOk((await h.host.vfioGroupHolders(group)).includes(holder.pid), 'gone after release');
  });

  withHost('a device stacked on a VF\'s netdev (a guest\'s macvtap) is listed as its upper device', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    const [vf] = await waitForVfs(h.host, h.pf, 1, true);
    const netdev = vf!.netdev!;
    t.notOk((await h.host.stackedDevices()).has(netdev), 'none yet');
    const stacked = await h.stackOnNetdev(netdev);
    try {
      const all = await h.host.stackedDevices();
      t.same(all.get(netdev), [stacked.upper], 'the macvtap is listed');
      t.notOk(all.has(h.pf), 'not on the PF');
    } finally {
      await stacked.release();
    }
    t.notOk((await h.host.stackedDevices()).has(netdev), 'gone once it is deleted');
  });

  withHost('one request is applied in the kernel\'s order up to the first refused setting', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    await waitForVfs(h.host, h.pf, 1, true);
    const mac = '52:54:00:12:34:60' as MacAddress;
    // rtnetlink handles MAC, VLAN, rate, spoofchk, link-state, trust in that order and stops at
    // the first refusal, keeping what came before: one setting per request is how vfpool
    // knows exactly what to undo.
    t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { mac, vlan: 5, qos: 8 })), 'EINVAL', 'qos 8 is refused');
    let vf0 = (await h.host.getVfLinks(h.pf)).get(0)!;
    t.equal(vf0.mac, mac, 'the MAC, before the VLAN, was applied and stays');
    t.equal(vf0.vlan, 0, 'the VLAN was not applied');
    if (h.facts.linkStateError) {
      t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { trust: true, linkState: 'enable' })), h.facts.linkStateError, 'link-state is refused');
      vf0 = (await h.host.getVfLinks(h.pf)).get(0)!;
      t.equal(vf0.trust, false, 'trust, after link-state, was not applied');
      t.not(vf0.linkState, 'enable', 'link-state unchanged');
    } else {
      await h.host.setVfLink(h.pf, VF0, { linkState: 'disable' });
      t.equal((await h.host.getVfLinks(h.pf)).get(0)!.linkState, 'disable', 'link-state set and read back');
    }
  });

  withHost('refused VF settings are EINVAL and change nothing', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    await waitForVfs(h.host, h.pf, 1, true);
    const before = (await h.host.getVfLinks(h.pf)).get(0)!;
    t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { mac: '01:00:5e:00:00:01' as MacAddress })), 'EINVAL', 'a multicast MAC');
    t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { vlan: 4096 })), 'EINVAL', 'VLAN 4096');
    t.equal(await codeOf(h.host.setVfLink(h.pf, 5 as VfIndex, { vlan: 1 })), 'EINVAL', 'a VF index past sriov_numvfs');
    t.same((await h.host.getVfLinks(h.pf)).get(0), before, 'VF 0 unchanged');
  });

  withHost('rates: max_tx_rate set and cleared with the PF\'s link up; min_tx_rate as the driver allows', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    await waitForVfs(h.host, h.pf, 1, true);
    // igb re-opens the PF when VFs are enabled: its link drops for a moment, and rates are
    // refused until it is back.
    await h.setPfUp(true);
    await h.host.setVfLink(h.pf, VF0, { maxTxRate: 100 });
    t.equal((await h.host.getVfLinks(h.pf)).get(0)!.maxTxRate, 100, 'max_tx_rate 100 read back');
    if (h.facts.rateLinkMbps !== null) {
      t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { maxTxRate: h.facts.rateLinkMbps + 1 })), 'EINVAL', 'above the link speed');
      t.equal((await h.host.getVfLinks(h.pf)).get(0)!.maxTxRate, 100, 'unchanged');
    }
    if (h.facts.minTxRateError) {
      t.equal(await codeOf(h.host.setVfLink(h.pf, VF0, { spoofchk: false, minTxRate: 10 })), h.facts.minTxRateError, 'min_tx_rate 10 refused');
      const vf0 = (await h.host.getVfLinks(h.pf)).get(0)!;
      t.equal(vf0.minTxRate, 0, 'min_tx_rate unchanged');
      t.equal(vf0.spoofchk, true, 'spoofchk, after the rate, was not applied');
    } else {
      await h.host.setVfLink(h.pf, VF0, { minTxRate: 10 });
      t.equal((await h.host.getVfLinks(h.pf)).get(0)!.minTxRate, 10, 'min_tx_rate 10 read back');
      await h.host.setVfLink(h.pf, VF0, { minTxRate: 0 });
    }
    await h.host.setVfLink(h.pf, VF0, { maxTxRate: 0 });
    t.equal((await h.host.getVfLinks(h.pf)).get(0)!.maxTxRate, 0, 'max_tx_rate 0 clears it');
  });

  withHost('with the PF down: VFs are created and take settings, as the driver allows', async (t, h) => {
    await h.setPfUp(false);
    t.equal((await h.host.getPf(h.pf)).up, false, 'getPf reports the PF down');
    await h.host.writeNumVfs(h.pf, 2);
    const vfs = await waitForVfs(h.host, h.pf, 2, true);
    t.ok(vfs.length === 2 && vfs.every((v) => v.netdev !== null), 'both VFs have their host driver and a netdev');
    const macs = [...(await h.host.getVfLinks(h.pf)).values()].map((l) => l.mac);
    if (h.facts.vfMacNeedsPfUp) t.same(macs, [ZERO_MAC, ZERO_MAC], 'the PF reports the zero MAC: the VF driver could not tell it the one it made up');
    else t.ok(macs.length === 2 && macs.every((m) => m !== ZERO_MAC), 'the PF reports the MACs the VF driver made up');
    const mac = '52:54:00:12:34:61' as MacAddress;
    await h.host.setVfLink(h.pf, VF1, { mac, vlan: 7 });
    const vf1 = (await h.host.getVfLinks(h.pf)).get(1)!;
    t.same([vf1.mac, vf1.vlan], [mac, 7], 'MAC and VLAN set through the down PF and read back');
    if (h.facts.rateLinkMbps !== null) {
      t.equal(await codeOf(h.host.setVfLink(h.pf, VF1, { maxTxRate: 100 })), 'EINVAL', 'max_tx_rate refused without a link');
    } else {
      await h.host.setVfLink(h.pf, VF1, { maxTxRate: 100 });
      t.equal((await h.host.getVfLinks(h.pf)).get(1)!.maxTxRate, 100, 'max_tx_rate set without a link');
    }
    await h.setPfUp(true);
    t.equal((await h.host.getPf(h.pf)).up, true, 'getPf reports the PF up again');
  });

  withHost('reprobing the host VF driver keeps an admin MAC; without one the VF driver picks its own', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 2);
    const vfs = await waitForVfs(h.host, h.pf, 2, true);
    const before = await h.host.getVfLinks(h.pf);
    t.not(before.get(1)!.mac, ZERO_MAC, 'probed with the PF up, the VF driver told the PF the MAC it made up');
    const mac = '52:54:00:12:34:62' as MacAddress;
    await h.host.setVfLink(h.pf, VF0, { mac });
    for (const vf of vfs) await h.host.bindDriver(vf.address, vf.driver);
    await waitForVfs(h.host, h.pf, 2, true);
    const after = await h.host.getVfLinks(h.pf);
    t.equal(after.get(0)!.mac, mac, 'the admin MAC survives a reprobe');
    t.not(after.get(1)!.mac, ZERO_MAC, 'the VF without an admin MAC has one again');
    if (h.facts.newMacPerProbe) t.not(after.get(1)!.mac, before.get(1)!.mac, 'a new random one');
    else t.equal(after.get(1)!.mac, before.get(1)!.mac, 'the one it had');
    await h.host.setVfLink(h.pf, VF0, { mac: ZERO_MAC });
    t.equal((await h.host.getVfLinks(h.pf)).get(0)!.mac, ZERO_MAC, 'the zero MAC removes the admin MAC');
    await h.host.bindDriver(vfs[0]!.address, vfs[0]!.driver);
    await waitForVfs(h.host, h.pf, 2, true);
    const reprobed = (await h.host.getVfLinks(h.pf)).get(0)!.mac;
    t.ok(reprobed !== ZERO_MAC && reprobed !== mac, `then the VF driver picks its own at the next probe (${reprobed})`);
  });

  withHost('MTU: a VF netdev\'s own, set and read back; above its PF\'s as the driver allows', async (t, h) => {
    await h.host.writeNumVfs(h.pf, 1);
    const [vf] = await waitForVfs(h.host, h.pf, 1, true);
    const netdev = vf!.netdev!;
    const pfMtu = await h.host.getMtu(h.pf);
    await h.host.setMtu(netdev, pfMtu - 100);
    t.equal(await h.host.getMtu(netdev), pfMtu - 100, 'lower than the PF\'s');
    if (h.facts.vfMtuAbovePf) {
      await h.host.setMtu(netdev, pfMtu + 500);
      t.equal(await h.host.getMtu(netdev), pfMtu + 500, 'above the PF\'s: accepted');
    } else {
      t.equal(await codeOf(h.host.setMtu(netdev, pfMtu + 500)), 'EINVAL', 'above the PF\'s: refused');
      t.equal(await h.host.getMtu(netdev), pfMtu - 100, 'unchanged');
    }
    t.equal(await h.host.getMtu(h.pf), pfMtu, 'the PF keeps its MTU');
  });
}
