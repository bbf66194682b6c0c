import { existsSync, lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { DEFAULT_SETTINGS, SETTING_KEYS, parseConfFile, type Settings } from '../config/settings.js';
import type { VfpoolError } from '../errors.js';
import { hotplugBlockers, type DeliveryHostFacts, type HotplugBlocker } from '../pool/guest-qemu-plan.js';
import { fail, listDir, pass, readText, type Check } from './doctor-check.js';
import { StateDirOwnerError } from '../util/state-dir-owner.js';

/** vfpool's own installation and what it needs from libvirt and QEMU, as found on this host. */

const DAEMONS = ['libvirtd', 'virtqemud', 'virtnetworkd'];

/**
 * The hooks are installed and lead to this install (a stale link after a move would run an old
 * vfpool, or nothing: libvirt then fails every guest start with "cannot execute hook").
 */
export function checkHooks(settings: Settings, installDir: string | null): { checks: Check[]; newest: number | null } {
  let newest: number | null = null;
  const home = installDir === null ? null : linkedInstallDir(installDir);
  const checks = ['network', 'qemu'].map((driver) => {
    const id = `hook:${driver}`;
    const link = join(settings.libvirtConfDir, 'hooks', `${driver}.d`, 'vfpool');
    // A checkout has install.sh; an install (PREFIX/lib/vfpool) has not, and its hooks are linked by hand.
    const relink = home === null ? 'run install.sh from the vfpool build'
      : existsSync(join(home, 'install.sh')) ? `bash ${join(home, 'install.sh')}`
      : `mkdir -p ${dirname(link)} && ln -sfn ${join(home, 'hooks', driver)} ${link}`;
    let st;
    try {
      st = lstatSync(link);
    } catch {
      return fail(id, `${link} does not exist`, relink);
    }
    newest = Math.max(newest ?? 0, st.mtimeMs);
    // hooks/network and hooks/qemu are links to one shim, which tells the two apart by the path
    // libvirt ran; so "this install's hook" is the directory the link leads into, not the file.
    let target: string;
    let shim: string;
    try {
      const first = resolve(dirname(link), readlinkSync(link));
      target = join(realpathSync(dirname(first)), basename(first));
      shim = realpathSync(link);
    } catch {
      return fail(id, `${link} is a dangling link`, home === null ? 'run install.sh again' : relink);
    }
    if (home) {
      const mine = join(home, 'hooks', driver);
      let expected: string;
      try {
        expected = join(realpathSync(join(home, 'hooks')), driver);
      } catch {
        expected = mine;
      }
      if (target !== expected) return fail(id, `${link} leads to ${target}, not to this install's ${mine}`, `ln -sfn ${mine} ${link}`);
    }
    if (!(statSync(shim).mode & 0o111)) return fail(id, `${shim} is not executable`, `chmod 0755 ${shim}`);
    return pass(id, `${link} -> ${target}`);
  });
  return { checks, newest };
}

/**
 * The path an install is known by. The CLI finds its install through its own realpath, which
 * is install.sh's PREFIX/lib/vfpool.STAMP; the next install deletes that directory and moves
 * the link PREFIX/lib/vfpool, so a fix naming the STAMP would break at the next upgrade.
 */
function linkedInstallDir(installDir: string): string {
  const link = join(dirname(installDir), 'vfpool');
  try {
    return /^vfpool\.[^/]+$/.test(basename(installDir)) && realpathSync(link) === installDir ? link : installDir;
  } catch {
    return installDir;
  }
}

/** Start time of a process in ms since the epoch: /proc/PID/stat field 22 (clock ticks after boot) + btime. */
function processStart(procRoot: string, pid: string): number | null {
  const stat = readText(join(procRoot, pid, 'stat'));
  const btime = /^btime (\d+)$/m.exec(readText(join(procRoot, 'stat')) ?? '');
  if (!stat || !btime) return null;
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]);
  // USER_HZ is 100 on every architecture Linux exports to user space through /proc.
  return Number.isFinite(ticks) ? Number(btime[1]) * 1000 + ticks * 10 : null;
}

