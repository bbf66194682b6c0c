import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import { parseQemuConf } from '../qemu/cmdline-readiness.js';
import { fail, listDir, pass, readText, type Check } from './doctor-check.js';

/** The daemons that start QEMU, and so pick its security driver when they start. */
const QEMU_DAEMONS = ['libvirtd', 'virtqemud'];

const FIX = `set security_driver = "none" in /etc/libvirt/qemu.conf and restart libvirtd (or virtqemud), or give each domain with VFs <seclabel type='none'/>`;

/**
 * Whether libvirt confines QEMU with AppArmor, which the `started` hook's delivery of VFs
 * cannot pass (src/qemu/deliver.ts refuses a confined QEMU: vfpool does not edit profiles), so
 * that a libvirt guest with VFs would fail to start; said ahead, with the fix. libvirt 11's rule
 * (src/security/security_apparmor.c, AppArmorSecurityManagerProbe): qemu.conf's security_driver
 * when set ("none": no confinement); unset, AppArmor when the daemon itself runs under an
 * AppArmor profile (enforce or complain) and /etc/apparmor.d/libvirt/TEMPLATE.qemu exists.
 * Debian 12 ships both (AppArmor is on by default, libvirt-daemon-system brings the profiles).
 */
export function checkSecurityDriver(s: Settings): Check {
  const id = 'apparmor';
  const confFile = join(s.libvirtConfDir, 'qemu.conf');
  let drivers: string[] | null = null;
  const conf = readText(confFile);
  if (conf !== null) {
    try {
      const v = parseQemuConf(conf).get('security_driver');
      if (v !== undefined) drivers = Array.isArray(v) ? v : [String(v)];
    } catch (err) {
      return fail(id, `${confFile}: ${(err as Error).message}`, 'fix its syntax: libvirtd would refuse it too');
    }
  }
  if (drivers !== null && !drivers.includes('apparmor')) {
    return pass(id, `${confFile} sets security_driver = ${drivers.map((d) => `"${d}"`).join(', ')}: libvirt does not confine QEMU with AppArmor`);
  }
  if ((readText(join(s.sysfsRoot, 'module/apparmor/parameters/enabled')) ?? '').trim() !== 'Y') {
    return pass(id, 'AppArmor is not enabled in this kernel: libvirt does not confine QEMU with it');
  }
  const template = join(s.etcDir, 'apparmor.d/libvirt/TEMPLATE.qemu');
  if (drivers === null && !existsSync(template)) return pass(id, `AppArmor is on, but ${template} does not exist: libvirt does not confine QEMU with it`);

  // The daemon chose when it started: it uses AppArmor only when it runs confined itself.
  const daemons = listDir(s.procRoot)
    .filter((p) => /^\d+$/.test(p))
    .map((pid) => ({ pid, name: (readText(join(s.procRoot, pid, 'comm')) ?? '').trim() }))
    .filter((d) => QEMU_DAEMONS.includes(d.name))
    .map((d) => ({ ...d, label: apparmorLabel(s.procRoot, d.pid) }));
  const confined = daemons.filter((d) => d.label !== null && !/^unconfined\b/.test(d.label));
  const setBy = drivers !== null ? `${confFile} sets security_driver = "apparmor"` : `AppArmor is on and ${template} exists`;
  if (confined.length) {
    return fail(id, `${setBy}, and ${confined.map((d) => `${d.name} (pid ${d.pid}) runs under AppArmor profile '${d.label}'`).join(', ')}: libvirt confines each QEMU with a profile of its own, which denies the /dev/vfio nodes the 'started' hook gives QEMU, so libvirt guests with VFs fail to start`, FIX);
  }
  if (daemons.length) {
    return pass(id, `${daemons.map((d) => `${d.name} (pid ${d.pid})`).join(', ')} ${daemons.length > 1 ? 'run' : 'runs'} unconfined: libvirt does not confine QEMU with AppArmor`);
  }
  // No daemon runs: what it will do when it starts, from the profiles it would be started under.
  const profiles = QEMU_DAEMONS.map((d) => join(s.etcDir, `apparmor.d/usr.sbin.${d}`)).filter((p) => existsSync(p));
  if (profiles.length || drivers !== null) {
    return fail(id, `${setBy}${profiles.length ? ` and ${profiles.join(', ')} confine${profiles.length > 1 ? '' : 's'} the daemon` : ''}: once it starts, libvirt will confine each QEMU with a profile of its own, which denies the /dev/vfio nodes the 'started' hook gives QEMU, so libvirt guests with VFs would fail to start`, FIX);
  }
  return pass(id, `no AppArmor profile for ${QEMU_DAEMONS.join(' or ')} in ${join(s.etcDir, 'apparmor.d')}: libvirt will not confine QEMU with AppArmor`);
}

/** A process's AppArmor label (`libvirtd (enforce)`, `unconfined`), or null when no LSM shows one. */
function apparmorLabel(procRoot: string, pid: string): string | null {
  // With LSM stacking (Linux >= 5.1) AppArmor's own file; attr/current is the first LSM's.
  const text = readText(join(procRoot, pid, 'attr/apparmor/current')) ?? readText(join(procRoot, pid, 'attr/current'));
  const label = text?.replace(/\0/g, '').trim();
  return label ? label : null;
}
