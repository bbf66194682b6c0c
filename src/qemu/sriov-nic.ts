import { BadInputError } from '../errors.js';
import { MAX_SRIOV_NIC_VFS, validateBackend, type DomainPlanSriovNic } from '../state/domain-plan.js';
import { formatKv, hex } from './qemu-opts.js';

/**
 * An emulated virtio-net SR-IOV NIC (seed 003, QEMU >= 10.1's `sriov-pf`), following the rules
 * QEMU 11.1 enforces (observed, see the README):
 * - every VF BEFORE its PF ("PCI device specified as SR-IOV PF already exists");
 * - VFs above the PF's function at one constant stride ("inconsistent SR-IOV stride"): PF at
 *   function 0, VF M at function M+1 (offset 1, stride 1, what a guest kernel then reports);
 * - on the PF's own bus, which must be PCI Express: a pcie-root-port of its own;
 * - past function 7 only with ARI, written as the next slot (`addr=0x1.0x0` is function 8);
 * - a VF whose `sriov-pf` names no PF is silently accepted by QEMU as an ordinary NIC, so the
 *   PF id is generated here next to its VFs and never taken from input;
 * - virtio-net VFs take no MAC through the PF: each gets its own netdev and its own `mac=`.
 */
export function planSriovNic(
  nic: DomainPlanSriovNic,
  at: { rootBus: string; slot: number; chassis: number; claimId: (id: string) => void; json: boolean },
): string[] {
  const where = `<vfpool:sriov-nic> ${nic.id}`;
  if (!Number.isInteger(nic.vfs) || nic.vfs < 1 || nic.vfs > MAX_SRIOV_NIC_VFS) {
    throw new BadInputError(`${where}: vfs='${nic.vfs}' is not 1..${MAX_SRIOV_NIC_VFS}`, 'ARI gives a device 256 functions: the PF and at most 255 VFs');
  }
  if (nic.macs.length !== nic.vfs + 1) throw new BadInputError(`${where}: ${nic.macs.length} MACs for a PF and ${nic.vfs} VFs`, 'the plan needs one MAC per function');
  validateBackend(nic.backend, nic.backendOptions, where);
  const rp = `${nic.id}-rp`;
  const pf = `${nic.id}-pf`;
  const net = (k: number) => `${nic.id}-net${k}`;
  for (const id of [rp, pf, ...Array.from({ length: nic.vfs + 1 }, (_, k) => net(k)), ...Array.from({ length: nic.vfs }, (_, m) => `${nic.id}-vf${m}`)]) at.claimId(id);

  const netdev = (k: number) => {
    const base = formatKv({ type: nic.backend, id: net(k) }, 'type');
    return nic.backendOptions ? `${base},${nic.backendOptions}` : base;
  };
  const addr = (fn: number) => `${hex(fn >> 3)}.${hex(fn & 7)}`;
  const dev = (props: Record<string, string | number>) => (at.json ? JSON.stringify(props) : formatKv(props, 'driver'));
  const out: string[] = ['-device', dev({ driver: 'pcie-root-port', id: rp, bus: at.rootBus, addr: hex(at.slot), chassis: at.chassis, slot: 0 })];
  for (let k = 0; k <= nic.vfs; k++) out.push('-netdev', netdev(k));
  for (let m = 0; m < nic.vfs; m++) {
    out.push('-device', dev({ driver: 'virtio-net-pci', id: `${nic.id}-vf${m}`, netdev: net(m + 1), mac: nic.macs[m + 1]!, bus: rp, addr: addr(m + 1), 'sriov-pf': pf }));
  }
  out.push('-device', dev({ driver: 'virtio-net-pci', id: pf, netdev: net(0), mac: nic.macs[0]!, bus: rp, addr: addr(0) }));
  return out;
}
