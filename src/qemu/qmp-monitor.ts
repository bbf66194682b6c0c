import { formatKv, parseQemuOpts } from './qemu-opts.js';

/** The chardev id of vfpool's QMP monitor as releases before `-qmp` added it (QEMUs they started may still run). */
export const QMP_CHARDEV_ID = 'vfpool-qmp';

/**
 * vfpool's QMP monitor on QEMU's command line. `-qmp unix:`, not `-chardev` + `-mon`: QEMU 11.1
 * deprecates `-mon` (a warning in every domain's log, and later a QEMU that refuses to start),
 * and its replacement, `-object monitor-qmp`, does not exist in QEMU 10.0 (Debian 12's
 * backports); `-qmp` takes the same socket options on both, silently. QEMU names the chardev
 * compat_monitorN, an id no one else gives.
 */
export function qmpMonitorArgs(socketPath: string): string[] {
  return ['-qmp', `unix:${formatKv({ path: socketPath, server: 'on', wait: 'off' }, 'path')}`];
}

/** Whether a QEMU argv has a QMP monitor or chardev on the unix socket `socketPath`, in either form vfpool-qemu ever added. */
export function hasQmpSocket(argv: readonly string[], socketPath: string): boolean {
  const pathOf = (text: string, impliedKey: string): unknown => {
    try {
      return parseQemuOpts(text, impliedKey, 'socket').props.path;
    } catch {
      return undefined;
    }
  };
  return argv.some((value, i) => {
    const opt = argv[i - 1];
    if (opt === '-qmp' || opt === '--qmp') return value.startsWith('unix:') && pathOf(value.slice('unix:'.length), 'path') === socketPath;
    if (opt === '-chardev' || opt === '--chardev') return pathOf(value, 'backend') === socketPath;
    return false;
  });
}
