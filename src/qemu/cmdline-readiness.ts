import { BadInputError } from '../errors.js';

/**
 * Whether a vfio-pci device that libvirt does not know of can go on QEMU's COMMAND LINE (option
 * C in docs/libvirt-delivery.md) under this qemu.conf, and if not, the exact lines to add.
 * Measured with libvirt 11.3: with the default qemu.conf QEMU dies at launch with
 * "vfio 0000:01:10.0: Could not open '/dev/vfio/6': No such file or directory" (its private
 * /dev); with `namespaces = [ ]` the device cgroup still refuses nodes outside
 * cgroup_device_acl; and libvirt raises RLIMIT_MEMLOCK only for hostdevs it knows or for
 * `<memtune><hard_limit>`. Pure: the caller reads /etc/libvirt/qemu.conf.
 */

/** libvirt 11.3's built-in cgroup_device_acl (qemu.conf's commented default). */
export const LIBVIRT_DEFAULT_DEVICE_ACL = ['/dev/null', '/dev/full', '/dev/zero', '/dev/random', '/dev/urandom', '/dev/ptmx', '/dev/kvm', '/dev/userfaultfd'];
export const LIBVIRT_DEFAULT_CGROUP_CONTROLLERS = ['cpu', 'devices', 'memory', 'blkio', 'cpuset', 'cpuacct'];

type ConfValue = string | number | string[];

/** Drops `#` comments outside double-quoted strings; keeps line breaks (for line numbers). */
function stripComments(text: string): string {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i] ?? '';
      else if (c === '"') inString = false;
    } else if (c === '#') {
      while (i + 1 < text.length && text[i + 1] !== '\n') i++;
    } else {
      if (c === '"') inString = true;
      out += c;
    }
  }
  return out;
}

/**
 * The subset of libvirt's config syntax qemu.conf uses: `key = "string" | number | [ "a", "b" ]`
 * (lists may span lines), `#` comments. The last assignment of a key wins, as in libvirt.
 */
export function parseQemuConf(text: string): Map<string, ConfValue> {
  const out = new Map<string, ConfValue>();
  const src = stripComments(text);
  const re = /([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*"|-?[0-9]+|\[[^\]]*\])/gy;
  let pos = 0;
  for (;;) {
    while (pos < src.length && /\s/.test(src[pos]!)) pos++;
    if (pos >= src.length) break;
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) {
      const line = src.slice(0, pos).split('\n').length;
      throw new BadInputError(`qemu.conf line ${line}: cannot read '${src.slice(pos, pos + 40).split('\n')[0]}'`, 'fix the syntax; libvirtd would refuse it too');
    }
    const raw = m[2]!;
    const value: ConfValue = raw.startsWith('"')
      ? JSON.parse(raw)
      : raw.startsWith('[')
        ? [...raw.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]!)
        : Number(raw);
    out.set(m[1]!, value);
    pos = re.lastIndex;
  }
  return out;
}

export interface CmdlineReadiness {
  ok: boolean;
  /** One sentence per missing piece. */
  problems: string[];
  /** qemu.conf lines that make it work (then restart libvirtd); empty when none are needed. */
  qemuConfLines: string[];
  /** Domain XML the domain needs for the memlock limit (libvirt never raises it for devices it does not know). */
  domainXml: string | null;
}

const list = (v: string[]) => `[ ${v.map((s) => JSON.stringify(s)).join(', ')} ]`;

/**
 * GROUPS: the IOMMU groups of the VFs the domain would get (digits). HARD_LIMIT_KIB: the domain's
 * `<memtune><hard_limit>` in KiB, or null; GUEST_MEMORY_KIB: its `<memory>`.
 */
export function checkCmdlineReadiness(qemuConf: string, opts: { groups: string[]; hardLimitKiB: bigint | null; guestMemoryKiB: bigint }): CmdlineReadiness {
  for (const g of opts.groups) if (!/^[0-9]{1,6}$/.test(g)) throw new BadInputError(`IOMMU group '${g}' is not a group number`);
  const conf = parseQemuConf(qemuConf);
  const problems: string[] = [];
  const lines: string[] = [];

  const namespaces = conf.get('namespaces');
  if (!Array.isArray(namespaces) || namespaces.includes('mount')) {
    problems.push("QEMU runs in its own mount namespace (qemu.conf 'namespaces', default [ \"mount\" ]) whose /dev has no /dev/vfio");
    lines.push('namespaces = [ ]');
  }

  const controllers = conf.get('cgroup_controllers');
  const devicesCgroup = !Array.isArray(controllers) || controllers.includes('devices');
  if (devicesCgroup) {
    const acl = conf.get('cgroup_device_acl');
    const have = Array.isArray(acl) ? acl : LIBVIRT_DEFAULT_DEVICE_ACL;
    const need = ['/dev/vfio/vfio', ...opts.groups.map((g) => `/dev/vfio/${g}`)];
    const absent = need.filter((p) => !have.includes(p));
    if (absent.length) {
      problems.push(`the device cgroup allows only cgroup_device_acl, which lacks ${absent.join(', ')}`);
      lines.push(`cgroup_device_acl = ${list([...have, ...absent])}`);
    }
  }

  const needKiB = opts.guestMemoryKiB + 1024n * 1024n;
  let domainXml: string | null = null;
  if (opts.hardLimitKiB === null || opts.hardLimitKiB < needKiB) {
    problems.push(`libvirt leaves QEMU's locked-memory limit at 8 MiB for a device it does not know; vfio needs the guest's memory + 1 GiB (${needKiB} KiB)`);
    domainXml = `<memtune><hard_limit unit='KiB'>${needKiB}</hard_limit></memtune>`;
  }
  return { ok: problems.length === 0, problems, qemuConfLines: lines, domainXml };
}
