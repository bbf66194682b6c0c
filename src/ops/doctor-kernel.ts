import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import type { PoolSpec } from '../config/pool-xml.js';
import type { Host, PfInfo } from '../host/host.js';
import type { NetdevName } from '../types.js';
import { fail, listDir, pass, readText, type Check } from './doctor-check.js';

/**
 * The kernel's side of vfpool's prerequisites, read from sysfs and /proc under the injected
 * roots (dmesg is not used: its ring buffer rotates and may be restricted to root by
 * kernel.dmesg_restrict, so "IOMMU enabled" is taken from what the IOMMU driver registered).
 */

function cpuVendor(settings: Settings): 'intel' | 'amd' | null {
  const info = readText(join(settings.procRoot, 'cpuinfo')) ?? '';
  if (/vendor_id\s*:\s*GenuineIntel/.test(info)) return 'intel';
  if (/vendor_id\s*:\s*AuthenticAMD/.test(info)) return 'amd';
  return null;
}

function iommuParam(settings: Settings): string {
  return cpuVendor(settings) === 'amd' ? 'amd_iommu=on iommu=pt' : 'intel_iommu=on iommu=pt';
}

const GRUB_FIX = (param: string) =>
  `enable VT-d/AMD-Vi in the firmware, add '${param}' to GRUB_CMDLINE_LINUX in /etc/default/grub, run \`update-grub\` and reboot`;

/**
 * IOMMU on: a registered IOMMU (`/sys/class/iommu/*`) and IOMMU groups. Interrupt remapping:
 * vfio refuses to assign a device without it (unless vfio_iommu_type1 allow_unsafe_interrupts=1,
 * which lets a guest forge MSIs), so an Intel DMAR unit must have the IR bit (3) of its
 * extended capabilities and the kernel command line must not turn it off.
 */
export function checkIommu(settings: Settings): Check[] {
  const units = listDir(join(settings.sysfsRoot, 'class/iommu'));
  const groups = listDir(join(settings.sysfsRoot, 'kernel/iommu_groups'));
  const cmdline = (readText(join(settings.procRoot, 'cmdline')) ?? '').trim();
  const param = iommuParam(settings);
  const out: Check[] = [];
  if (units.length === 0 || groups.length === 0) {
    const iommuParams = cmdline.split(/\s+/).filter((p) => /^(intel_iommu|amd_iommu|iommu)=/.test(p));
    out.push(fail('iommu', `no IOMMU: ${units.length} unit(s) in /sys/class/iommu, ${groups.length} IOMMU group(s); kernel command line: ${iommuParams.length ? iommuParams.join(' ') : 'no iommu parameter'}`, GRUB_FIX(param)));
  } else {
    out.push(pass('iommu', `${units.join(', ')}; ${groups.length} IOMMU group(s)`));
  }
  const offParam = /(^|\s)(intremap=(off|no_x2apic_optout)|nointremap|intremap=no)(\s|$)/.exec(cmdline);
  const unsafe = (readText(join(settings.sysfsRoot, 'module/vfio_iommu_type1/parameters/allow_unsafe_interrupts')) ?? '').trim();
  const dmar = units.filter((u) => u.startsWith('dmar'));
  const noIr = dmar.filter((u) => {
    const ecap = readText(join(settings.sysfsRoot, 'class/iommu', u, 'intel-iommu/ecap'));
    return ecap !== null && (BigInt(`0x${ecap.trim()}`) & 8n) === 0n;
  });
  if (units.length === 0) out.push(fail('interrupt-remapping', 'no IOMMU, so no interrupt remapping', GRUB_FIX(param)));
  else if (offParam) out.push(fail('interrupt-remapping', `turned off by '${offParam[2]}' on the kernel command line`, `remove '${offParam[2]}' from GRUB_CMDLINE_LINUX in /etc/default/grub, run \`update-grub\` and reboot`));
  else if (noIr.length) out.push(fail('interrupt-remapping', `${noIr.join(', ')}: no interrupt-remapping capability (ecap bit 3)${unsafe === 'Y' ? '; vfio_iommu_type1 allow_unsafe_interrupts=Y is set' : ''}`, 'enable interrupt remapping (x2APIC / "Interrupt Remapping") in the firmware; a QEMU guest needs -device intel-iommu,intremap=on'));
  else out.push(pass('interrupt-remapping', dmar.length ? `${dmar.join(', ')} support it and the kernel command line does not turn it off` : 'not turned off on the kernel command line'));
  return out;
}

