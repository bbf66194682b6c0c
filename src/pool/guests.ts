/**
 * A guest's VFs through its lifecycle: prepare (allocate + configure), start (hand the vfio
 * groups to QEMU's user), started/reconnect/attach (learn QEMU's pid), release (restore + free).
 * Called by the qemu hook and by `vfpool prepare|release`. Every operation on a domain that
 * holds nothing and asks for nothing returns without taking the state lock or writing state.
 *
 * Concurrency: the state lock is held only to pick VFs and write records, never while the VFs
 * are configured, so many guests start at once. A record carries the pid of the vfpool process
 * working on it (`worker`); others leave it alone while that process lives, and
 * `vfpool reconcile` finishes the job of one that died.
 */


// The lifecycle, one module per stage; this module is the door the entry points use.
export { guestOptions, describeAllocation, type GuestOptions, type GuestVf, type PrepareResult, type ReleaseResult, type StartResult } from './guest-model.js';
export { requestsOf } from './guest-plan.js';
export { prepareGuest, reserveVfs, configureVfs, commitVfs, type Reservation } from './guest-prepare.js';
export { releaseGuest, planReleaseGuest, restoreVfs, freeVfs } from './guest-release.js';
export { startGuest, adoptGuest } from './guest-start.js';
export { readLibvirtPid, resolveDacLabel } from './libvirt-runtime.js';
export { deliverGuestVfs, defaultDeliverGuestDeps, type DeliverGuestDeps, type DeliverGuestResult } from './guest-deliver.js';
export { handPlanTo, type DeliveryHostFacts } from './guest-qemu-plan.js';
