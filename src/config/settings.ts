import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { BadInputError, errnoOf } from '../errors.js';
import { fsError } from '../util/fs-errors.js';
import { quoteInput } from '../util/quote.js';

/**
 * Everything vfpool learns from its environment, resolved once at an entry point and passed
 * down; nothing below the entry points reads process.env.
 */
export interface Settings {
  configDir: string;
  stateDir: string;
  sysfsRoot: string;
  /** `linux` or `sim:FILE`. */
  host: string;
  ipPath: string;
  qemuPath: string;
  /** Where `/proc` is: the in-use guard reads `/proc/PID/fd` links. */
  procRoot: string;
  /** Where `/dev` is: `/dev/vfio/GROUP`. */
  devRoot: string;
  /** libvirt's QEMU runtime directory: its `NAME.pid` files tell which guests run. */
  libvirtRunDir: string;
  /** Where /etc/passwd and /etc/group are, for a DAC label given by user name. */
  etcDir: string;
  /**
   * Simulated host only: a QEMU NIC model (e.g. `e1000e`) the wrapper puts, with the VF's MAC,
   * where a VF's vfio-pci device would go, so the guest path runs without SR-IOV hardware.
   * Empty: the simulated host's VFs get `vfio-pci,host=BDF` like real ones.
   */
  simVfDevice: string;
  /**
   * Simulated host only: how a libvirt guest's stand-ins reach QEMU. `cmdline` (default): on
   * the command line, which they can be (no vfio). `hotplug`: as real VFs do under libvirt
   * (empty root ports from the wrapper, `device_add` at `started`), so the simulated host takes
   * that path too; a stand-in hot-added into an unpowered slot can also be `device_del`ed
   * without a guest OS, which a migration's perform needs.
   */
  simDelivery: 'cmdline' | 'hotplug';
  /** The VF history (`vfpool history`): kept across reboots, unlike the state directory. */
  journalDir: string;
  /** `/lib/modules`: `vfpool doctor` looks for vfio modules under `RELEASE/` there. */
  modulesDir: string;
  /** `/etc/libvirt`: hooks and qemu.conf, read by `vfpool doctor`. */
  libvirtConfDir: string;
}

export const SETTING_KEYS = {
  VFPOOL_CONFIG_DIR: 'configDir',
  VFPOOL_STATE_DIR: 'stateDir',
  VFPOOL_SYSFS: 'sysfsRoot',
  VFPOOL_HOST: 'host',
  VFPOOL_IP: 'ipPath',
  VFPOOL_QEMU: 'qemuPath',
  VFPOOL_PROC: 'procRoot',
  VFPOOL_DEV: 'devRoot',
  VFPOOL_LIBVIRT_RUN_DIR: 'libvirtRunDir',
  VFPOOL_ETC: 'etcDir',
  VFPOOL_SIM_VF_DEVICE: 'simVfDevice',
  VFPOOL_SIM_DELIVERY: 'simDelivery',
  VFPOOL_JOURNAL_DIR: 'journalDir',
  VFPOOL_MODULES_DIR: 'modulesDir',
  VFPOOL_LIBVIRT_CONF_DIR: 'libvirtConfDir',
} as const satisfies Record<string, keyof Settings>;

export const DEFAULT_SETTINGS: Settings = {
  configDir: '/etc/vfpool',
  stateDir: '/run/vfpool',
  sysfsRoot: '/sys',
  host: 'linux',
  // A fixed path, not a PATH lookup: libvirt hands hooks its own PATH, and a hook running as
  // root must not run whatever `ip` comes first in it.
  ipPath: '/usr/sbin/ip',
  qemuPath: '/usr/bin/qemu-system-x86_64',
  procRoot: '/proc',
  devRoot: '/dev',
  libvirtRunDir: '/run/libvirt/qemu',
  etcDir: '/etc',
  simVfDevice: '',
  simDelivery: 'cmdline',
  journalDir: '/var/lib/vfpool',
  modulesDir: '/lib/modules',
  libvirtConfDir: '/etc/libvirt',
};

/** A QEMU device (driver) name, as `-device help` lists them: it ends up in QEMU's argv. */
const QEMU_DRIVER_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/**
 * Parses `vfpool.conf`: `KEY=value` lines, `#` comments, optional quotes around the value.
 * Nothing is evaluated: it is read by a root hook, so it is data, never shell.
 */
export function parseConfFile(text: string, file: string): Partial<Record<keyof typeof SETTING_KEYS, string>> {
  const out: Partial<Record<keyof typeof SETTING_KEYS, string>> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([A-Z_]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new BadInputError(`${file}:${i + 1}: ${quoteInput(line)} is not a KEY=value line`);
    const key = m[1]!;
    let value = m[2]!;
    if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
    if (!(key in SETTING_KEYS)) {
      throw new BadInputError(`${file}:${i + 1}: unknown setting ${quoteInput(key)}`, `known: ${Object.keys(SETTING_KEYS).join(', ')}`);
    }
    out[key as keyof typeof SETTING_KEYS] = value;
  });
  return out;
}