/** The VFIO modules: loaded (`/sys/module/NAME`) or present for modprobe under /lib/modules/RELEASE. */
export function checkVfio(settings: Settings): Check[] {
  const release = (readText(join(settings.procRoot, 'sys/kernel/osrelease')) ?? '').trim();
  const modDir = join(settings.modulesDir, release);
  const dep = readText(join(modDir, 'modules.dep')) ?? '';
  const builtin = readText(join(modDir, 'modules.builtin')) ?? '';
  return ['vfio_pci', 'vfio_iommu_type1'].map((mod) => {
    const id = mod.replace(/_/g, '-');
    if (existsSync(join(settings.sysfsRoot, 'module', mod))) return pass(id, `${mod} is loaded`);
    // modules.dep lists each module file as "kernel/drivers/vfio/pci/vfio-pci.ko[.xz]: deps"; names use - or _.
    const pattern = new RegExp(`(^|/)${mod.replace(/_/g, '[-_]')}\\.ko(\\.[a-z]+)?:`, 'm');
    if (pattern.test(dep) || new RegExp(`(^|/)${mod.replace(/_/g, '[-_]')}\\.ko$`, 'm').test(builtin)) {
      return pass(id, `${mod} is not loaded but available in ${modDir} (vfpool loads it through vfio-pci's bind)`);
    }
    return fail(id, release ? `${mod} is neither loaded nor in ${modDir}/modules.dep` : `cannot tell the kernel release (${join(settings.procRoot, 'sys/kernel/osrelease')})`, `apt-get install linux-image-$(uname -r) (it ships ${mod}); then \`modprobe ${mod}\``);
  });
}

/** Each SR-IOV PF: its driver, whether it is up, and how many VFs it can have. */
export async function checkPfs(host: Host): Promise<{ checks: Check[]; pfs: Map<NetdevName, PfInfo> }> {
  const pfs = new Map<NetdevName, PfInfo>();
  const checks: Check[] = [];
  for (const name of await host.listPfs()) {
    try {
      const pf = await host.getPf(name);
      pfs.set(name, pf);
      const found = `${pf.address} driver ${pf.driver ?? 'none'}, link ${pf.up ? 'up' : 'down'}, ${pf.numVfs} of ${pf.totalVfs} VFs`;
      if (!pf.driver) checks.push(fail(`pf:${name}`, found, `bind ${pf.address} to its network driver: echo ${pf.address} > /sys/bus/pci/drivers_probe`));
      else if (pf.totalVfs === 0) checks.push(fail(`pf:${name}`, found, 'sriov_totalvfs is 0: enable SR-IOV for this NIC in the firmware (or its driver\'s max_vfs parameter)'));
      else if (!pf.up) checks.push(fail(`pf:${name}`, found, `ip link set ${name} up (some drivers lose VF settings made while the PF is down)`));
      else checks.push(pass(`pf:${name}`, found));
    } catch (err) {
      checks.push(fail(`pf:${name}`, (err as Error).message, `check ${name} with \`ip -d link show ${name}\``));
    }
  }
  return { checks, pfs };
}