/** libvirt looks for hook scripts only when its daemon starts: one started before them never runs them. */
export function checkDaemon(settings: Settings, hooksAppeared: number | null): Check {
  const running: Array<{ name: string; pid: string; start: number | null }> = [];
  for (const pid of listDir(settings.procRoot).filter((p) => /^\d+$/.test(p))) {
    const comm = (readText(join(settings.procRoot, pid, 'comm')) ?? '').trim();
    if (DAEMONS.includes(comm)) running.push({ name: comm, pid, start: processStart(settings.procRoot, pid) });
  }
  const id = 'libvirt-daemon';
  if (running.length === 0) return fail(id, `no libvirt daemon runs (${DAEMONS.join(', ')})`, 'systemctl start libvirtd (or virtqemud and virtnetworkd)');
  const desc = running.map((d) => `${d.name} pid ${d.pid}${d.start ? ` since ${new Date(d.start).toISOString()}` : ''}`).join(', ');
  if (hooksAppeared === null) return fail(id, `${desc}; no vfpool hook installed`, 'install the hooks (install.sh), then restart the daemon');
  const stale = running.filter((d) => d.start === null || d.start < hooksAppeared);
  if (stale.length) {
    return fail(id, `${desc}: started before the hooks appeared (${new Date(hooksAppeared).toISOString()}), so it does not run them`, `systemctl restart ${[...new Set(stale.map((d) => d.name))].join(' ')}`);
  }
  return pass(id, `${desc}, after the hooks appeared`);
}

export function checkConf(settings: Settings, env: NodeJS.ProcessEnv): Check {
  const confDir = env.VFPOOL_CONFIG_DIR || '/etc/vfpool';
  const file = join(confDir, 'vfpool.conf');
  const text = readText(file);
  let fromFile: ReturnType<typeof parseConfFile> = {};
  if (text !== null) {
    // The QEMU wrapper reads it as the domain's QEMU user: unreadable, its settings silently
    // would not apply there (it says so in the domain's log, but only once a guest starts).
    const closed = [confDir, file].filter((p) => {
      const mode = statSync(p).mode;
      return (mode & (p === file ? 0o004 : 0o001)) === 0;
    });
    if (closed.length) {
      return fail('vfpool.conf', `${closed.map((p) => `${p} has mode ${(statSync(p).mode & 0o777).toString(8)}`).join(', ')}: the QEMU wrapper, which runs as the domain's QEMU user, cannot read ${file}`, closed.map((p) => `chmod ${p === file ? '0644' : 'o+x'} ${p}`).join(' && '));
    }
    try {
      fromFile = parseConfFile(text, file);
    } catch (err) {
      return fail('vfpool.conf', (err as Error).message, `edit ${file}: KEY=value lines with the keys \`vfpool --help\` lists`);
    }
  }
  // A setting only this shell has (exported, or from /etc/environment, which services never
  // read): libvirt runs the hooks and the wrapper without it, so they use the file's value or
  // the default, and the CLI and the hooks work on two states (two hosts, two histories).
  // VFPOOL_CONFIG_DIR is where doctor reads the file from, so there is nothing to compare it with.
  const envOnly = (Object.keys(SETTING_KEYS) as Array<keyof typeof SETTING_KEYS>).filter((k) => {
    if (k === 'VFPOOL_CONFIG_DIR' || !env[k]) return false;
    return env[k] !== (fromFile[k] || DEFAULT_SETTINGS[SETTING_KEYS[k]]);
  });
  if (envOnly.length) {
    const theirs = envOnly.map((k) => `${k}=${fromFile[k] || DEFAULT_SETTINGS[SETTING_KEYS[k]] || '(empty)'}`);
    return fail(
      'vfpool.conf',
      `${envOnly.map((k) => `${k}=${env[k]}`).join(', ')} ${envOnly.length > 1 ? 'come' : 'comes'} from the environment, but libvirt runs the hooks and the QEMU wrapper without ${envOnly.length > 1 ? 'them' : 'it'}: they use ${theirs.join(', ')}`,
      `put ${envOnly.map((k) => `${k}=${env[k]}`).join(' and ')} in ${file} so that both agree, or unset ${envOnly.length > 1 ? 'them' : 'it'}`,
    );
  }
  const keys = Object.keys(fromFile);
  return pass('vfpool.conf', text === null ? `${file} does not exist: defaults and the environment apply` : `${file}: ${keys.length ? keys.join(', ') : 'only comments'}`);
}

