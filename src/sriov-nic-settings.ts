import { BadInputError } from './errors.js';

// What `<vfpool:sriov-nic>` may ask for: read by the domain XML parser and again by the plan
// file's validator (the wrapper trusts neither), so it sits below both.

/** ARI's 8-bit function number: the PF is function 0, so at most 255 VFs. */
export const MAX_SRIOV_NIC_VFS = 255;
export const SRIOV_BACKENDS = ['user', 'tap', 'bridge', 'socket', 'stream', 'dgram', 'vde', 'l2tpv3', 'vhost-user', 'hubport'] as const;
// Backend options stand in a QEMU -netdev argument: no commas escaped (`,,`), no id=.
const BACKEND_OPTIONS_RE = /^[A-Za-z0-9_.:/@=+-]+(,[A-Za-z0-9_.:/@=+-]+)*$/;

// Every function of the NIC (its PF and each VF: two at least) gets a netdev of its own with the
// same options, and these name what only one netdev can hold: QEMU refuses the second
// ("can't bind … Address already in use", "Could not set up host forwarding rule", a tap
// "Device or resource busy"; QEMU 10.0; l2tpv3's "could not bind socket", QEMU 11.1). mcast=
// and udp=/localaddr= are shared (SO_REUSEADDR).
const ONE_NETDEV_ONLY: Record<string, string> = {
  listen: 'binds a host port',
  hostfwd: 'binds a host port',
  ifname: 'names one tap device',
  // l2tpv3's UDP mode needs it ("need both src and dst port for udp"): that mode cannot serve a
  // NIC of several functions; its IP mode (no udp=on, no ports) can.
  srcport: 'binds a host port',
};

export function validateBackend(backend: string, options: string | null, field: string): void {
  if (!(SRIOV_BACKENDS as readonly string[]).includes(backend)) {
    throw new BadInputError(`${field}: backend='${backend}' is not a QEMU netdev type vfpool knows`, `use one of ${SRIOV_BACKENDS.join(', ')}`);
  }
  if (options === null) return;
  if (!BACKEND_OPTIONS_RE.test(options) || /(^|,)id=/.test(options)) {
    throw new BadInputError(`${field}: backend-options='${options}' is not a list of key=value without id=`, "e.g. backend-options='restrict=on'; vfpool gives every function its own id");
  }
  const key = options.split(',').map((o) => o.split('=')[0]!).find((k) => Object.hasOwn(ONE_NETDEV_ONLY, k));
  if (key !== undefined) {
    throw new BadInputError(
      `${field}: backend-options='${options}': ${key}= ${ONE_NETDEV_ONLY[key]}, and every function of the NIC (the PF and each VF) gets a netdev of its own with these options, so QEMU would refuse the second`,
      `drop ${key}=; for backend='socket', mcast=ADDR:PORT is a hub every function may join`,
    );
  }
}
