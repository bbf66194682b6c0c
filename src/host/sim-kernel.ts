import { BadInputError, HostError } from '../errors.js';
import type { LinkState, VfLinkChange } from './host.js';
import { isAlive } from '../util/process.js';
import { newBootId } from './sim-boot.js';

/**
 * The simulated kernel: SR-IOV semantics as Linux implements them, on plain JSON-able data.
 * It models, and test/host/host-suite.ts checks against the real kernel in the lab:
 * - `sriov_numvfs`: a count above `sriov_totalvfs` is ERANGE; a different non-zero count over a
 *   non-zero count is EBUSY ("N VFs already enabled. Disable before enabling M VFs"); the same
 *   count again is a no-op; 0 removes every VF and every setting made through the PF.
 * - VF routing IDs at the PF's First VF Offset and VF Stride (igb: 128 and 2).
 * - New VFs are probed by their host driver (`sriov_drivers_autoprobe`): they get a netdev and a
 *   random MAC; without a driver they show 00:00:00:00:00:00.
 * - `driver_override` + unbind + `drivers_probe` binding; vfio-pci gives no netdev.
 * - VF settings (MAC, VLAN/qos, spoofchk, trust, link-state, rates) only through the PF, one
 *   netlink request applied attribute by attribute in the kernel's order, stopping at the first
 *   refusal with the earlier ones kept (rtnetlink's do_setvfinfo).
 * - What the PF and VF drivers add on top, per driver pair (`DriverModel`): the igb/igbvf pair
 *   as the lab measured it on a real 6.12 kernel (test/lab/README.md, "What the lab taught the
 *   simulated host"); any other pair as a driver that implements every VF setting.
 * - Holders of `/dev/vfio/GROUP`: pids recorded by tests, counted only while alive.
 */
export interface SimVf {
  index: number;
  address: string;
  netdev: string | null;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: string;
  mac: string;
  vlan: number;
  qos: number;
  spoofchk: boolean;
  trust: boolean;
  linkState: LinkState;
  minTxRate: number;
  maxTxRate: number;
  /**
   * The MAC was set through the PF (igb's IGB_VF_FLAG_PF_SET_MAC), as opposed to one the VF
   * driver chose and told the PF about. Absent in state files written before it existed.
   */
  adminMac?: boolean;
  mtu: number;
  vfioHolders: number[];
  vfioOwner: { uid: number; gid: number };
  /** Devices stacked on its netdev (a macvtap, a bridge); absent in files written before it. */
  uppers?: string[];
}

export interface SimPf {
  name: string;
  address: string;
  totalVfs: number;
  numVfs: number;
  driver: string;
  vfDriver: string;
  /** IFF_UP, and with it the link (the lab's igb has carrier shortly after `ip link set up`). */
  up: boolean;
  mtu: number;
  offset: number;
  stride: number;
  autoprobe: boolean;
  vfs: SimVf[];
  /**
   * Test knob: how long a write of a non-zero `sriov_numvfs` blocks (the real write returns
   * only once the PF driver has enabled and probed every VF: seconds on a big PF). Absent: 0.
   */
  settleMs?: number;
  /**
   * Test knob: such a write blocks until this file exists (after `settleMs`), so a test can
   * hold a pool start in the middle of VF creation for as long as it needs, then let it end,
   * without guessing how long the rest of the test takes on a loaded machine.
   */
  settleUntilFile?: string;
}

export interface SimState {
  version: 1;
  pfs: SimPf[];
  /** The drivers this machine has loaded (`drivers_probe` finds only these); vfio-pci is there unless a test removes it. */
  drivers: string[];
  nextIommuGroup: number;
  /** This boot of the simulated machine (its /proc/sys/kernel/random/boot_id); absent in files written before it. */
  bootId?: string;
}

/** What a sim file may hold at minimum: `{"pfs":[{"name":"eth1","totalVfs":16}]}`. */
export interface SimSeed {
  pfs: Array<Partial<SimPf> & { name: string; totalVfs: number }>;
  drivers?: string[];
}

const NET_DRIVERS_DEFAULT = ['igbvf', 'iavf', 'mlx5_core', 'ixgbevf', 'sfc', 'virtio-pci'];

function sysError(code: string, message: string): HostError {
  return new HostError(message, { code });
}

/**
 * What Linux leaves to the drivers: the PF driver's ndo_set_vf_* callbacks and the mailbox
 * between the VF driver and the PF. Each field says what the real driver does and why.
 */