/** Every defined or running pool: its PFs exist and `<vf num>` fits in `sriov_totalvfs`. */
export function checkPools(
  pools: Array<{
    name: string;
    spec: PoolSpec | null;
    error: string | null;
    /** Started (or starting): its `<vf num>` is what the PF has, not only what a start would set. */
    running?: boolean;
    activated?: Array<{ pf: NetdevName; numVfs: number }> | null;
    interrupted?: { kind: 'starting' | 'stopping'; worker: number } | null;
    /** A running pool's PFs renamed since its start (recorded name -> name now). */
    renamed?: Map<NetdevName, NetdevName>;
  }>,
  pfs: Map<NetdevName, PfInfo>,
): Check[] {
  const out: Check[] = [];
  // PFs whose VF count a pool's <vf num> sets (pools may share a PF): a running pool's count is
  // there (or its own row says it is gone); a stopped pool's exists only once someone starts it.
  const setters = (running: boolean) => pools.filter((p) => (p.running ?? false) === running)
    .flatMap((p) => p.spec?.pfs.filter((pf) => pf.numVfs !== null).map((pf) => ({ pool: p.name, dev: pf.dev, numVfs: pf.numVfs as number })) ?? []);
  const counted = new Set(setters(true).map((x) => x.dev));
  const stoppedSetters = setters(false);
  for (const p of pools) {
    const id = `pool:${p.name}`;
    if (!p.spec) {
      out.push(fail(id, `the definition does not parse: ${p.error}`, `fix it, or remove it: vfpool net-undefine ${p.name}`));
      continue;
    }
    const problems: string[] = [];
    const fixes: string[] = [];
    if (p.interrupted) {
      const start = p.interrupted.kind === 'starting';
      problems.push(`its ${start ? 'start' : 'stop'} was interrupted (vfpool pid ${p.interrupted.worker} is gone): guests of the pool are refused`);
      fixes.push(`vfpool reconcile (it ${start ? 'undoes the start; then start the pool again' : 'finishes the stop'})`);
    }
    for (const pf of p.spec.pfs) {
      const info = pfs.get(pf.dev);
      const now = p.renamed?.get(pf.dev);
      if (now !== undefined) {
        problems.push(`PF ${pf.dev} is called ${now} now (the same PCI device): the running pool still uses it, but its next start looks for ${pf.dev}`);
        fixes.push(`write <pf dev='${now}'> in the pool's definition (or the libvirt network carrying it) before its next start`);
      } else if (!info) {
        problems.push(`PF ${pf.dev} is not an SR-IOV PF on this host`);
        fixes.push(`name an existing PF in <pf dev> (\`vfpool status\` lists them)`);
      } else if (pf.numVfs !== null && pf.numVfs > info.totalVfs) {
        problems.push(`<vf num='${pf.numVfs}'> on ${pf.dev} is more than its sriov_totalvfs ${info.totalVfs}`);
        fixes.push(`lower <vf num> to at most ${info.totalVfs}`);
      } else if (pf.numVfs === null && info.numVfs === 0 && !counted.has(pf.dev)) {
        // vfpool never changes the count of a <pf> without <vf num>: its guests would get nothing.
        const others = stoppedSetters.filter((x) => x.dev === pf.dev);
        const create = `give <pf dev='${pf.dev}'> a <vf num='N'/> (N at most ${info.totalVfs}), or create them: echo N > /sys/class/net/${pf.dev}/device/sriov_numvfs`;
        if (others.length) {
          const names = [...new Set(others.map((x) => x.pool))];
          problems.push(`${pf.dev} has no VFs: ${others.map((x) => `pool ${x.pool}'s <vf num='${x.numVfs}'>`).join(', ')} would create them, but ${names.length > 1 ? 'those pools are' : 'that pool is'} not running`);
          fixes.push(`start ${names.map((n) => `\`vfpool net-start ${n}\``).join(', ')} (for a libvirt network: virsh net-start NAME, and virsh net-autostart NAME to have it at boot), or ${create}`);
        } else {
          problems.push(`${pf.dev} has no VFs, and no pool's <vf num> creates them`);
          fixes.push(create);
        }
      }
    }
    // A running pool whose PF no longer has the count its start set: someone wrote
    // sriov_numvfs by hand (or a driver reload reset it). Its guests get no VF, or VFs
    // vfpool never configured, until the pool is started again.
    for (const a of p.activated ?? []) {
      const pf = p.renamed?.get(a.pf) ?? a.pf;
      const info = pfs.get(pf);
      if (info && info.numVfs !== a.numVfs) {
        problems.push(`the pool is active with ${a.numVfs} VF(s) on ${pf}, but ${pf} has ${info.numVfs} now (sriov_numvfs changed outside vfpool)`);
        fixes.push(`once none of its VFs is in use, start the pool again: \`vfpool net-destroy ${p.name} && vfpool net-start ${p.name}\` (for a libvirt network: \`virsh net-destroy ${p.name} && virsh net-start ${p.name}\`)`);
      }
    }
    const found = p.spec.pfs.length ? p.spec.pfs.map((pf) => `${pf.dev}${pf.numVfs !== null ? ` vf num ${pf.numVfs}` : ''}`).join(', ') : 'no <pf> members';
    out.push(problems.length ? fail(id, problems.join('; '), fixes.join('; ')) : pass(id, found));
  }
  return out;
}
