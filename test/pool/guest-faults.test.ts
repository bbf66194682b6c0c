import t from 'tap';
import { faultSuite } from '../helpers/guest-faults.js';

/**
 * Simulated host: a failure injected at EVERY host call a prepare (or release) makes, reads
 * included, leaves the VFs and the pool exactly as before (same MAC, VLAN, qos, spoofchk, trust,
 * link-state, rates, MTU, driver, netdev on every VF, same vfpool state).
 */
faultSuite(t, {
  name: 'two VFs from a hostdev pool, every setting, host driver -> vfio-pci',
  vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33' vlan='100' qos='3' spoofchk='off' trust='on' link-state='enable' min-tx-rate='10' max-tx-rate='100'/>
           <vfpool:hostdev pool='hd' mac='52:54:00:11:22:34' vlan='7'/>`,
});