export interface DriverModel {
  /** ndo_set_vf_link_state exists; without it `vf N state …` is EOPNOTSUPP (igb has none). */
  linkState: boolean;
  /** A non-zero min_tx_rate is accepted; igb_ndo_set_vf_bw answers EINVAL to any. */
  minTxRate: boolean;
  /**
   * max_tx_rate is checked against the PF's link: EINVAL while it has no link (even 0), or above
   * this speed in Mb/s (igb: the negotiated speed, 1000 in the lab). null: no such check.
   */
  rateLinkMbps: number | null;
  /**
   * The VF driver reaches the PF through a mailbox that answers only while the PF is up. A VF
   * probed while the PF is down makes up a MAC the PF never hears of, so the PF keeps reporting
   * what it had (00:00:00:00:00:00 for a new VF); igbvf logs "PF still in reset state".
   */
  mailboxNeedsPfUp: boolean;
  /**
   * Without an admin MAC, every probe of the host VF driver makes up a new random MAC: igb
   * forgets a VF-chosen MAC when the VF resets (igb_vf_reset_event), igbvf then picks another.
   * false: the VF keeps the MAC it had, and makes one up only when it has none.
   */
  newMacPerProbe: boolean;
  /** A VF netdev's MTU may be set above its PF's (igb: yes, the VF's frame size is its own). */
  vfMtuAbovePf: boolean;
}

/** The Intel 82576 (igb PF, igbvf VFs) as the lab's real kernel showed it. */
export const IGB_MODEL: DriverModel = {
  linkState: false,
  minTxRate: false,
  rateLinkMbps: 1000,
  mailboxNeedsPfUp: true,
  newMacPerProbe: true,
  vfMtuAbovePf: true,
};

/**
 * Any other pair: every VF setting implemented, no link dependency. Not measured on a real
 * kernel; the VF MTU cap under the PF's is this model's assumption, not a lab fact.
 */
export const GENERIC_MODEL: DriverModel = {
  linkState: true,
  minTxRate: true,
  rateLinkMbps: null,
  mailboxNeedsPfUp: false,
  newMacPerProbe: false,
  vfMtuAbovePf: false,
};

export function driverModel(pf: SimPf): DriverModel {
  return pf.driver === 'igb' && pf.vfDriver === 'igbvf' ? IGB_MODEL : GENERIC_MODEL;
}

const ZERO_MAC = '00:00:00:00:00:00';

function ridOf(address: string): { domain: string; rid: number } {
  const m = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/.exec(address);
  if (!m) throw new BadInputError(`sim host: PF address '${address}' is not a PCI address`);
  return { domain: m[1]!, rid: (parseInt(m[2]!, 16) << 8) | (parseInt(m[3]!, 16) << 3) | parseInt(m[4]!, 10) };
}

function addressOfRid(domain: string, rid: number): string {
  const bus = (rid >> 8) & 0xff;
  const slot = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  return `${domain}:${bus.toString(16).padStart(2, '0')}:${slot.toString(16).padStart(2, '0')}.${fn}`;
}

function randomMac(): string {
  // Math.random, not crypto: the MAC only has to differ from VF to VF and from probe to probe,
  // like the kernel's eth_random_addr; loading Web Crypto (six of Node's modules) cost a
  // simulated `sriov_numvfs` write more than the rest of it.
  const b = Uint8Array.from({ length: 6 }, () => Math.floor(Math.random() * 256));
  // Locally administered unicast, as drivers generate for a VF with no admin MAC.
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}


/** Fills a seed file in: addresses, drivers and defaults a real PF would report. */
export function fillSimState(seed: SimSeed): SimState {
  if (!seed || !Array.isArray(seed.pfs)) {
    throw new BadInputError("sim host: the file has no 'pfs' array", 'minimal form: {"pfs":[{"name":"eth1","totalVfs":16}]}');
  }
  const state: SimState = {
    version: 1,
    pfs: [],
    drivers: seed.drivers ?? ['vfio-pci', ...NET_DRIVERS_DEFAULT],
    nextIommuGroup: 100,
    bootId: newBootId(),
  };
  seed.pfs.forEach((p, i) => {
    if (typeof p.name !== 'string' || !Number.isInteger(p.totalVfs) || p.totalVfs < 0) {
      throw new BadInputError(`sim host: pfs[${i}] needs a 'name' and an integer 'totalVfs'`);
    }
    const pf: SimPf = {
      name: p.name,
      address: p.address ?? addressOfRid('0000', (0x3b + i) << 8),
      totalVfs: p.totalVfs,
      numVfs: 0,
      driver: p.driver ?? 'igb',
      vfDriver: p.vfDriver ?? 'iavf',
      up: p.up ?? true,
      mtu: p.mtu ?? 1500,
      offset: p.offset ?? 16,
      stride: p.stride ?? 1,
      autoprobe: p.autoprobe ?? true,
      vfs: [],
      ...(p.settleMs ? { settleMs: p.settleMs } : {}),
      ...(p.settleUntilFile ? { settleUntilFile: p.settleUntilFile } : {}),
    };
    ridOf(pf.address);
    state.pfs.push(pf);
    if (p.numVfs) writeNumVfs(state, pf.name, p.numVfs);
  });
  return state;
}

