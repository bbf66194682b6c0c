import t from 'tap';
import { faultSuite } from '../helpers/guest-faults.js';

/**
 * LinuxHost on the fixture sysfs tree with the fake `ip`: a failure injected at every host call
 * that changes something (sysfs write or `ip link set`) during prepare or release. Every fake
 * `ip` is a process, so the exhaustive every-call run is the simulated host's (guest-faults.test.ts).
 */
faultSuite(t, 'fixture', {
  name: 'hostdev pool, VLAN and trust, host driver -> vfio-pci',
  vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33' vlan='100' trust='on'/>`,
}, { mutatorsOnly: true });