/**
 * State and journal: root's own, files 0600 (they name guests and hold their MACs). The journal
 * directory is 0700; the state directory 0700 or 0711, since the QEMU user of a guest with a
 * plan traverses it to reach its own qemu/NAME/ (writeDomainPlan; install.sh creates it so).
 * The fix names only what is wrong: qemu/NAME/ belongs to the QEMU user and index/ and qemu/
 * are directories, so neither a recursive chown nor `chmod 0600 DIR/*` may be suggested.
 */
export function checkStateDirs(settings: Settings, stateError: VfpoolError | null = null, euid = process.geteuid?.() ?? 0): Check[] {
  const dirs: Array<[string, string, string[], number]> = [
    ['state-dir', settings.stateDir, ['state.json', 'vfpool.log'], 0o711],
    ['journal-dir', settings.journalDir, ['history.jsonl'], 0o700],
  ];
  return dirs.map(([id, d, files, widest]) => {
    let st;
    try {
      st = statSync(d);
    } catch {
      return pass(id, `${d} does not exist yet (created 0700 at the first operation)`);
    }
    const bad: string[] = [];
    const fixes: string[] = [];
    const mode = st.mode & 0o777;
    const allowed = widest === 0o711 ? '700 or 711 (QEMU users traverse it to their plan)' : '700';
    // The hooks run as root, so root owns them. Another owner can rewrite what root's hooks
    // trust, so the fix never hands them to the user running doctor; a directory of that user's
    // own (vfpool run without root, as the tests do) is theirs to keep.
    // The refusal of every operation (stateError) names this owner already, with what else is open.
    if (st.uid !== 0 && st.uid !== euid && !(id === 'state-dir' && stateError instanceof StateDirOwnerError)) {
      bad.push(`${d} is owned by uid ${st.uid}, not root`);
      fixes.push(`chown 0:0 ${d}`);
    }
    if ((mode & ~widest) !== 0) {
      bad.push(`${d} has mode ${mode.toString(8)}, not ${allowed}`);
      fixes.push(widest === 0o711 ? `chmod go-rw ${d}` : `chmod 0700 ${d}`);
    }
    const loose: string[] = [];
    for (const f of files) {
      try {
        const fst = statSync(join(d, f));
        if ((fst.mode & 0o077) !== 0) {
          bad.push(`${join(d, f)} has mode ${(fst.mode & 0o777).toString(8)}, not 600`);
          loose.push(join(d, f));
        }
      } catch {
        // not written yet
      }
    }
    if (loose.length) fixes.push(`chmod 0600 ${loose.join(' ')}`);
    // The QEMU user walks down to qemu/NAME/plan.json: every directory above must let it pass.
    if (id === 'state-dir') {
      const closed: string[] = [];
      for (let p = dirname(d); ; p = dirname(p)) {
        if ((statSync(p).mode & 0o001) === 0) closed.unshift(p);
        if (p === dirname(p)) break;
      }
      if (closed.length) {
        bad.push(`${closed.join(', ')} ${closed.length > 1 ? 'have' : 'has'} no o+x: the QEMU user cannot reach ${join(d, 'qemu')}`);
        fixes.push(`chmod o+x ${closed.join(' ')}`);
      }
    }
    if (id === 'state-dir' && stateError) {
      bad.push(stateError.message);
      fixes.push(stateError.hint ?? `check ${join(d, 'state.json')}`);
    }
    return bad.length ? fail(id, bad.join('; '), fixes.join(' && ')) : pass(id, `${d} ${mode.toString(8).padStart(4, '0')}, files 0600`);
  });
}