export function findPf(state: SimState, name: string): SimPf {
  const pf = state.pfs.find((p) => p.name === name);
  if (!pf) throw sysError('ENOENT', `no network interface '${name}'`);
  return pf;
}

export function findVfByAddress(state: SimState, address: string): { pf: SimPf; vf: SimVf } {
  for (const pf of state.pfs) {
    const vf = pf.vfs.find((v) => v.address === address);
    if (vf) return { pf, vf };
  }
  throw sysError('ENOENT', `no PCI device ${address}`);
}

function probe(state: SimState, pf: SimPf, vf: SimVf): void {
  const driver = vf.driverOverride ?? pf.vfDriver;
  if (!state.drivers.includes(driver)) return; // no driver claims it: stays unbound, like the kernel
  vf.driver = driver;
  if (driver === 'vfio-pci') {
    vf.netdev = null;
  } else {
    vf.netdev = `${pf.name}v${vf.index}`.slice(0, 15);
    // A host VF driver reads the admin MAC at probe; with none set it makes up a random one
    // (seed 001's "new MAC every boot") and tells the PF, which then reports it.
    const model = driverModel(pf);
    if (model.mailboxNeedsPfUp && !pf.up) return; // the PF never hears of it
    if (model.newMacPerProbe ? !vf.adminMac : vf.mac === ZERO_MAC) vf.mac = randomMac();
  }
}

/** `echo N > /sys/class/net/PF/device/sriov_numvfs`, with the kernel's checks in its order. */
export function writeNumVfs(state: SimState, pfName: string, count: number): void {
  const pf = findPf(state, pfName);
  if (!Number.isInteger(count) || count < 0) throw sysError('EINVAL', `invalid VF count '${count}'`);
  if (count === pf.numVfs) return;
  if (count === 0) {
    const held = pf.vfs.find((v) => v.vfioHolders.some(isAlive));
    if (held) {
      // The real kernel blocks in vfio-pci's remove until the user lets go; a simulator that
      // hung would help no one, so it refuses instead. vfpool's in-use guard never gets here.
      throw sysError('EBUSY', `VF ${held.address} is held open through /dev/vfio/${held.iommuGroup} (the kernel would block here)`);
    }
    pf.vfs = [];
    pf.numVfs = 0;
    return;
  }
  if (count > pf.totalVfs) throw sysError('ERANGE', `${count} VFs requested, sriov_totalvfs is ${pf.totalVfs}`);
  if (pf.numVfs !== 0) throw sysError('EBUSY', `${pf.numVfs} VFs already enabled. Disable before enabling ${count} VFs`);
  const { domain, rid } = ridOf(pf.address);
  for (let i = 0; i < count; i++) {
    const vf: SimVf = {
      index: i,
      address: addressOfRid(domain, rid + pf.offset + i * pf.stride),
      netdev: null,
      driver: null,
      driverOverride: null,
      iommuGroup: String(state.nextIommuGroup++),
      mac: '00:00:00:00:00:00',
      vlan: 0,
      qos: 0,
      spoofchk: true,
      trust: false,
      linkState: 'auto',
      minTxRate: 0,
      maxTxRate: 0,
      mtu: pf.mtu,
      vfioHolders: [],
      vfioOwner: { uid: 0, gid: 0 },
    };
    pf.vfs.push(vf);
    if (pf.autoprobe) probe(state, pf, vf);
  }
  pf.numVfs = count;
}

/**
 * `ip link set PF vf N …`: one netlink request. The kernel handles its attributes in a fixed
 * order (MAC, VLAN, rate, spoofchk, link-state, trust) and stops at the first one the driver
 * refuses, keeping the ones before it (the lab: `mac M state enable` on igb fails with
 * EOPNOTSUPP and M is set). So on a throw the state is changed up to that attribute, and the
 * caller must keep it.
 */
