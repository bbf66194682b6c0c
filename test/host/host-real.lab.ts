/**
 * The Host behavioural suite on a real kernel: LinuxHost on the igb PF of the lab guest (Linux
 * 6.12, QEMU's emulated 82576 with 7 VFs, an emulated Intel IOMMU). Not a *.test.ts: it writes
 * sysfs and starts QEMU, so only test/lab/guest-suites.sh runs it, inside the guest:
 *   node dist/test/host/host-real.lab.js
 * The same assertions run on the simulated host and on a fixture sysfs (sim-host.test.ts,
 * linux-host.test.ts): where the kernel and the simulation disagree, the simulation is fixed.
 */
import t from 'tap';
import { assertLabGuest, findLabPf, holdVfioWithQemu, labHost, resetLabPf, setLabPfUp, stackMacvtap } from '../helpers/real-host.js';
import { hostSuite, IGB_FACTS } from './host-suite.js';

assertLabGuest('host-real.lab.js');
const lab = findLabPf();
const host = labHost();
// Each test boots nothing, but one starts a QEMU (12-26 s under TCG): generous, bounded.
t.setTimeout(15 * 60_000);

hostSuite(t, async () => {
  // Every test starts from the same PF: up (vfpool refuses to configure VFs through a down
  // PF, so up is the state it works in; the guest boots with it down), 0 VFs, no QEMU of ours.
  await resetLabPf(lab.pf);
  return {
    host,
    pf: lab.pf,
    totalVfs: lab.totalVfs,
    facts: IGB_FACTS,
    setPfUp: (up) => setLabPfUp(lab.pf, up),
    holdVfio: holdVfioWithQemu,
    stackOnNetdev: stackMacvtap,
    cleanup: () => resetLabPf(lab.pf),
  };
});