/**
 * The conf file lives in `$VFPOOL_CONFIG_DIR` from the environment (tests) or `/etc/vfpool`.
 * The environment wins over the file, key by key. A VFPOOL_CONFIG_DIR inside the file moves
 * the pool definitions only, not the file itself.
 */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const confDir = env.VFPOOL_CONFIG_DIR || DEFAULT_SETTINGS.configDir;
  refuseRelative('VFPOOL_CONFIG_DIR', confDir, 'the environment');
  const confFile = join(confDir, 'vfpool.conf');
  let fromFile: ReturnType<typeof parseConfFile> = {};
  let text: string | undefined;
  try {
    text = readFileSync(confFile, 'utf8');
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw fsError(err, confFile, 'the configuration file', 'VFPOOL_CONFIG_DIR');
  }
  if (text !== undefined) fromFile = parseConfFile(text, confFile);
  return settingsFrom(env, fromFile);
}

/** Defaults, overridden by the conf file's keys, overridden by the environment's. */
export function settingsFrom(env: NodeJS.ProcessEnv, fromFile: ReturnType<typeof parseConfFile>): Settings {
  const settings: Settings = { ...DEFAULT_SETTINGS };
  for (const [key, field] of Object.entries(SETTING_KEYS) as [keyof typeof SETTING_KEYS, keyof Settings][]) {
    const v = env[key] || fromFile[key];
    if (v && PATH_KEYS.has(key)) refuseRelative(key, v, env[key] ? 'the environment' : 'vfpool.conf');
    if (v) (settings as unknown as Record<string, string>)[field] = v;
  }
  // The simulated host's file is a path like the others (the CLI, the hooks and the wrapper
  // must all open the same machine), only behind a prefix.
  if (settings.host.startsWith('sim:') && settings.host.length > 4 && !isAbsolute(settings.host.slice(4))) {
    throw new BadInputError(
      `VFPOOL_HOST ${quoteInput(settings.host)} (from ${env.VFPOOL_HOST ? 'the environment' : 'vfpool.conf'}) names a relative file`,
      `give an absolute path, sim:/path/to/host.json: the hooks run with cwd /, the CLI with yours`,
    );
  }
  if (settings.simDelivery !== 'cmdline' && settings.simDelivery !== 'hotplug') {
    throw new BadInputError(`VFPOOL_SIM_DELIVERY='${settings.simDelivery as string}' is neither cmdline nor hotplug`, 'leave it empty (cmdline), or set hotplug to hot-plug the stand-ins at started like real VFs');
  }
  if (settings.simVfDevice !== '' && !QEMU_DRIVER_RE.test(settings.simVfDevice)) {
    throw new BadInputError(
      `VFPOOL_SIM_VF_DEVICE='${settings.simVfDevice}' is not a QEMU device name`,
      'name a QEMU NIC model such as e1000e (`qemu-system-x86_64 -device help` lists them), or leave it empty',
    );
  }
  return settings;
}

/** The settings that are directories or files vfpool opens. */
const PATH_KEYS = new Set<string>([
  'VFPOOL_CONFIG_DIR', 'VFPOOL_STATE_DIR', 'VFPOOL_SYSFS', 'VFPOOL_IP', 'VFPOOL_QEMU', 'VFPOOL_PROC', 'VFPOOL_DEV',
  'VFPOOL_LIBVIRT_RUN_DIR', 'VFPOOL_ETC', 'VFPOOL_JOURNAL_DIR', 'VFPOOL_MODULES_DIR', 'VFPOOL_LIBVIRT_CONF_DIR',
]);

/**
 * libvirt runs the hooks with cwd `/`, a person runs the CLI from anywhere: a relative path
 * would name one directory for the hooks and another for the CLI (two states, VFs handed out
 * twice), so it is refused rather than resolved against whichever cwd came first.
 */
function refuseRelative(key: string, value: string, where: string): void {
  if (!isAbsolute(value)) {
    throw new BadInputError(`${key} ${quoteInput(value)} (from ${where}) is a relative path`, `give an absolute path: the hooks run with cwd /, the CLI with yours`);
  }
}

/** What each setting is for, in `vfpool --help` and the man page. */
export const SETTING_DOCS: Record<keyof typeof SETTING_KEYS, string> = {
  VFPOOL_CONFIG_DIR: 'pool definitions and vfpool.conf',
  VFPOOL_STATE_DIR: 'allocations, running pools, the log (0700; 0711 once a QEMU plan is under it)',
  VFPOOL_SYSFS: 'where sysfs is',
  VFPOOL_HOST: "'linux', or 'sim:FILE' for a simulated SR-IOV host",
  VFPOOL_IP: "iproute2's ip, at a fixed path",
  VFPOOL_QEMU: 'the real QEMU the wrapper runs',
  VFPOOL_SIM_VF_DEVICE: "simulated host: a QEMU NIC model (e.g. 'e1000e') standing in for each VF",
  VFPOOL_SIM_DELIVERY: "simulated host, libvirt guests: 'cmdline' or 'hotplug' (stand-ins added at started, as real VFs)",
  VFPOOL_PROC: 'where /proc is',
  VFPOOL_DEV: 'where /dev is',
  VFPOOL_LIBVIRT_RUN_DIR: "libvirt's QEMU pid files",
  VFPOOL_ETC: 'where passwd and group are',
  VFPOOL_JOURNAL_DIR: 'the VF history (vfpool history), kept across reboots',
  VFPOOL_MODULES_DIR: 'kernel modules, for vfpool doctor',
  VFPOOL_LIBVIRT_CONF_DIR: "libvirt's configuration: its hooks (vfpool doctor) and qemu.conf (prepare)",
};
