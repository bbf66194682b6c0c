import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HostError, errnoOf } from '../errors.js';
import type { DacLabel } from '../config/domain-xml.js';
import { parseObjectName } from '../types.js';
import { isAlive } from '../util/process.js';
import { parseQemuOpts } from '../qemu/qemu-opts.js';
import type { Owner } from './vf-steps.js';

/**
 * What vfpool reads of libvirt's runtime, outside the Host door because it is libvirt's, not
 * the kernel's: the `NAME.pid` files of running domains and the users a DAC label names.
 */

/** The uid/gid of a DAC label; names are looked up in ETC/passwd and ETC/group. */
export function resolveDacLabel(label: DacLabel, etcDir = '/etc', domain?: string): Owner {
  const whose = domain === undefined ? "the domain's" : `domain '${domain}': its`;
  const lookup = (file: string, name: string, what: string): number => {
    let text: string;
    try {
      text = readFileSync(join(etcDir, file), 'utf8');
    } catch (err) {
      throw new HostError(`${domain === undefined ? '' : `domain '${domain}': `}cannot read ${join(etcDir, file)} to find ${what} '${name}': ${errnoOf(err)}`, { code: errnoOf(err) });
    }
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined && /^[0-9]+$/.test(f[2])) return Number(f[2]);
    }
    throw new HostError(`${whose} DAC label names ${what} '${name}', which ${join(etcDir, file)} does not list`, {
      code: 'ENOENT',
      hint: `create that ${what}, or correct the <seclabel model='dac'> label (libvirt takes it from qemu.conf's user and group)`,
    });
  };
  const uid = 'uid' in label.user ? label.user.uid : lookup('passwd', label.user.name, 'user');
  const gid = 'gid' in label.group ? label.group.gid : lookup('group', label.group.name, 'group');
  return { uid, gid };
}

/**
 * A file of libvirt's QEMU runtime directory for a domain (`RUNDIR/NAME.SUFFIX`), or null when
 * there is none (the domain does not run). Anything else (a directory, no permission) is not
 * "not running", and is reported as a HostError rather than taken as that.
 */
function readRunFile(runDir: string, domain: string, suffix: 'pid' | 'xml', what: string): string | null {
  const file = join(runDir, `${parseObjectName(domain, 'domain name')}.${suffix}`);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw new HostError(`cannot read libvirt's ${what} ${file}: ${errnoOf(err) ?? (err as Error).message}`, {
      code: errnoOf(err),
      hint: 'run vfpool as root, and check VFPOOL_LIBVIRT_RUN_DIR names libvirt\'s QEMU runtime directory',
      cause: err,
    });
  }
}

/** Where libvirt's runtime and the processes are: Settings, GuestOptions. */
export interface LibvirtRuntimePaths {
  /** libvirt's QEMU runtime directory (/run/libvirt/qemu). */
  libvirtRunDir: string;
  /** Where /proc is (VFPOOL_PROC); /proc when not given. */
  procRoot?: string;
}

/**
 * libvirt's pid file for a running domain (`RUNDIR/NAME.pid`): the pid, if that process lives
 * and is this domain's QEMU; null when there is no such file, or it names another process. A
 * file that cannot be read is a HostError.
 *
 * The file outlives its QEMU when libvirt did not see it exit (the daemon down or killed): its
 * pid may be another process's by the time vfpool reads it, which, adopted, would pin the
 * guest's VFs to that process for as long as it runs. libvirt itself trusts a pid file only for
 * a process whose /proc/PID/exe is the binary it started (virPidFileReadIfAlive); the emulator
 * differs per domain (and vfpool-qemu execs it), so here the process must carry the domain's
 * name as libvirt starts every QEMU: `-name guest=NAME,…`.
 */
export function readLibvirtPid(where: LibvirtRuntimePaths, domain: string): number | null {
  const text = readRunFile(where.libvirtRunDir, domain, 'pid', 'pid file');
  if (text === null) return null;
  const pid = Number(text.trim());
  if (!(Number.isInteger(pid) && pid > 1 && isAlive(pid))) return null;
  const argv = readArgv(where.procRoot ?? '/proc', pid);
  return argv !== null && qemuGuestName(argv) === domain ? pid : null;
}

/** A process's argv (/proc/PID/cmdline), or null when it is gone (or is a kernel thread). */
function readArgv(procRoot: string, pid: number): string[] | null {
  const file = join(procRoot, String(pid), 'cmdline');
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ESRCH') return null;
    throw new HostError(`cannot read the command line of process ${pid} (${file}): ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), hint: 'run vfpool as root', cause: err });
  }
  return raw === '' ? null : raw.replace(/\0$/, '').split('\0');
}

/**
 * The guest name on a QEMU command line: `-name guest=NAME[,…]` (or the option's implied first
 * key, `-name NAME`), a comma in the name written twice (QemuOpts' escape, which libvirt uses);
 * null without `-name`.
 */
export function qemuGuestName(argv: readonly string[]): string | null {
  const at = argv.findIndex((a) => a === '-name' || a === '--name');
  const value = at < 0 ? undefined : argv[at + 1];
  // -name takes no JSON (QemuOpts only): a value that starts like it names no guest.
  if (value === undefined || value.startsWith('{')) return null;
  const guest = parseQemuOpts(value, 'guest', '-name').props.guest;
  return typeof guest === 'string' ? guest : null;
}

/**
 * Whether libvirt's status XML of a running domain (`RUNDIR/NAME.xml`, `<domstatus>`) already
 * lists a network port (`<source network='…' portid='UUID'/>`). libvirt runs a network's
 * `port-created` both for a port it creates (a start, a hotplug) and, when the daemon restarts,
 * for every port of the guests it reconnects to; only in the second case is the port in the
 * status XML already (a hotplugged device is written there once QEMU took it). No file: false.
 */
export function libvirtStatusListsPort(runDir: string, domain: string, portUuid: string): boolean {
  const text = readRunFile(runDir, domain, 'xml', 'status XML');
  return text !== null && (text.includes(`portid='${portUuid}'`) || text.includes(`portid="${portUuid}"`));
}

/**
 * Whether libvirt runs a network of this name: its network driver keeps the network's status
 * XML, `NAME.xml` in its runtime directory (`network/` beside the QEMU one: /run/libvirt/network
 * for libvirtd and virtnetworkd alike), from the network's start to its stop.
 */
export function libvirtRunsNetwork(runDir: string, network: string): boolean {
  return existsSync(join(dirname(runDir), 'network', `${parseObjectName(network, 'network name')}.xml`));
}