/**
 * The QEMU the wrapper execs, and the virtio-net properties the failover and sriov-pf modes need.
 * sriov-pf (QEMU >= 10.1) serves only <vfpool:sriov-nic>: a host whose domains ask for none
 * (`sriovNicDomains`, from their plans) does not need it, and Debian 12's QEMU 10.0 lacks it.
 */
export async function checkQemu(settings: Settings, sriovNicDomains: string[] = []): Promise<Check[]> {
  const q = settings.qemuPath;
  // execa loaded only here: its module graph is a good part of a CLI start that does not run a process.
  const { execa } = await import('execa');
  const version = await execa(q, ['--version'], { reject: false, timeout: 20_000, env: { LC_ALL: 'C' } });
  if (version.exitCode !== 0) {
    return [fail('qemu', `${q} does not run: ${String(version.stderr || version.message).split('\n')[0]}`, `apt-get install qemu-system-x86, or set VFPOOL_QEMU=/path/to/qemu-system-x86_64 in /etc/vfpool/vfpool.conf`)];
  }
  const out: Check[] = [pass('qemu', `${q}: ${String(version.stdout).split('\n')[0]}`)];
  const props = await execa(q, ['-device', 'virtio-net-pci,help'], { reject: false, timeout: 20_000, env: { LC_ALL: 'C' } });
  const text = String(props.stdout);
  for (const [prop, mode, since] of [['failover', 'pci-passthrough-hybrid', '4.2'], ['sriov-pf', 'emulated virtio-net SR-IOV', '10.1']] as const) {
    const has = new RegExp(`^\\s*${prop}=`, 'm').test(text);
    if (!has && prop === 'sriov-pf' && sriovNicDomains.length === 0) {
      out.push(pass(`qemu:${prop}`, `virtio-net-pci of ${q} has no '${prop}': only <vfpool:sriov-nic> (${mode}) needs it, which no prepared domain asks for`));
      continue;
    }
    const users = prop === 'sriov-pf' && sriovNicDomains.length ? `, which domain(s) ${sriovNicDomains.join(', ')} ask for` : '';
    out.push(has ? pass(`qemu:${prop}`, `virtio-net-pci has '${prop}'`) : fail(`qemu:${prop}`, `virtio-net-pci of ${q} has no '${prop}' property (needed by ${mode}${users})`, `use a QEMU >= ${since}: set VFPOOL_QEMU to it in /etc/vfpool/vfpool.conf`));
  }
  return out;
}

/**
 * What hot-plugging a libvirt guest's real VFs at `started` needs: the delivery vfpool uses for
 * them, which works with libvirt's default qemu.conf (no shared /dev, no device ACL entries, no
 * daemon memlock limit to raise: docs/libvirt-delivery.md). A doctor run without root cannot
 * tell root's capabilities; that part is left to a run as root. A simulated host whose VFs
 * reach QEMU as emulated stand-ins (`standIn`, VFPOOL_SIM_VF_DEVICE) hands QEMU no vfio group
 * and raises no limit, whichever delivery plugs them (buildDomainPlan, guest-deliver.ts), so
 * it needs none of this.
 */
export function checkHotplug(facts: DeliveryHostFacts, standIn: string | null = null): Check {
  if (standIn !== null) {
    return pass('hotplug', `not needed: this simulated host's VFs reach QEMU as emulated ${standIn} NICs (VFPOOL_SIM_VF_DEVICE), with no vfio group to hand over or locked-memory limit to raise`);
  }
  let blockers: HotplugBlocker[];
  try {
    blockers = hotplugBlockers(facts);
  } catch (err) {
    return fail('hotplug', `cannot read this process's status or mounts: ${(err as Error).message}`, 'run vfpool doctor as root on the host libvirt runs on');
  }
  const problems = blockers.filter((b) => b.what !== 'root');
  const asRoot = problems.length === blockers.length;
  return problems.length
    ? fail('hotplug', problems.map((b) => b.problem).join('; '), problems.map((b) => b.hint).join('; '))
    : pass('hotplug', `the 'started' hook can hot-plug VFs into QEMU${asRoot ? '' : ' (root\'s CAP_SYS_RESOURCE not checked: doctor runs as another user)'}`);
}