export function setVfLink(state: SimState, pfName: string, index: number, change: VfLinkChange): void {
  const pf = findPf(state, pfName);
  const vf = pf.vfs[index];
  if (!vf) throw sysError('EINVAL', `${pfName} has no VF ${index} (${pf.numVfs} enabled)`);
  const model = driverModel(pf);
  if (change.mac !== undefined) {
    // igb_ndo_set_vf_mac(): the zero MAC clears the admin MAC, any other invalid one is EINVAL.
    if (change.mac !== ZERO_MAC && parseInt(change.mac.slice(0, 2), 16) & 1) throw sysError('EINVAL', `invalid MAC ${change.mac} for VF ${index}`);
    vf.mac = change.mac;
    vf.adminMac = change.mac !== ZERO_MAC;
  }
  if (change.vlan !== undefined) {
    const qos = change.qos ?? 0;
    if (change.vlan < 0 || change.vlan > 4095) throw sysError('EINVAL', `VLAN ${change.vlan} out of range`);
    if (qos < 0 || qos > 7) throw sysError('EINVAL', `qos ${qos} out of range`);
    vf.vlan = change.vlan;
    vf.qos = change.vlan === 0 ? 0 : qos;
  }
  if (change.minTxRate !== undefined || change.maxTxRate !== undefined) {
    // iproute2 fills the rate it was not given from the current one.
    const min = change.minTxRate ?? vf.minTxRate;
    const max = change.maxTxRate ?? vf.maxTxRate;
    if (min !== 0 && !model.minTxRate) throw sysError('EINVAL', `${pf.driver} takes no min_tx_rate (VF ${index})`);
    if (model.rateLinkMbps !== null && (!pf.up || max > model.rateLinkMbps)) {
      throw sysError('EINVAL', pf.up ? `max_tx_rate ${max} is above the link speed ${model.rateLinkMbps}` : `${pfName} has no link: ${pf.driver} checks rates against it`);
    }
    vf.minTxRate = min;
    vf.maxTxRate = max;
  }
  if (change.spoofchk != null) vf.spoofchk = change.spoofchk;
  if (change.linkState != null) {
    if (!model.linkState) throw sysError('EOPNOTSUPP', `${pf.driver} cannot set a VF's link state`);
    vf.linkState = change.linkState;
  }
  if (change.trust != null) vf.trust = change.trust;
}

/** `ip link set DEV up|down` on a PF. */
export function setLinkUp(state: SimState, pfName: string, up: boolean): void {
  findPf(state, pfName).up = up;
}

/** `ip link set DEV mtu N` on a PF or a VF netdev. */
export function setMtu(state: SimState, netdev: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68) throw sysError('EINVAL', `MTU ${mtu} is below the minimum 68`);
  for (const p of state.pfs) {
    if (p.name === netdev) {
      p.mtu = mtu;
      return;
    }
    const v = p.vfs.find((x) => x.netdev === netdev);
    if (v) {
      if (mtu > p.mtu && !driverModel(p).vfMtuAbovePf) {
        throw sysError('EINVAL', `MTU ${mtu} on ${netdev} exceeds its PF ${p.name}'s MTU ${p.mtu}`);
      }
      v.mtu = mtu;
      return;
    }
  }
  throw sysError('ENODEV', `no network interface '${netdev}'`);
}

/** `echo DRIVER > .../driver_override` (an empty write clears it). */
export function setDriverOverride(state: SimState, address: string, driver: string | null): void {
  findVfByAddress(state, address).vf.driverOverride = driver;
}

/** `echo ADDR > .../driver/unbind`. */
export function unbindDriver(state: SimState, address: string): void {
  const { vf } = findVfByAddress(state, address);
  if (vf.driver === null) throw sysError('ENOENT', `${address} has no driver to unbind from`);
  if (vf.driver === 'vfio-pci' && vf.vfioHolders.some(isAlive)) {
    // vfio-pci's remove blocks until QEMU lets go of the group; refuse rather than hang.
    throw sysError('EBUSY', `${address} is held open through /dev/vfio/${vf.iommuGroup} (the kernel would block here)`);
  }
  vf.driver = null;
  vf.netdev = null;
}

/** `echo ADDR > /sys/bus/pci/drivers_probe`: driver_override wins, else the ID match. */
export function probeDriver(state: SimState, address: string): void {
  const { pf, vf } = findVfByAddress(state, address);
  if (vf.driver === null) probe(state, pf, vf);
}

/** The three steps LinuxHost.bindDriver writes, in its order. */
export function bindDriver(state: SimState, address: string, driver: string | null): void {
  const { pf, vf } = findVfByAddress(state, address);
  if (driver !== null && !state.drivers.includes(driver)) {
    throw sysError('ENODEV', `driver ${driver} is not loaded (no /sys/bus/pci/drivers/${driver})`);
  }
  setDriverOverride(state, address, driver && driver !== pf.vfDriver ? driver : null);
  if (vf.driver !== null) unbindDriver(state, address);
  if (driver !== null) probeDriver(state, address);
}
