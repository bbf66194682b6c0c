/**
 * The Host behavioural suite: what vfpool relies on the kernel to do. It runs against the
 * simulated host, LinuxHost on a fixture sysfs tree, and LinuxHost on a real kernel's igb PF in
 * the lab (test/lab), so the simulation is held to the kernel's behaviour by the same assertions.
 */
import type { Test } from 'tap';
import { HostError } from '../../src/errors.js';
import type { Host, VfInfo } from '../../src/host/host.js';
import type { MacAddress, NetdevName } from '../../src/types.js';

export interface HostUnderTest {
  host: Host;
  pf: NetdevName;
  totalVfs: number;
  /** Makes a process hold the VF's /dev/vfio/GROUP open (QEMU in the lab); returns its pid and a release. */
  holdVfio(vf: VfInfo): Promise<{ pid: number; release: () => Promise<void> }>;
  /** Settings the PF's driver does not implement (igb: link-state). */
  unsupported?: Array<'linkState' | 'maxTxRate'>;
  /** Called after a test to put the PF back to 0 VFs. */
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
  const withHost = (name: string, fn: (t: Test, h: HostUnderTest) => Promise<void>) =>
    t.test(name, async (t) => {
      const h = await make(t);
      try {
        await fn(t, h);
      } finally {
        await h.cleanup?.();
      }
    });

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
    } finally {
      await holder.release();
    }
    t.notOk((await h.host.vfioGroupHolders(group)).includes(holder.pid), 'gone after release');
  });
}
