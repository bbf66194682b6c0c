import type { SimState } from './sim-kernel.js';

/**
 * The simulated machine's boots. A boot id in the kernel's form (a random UUID, as
 * /proc/sys/kernel/random/boot_id): Math.random, not node:crypto, whose load a hook call would
 * pay for (test/bundles.test.ts); nothing relies on it being unguessable.
 */
export function newBootId(): string {
  const hex = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The machine reboots, and comes back as the kernel does: a new boot id, and no VF on any PF
 * (`sriov_numvfs` 0: VFs exist only once it is written again, with the driver's defaults, so
 * nothing set on one before survives), no process holding a vfio group. The PFs keep what
 * their own configuration gives them at boot (up, MTU).
 */
export function rebootSimState(s: SimState): void {
  s.bootId = newBootId();
  for (const pf of s.pfs) {
    pf.numVfs = 0;
    pf.vfs = [];
  }
}
