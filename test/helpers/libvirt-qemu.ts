import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Makes a live process (this one by default) the QEMU libvirt runs for `domain`, as vfpool
 * checks one: libvirt's pid file (`libvirtRunDir/NAME.pid`) names it, and its command line
 * (`procRoot/PID/cmdline`, procRoot being the VFPOOL_PROC vfpool is given) carries
 * `-name guest=NAME,…` as libvirt starts every QEMU. A pid can be one domain's QEMU only.
 */
export function fakeLibvirtQemu(where: { libvirtRunDir: string; procRoot: string }, domain: string, pid = process.pid, extraArgs: string[] = []): void {
  mkdirSync(where.libvirtRunDir, { recursive: true });
  writeFileSync(join(where.libvirtRunDir, `${domain}.pid`), `${pid}\n`);
  writeQemuCmdline(where.procRoot, pid, domain, extraArgs);
}

/** `procRoot/PID/cmdline` of a QEMU libvirt started for `domain`. */
export function writeQemuCmdline(procRoot: string, pid: number, domain: string, extraArgs: string[] = []): void {
  const argv = ['/usr/bin/qemu-system-x86_64', '-name', `guest=${domain.replace(/,/g, ',,')},debug-threads=on`, '-S', ...extraArgs];
  mkdirSync(join(procRoot, String(pid)), { recursive: true });
  writeFileSync(join(procRoot, String(pid), 'cmdline'), `${argv.join('\0')}\0`);
}
