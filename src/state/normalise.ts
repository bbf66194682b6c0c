import { BadInputError } from '../errors.js';
import { POOL_MODES, parseObjectName, parsePciAddress } from '../types.js';
import { ALLOCATION_PHASES, STATE_VERSION, type Allocation, type PortRecord, type VfpoolState } from './schema.js';

/**
 * The one way a state file becomes a `VfpoolState`: checks the version and the shape, and
 * upgrades older versions to the current one. A file it cannot read is refused (one line naming
 * the file, the field and what to do), never read as "nothing allocated": that would hand out
 * VFs that guests still hold.
 *
 * Version 1 (vfpool 0.1): the fields added after its first release were optional; records that
 * lack them predate them and get the value the code of that time assumed when absent.
 */
export function normaliseState(raw: unknown, file: string): VfpoolState {
  const bad = (what: string): never => {
    throw new BadInputError(
      `state file ${file}: ${what}`,
      "vfpool will not read it as 'nothing allocated' (that would hand out VFs guests hold): restore it, or stop every guest using vfpool, move it aside and run `vfpool reconcile`",
    );
  };
  if (!isObject(raw)) return bad(`expected a JSON object, found ${describe(raw)}`);
  const version = raw.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) return bad(`'version' is ${describe(version)}, expected a whole number from 1 to ${STATE_VERSION}`);
  if (version > STATE_VERSION) {
    throw new BadInputError(
      `state file ${file}: was written by a newer vfpool (state version ${version}; this vfpool reads versions 1 to ${STATE_VERSION})`,
      'run the vfpool that wrote it, or upgrade this one',
    );
  }
  const f = new Fields(bad);
  // Keyed by pool name, which is user input: no prototype, so `constructor`, `toString` or
  // `__proto__` are names like any other (JSON.parse makes `__proto__` an own key; copying it
  // into a prototype-less object keeps it one).
  const pools = Object.create(null) as Record<string, unknown>;
  for (const [name, p] of Object.entries(f.object(raw, 'pools', ''))) {
    pools[name] = p;
    const at = `pools['${name}']`;
    const po = isObject(p) ? p : bad(`${at} is ${describe(p)}, expected an object`);
    f.string(po, 'xml', at);
    f.oneOf(po, 'origin', at, ['definition', 'libvirt-metadata']);
    f.array(po, 'activated', at);
    // Added within version 2 (managed binding undone at stop); absent means the start bound none
    // that existed before it.
    po.bound ??= [];
    f.array(po, 'bound', at);
    // Added within version 2 (the start/stop intent); absent means settled.
    po.change ??= null;
    if (po.change !== null) {
      const c = isObject(po.change) ? po.change : bad(`${at}.change is ${describe(po.change)}, expected an object or null`);
      f.oneOf(c, 'kind', `${at}.change`, ['starting', 'stopping']);
      f.number(c, 'worker', `${at}.change`);
      f.ticksOrNull(c, 'workerStart', `${at}.change`);
      f.array(c, 'from', `${at}.change`);
    }
    // Added within version 2 (PFs found by PCI address after a rename); absent means by name only.
    if (po.pfAddresses !== undefined) {
      f.array(po, 'pfAddresses', at).forEach((x, i) => {
        const xo = isObject(x) ? x : bad(`${at}.pfAddresses[${i}] is ${describe(x)}, expected an object`);
        f.string(xo, 'pf', `${at}.pfAddresses[${i}]`);
        f.pciAddress(xo, 'address', `${at}.pfAddresses[${i}]`);
      });
    }
    // Added within version 2 (a refused libvirt start of a running pool); absent means none.
    po.libvirtStartRefused ??= null;
    if (po.libvirtStartRefused !== null) f.string(po, 'libvirtStartRefused', at);
  }
  const allocations = f.array(raw, 'allocations', '').map((a, i) => upgradeAllocation(a, `allocations[${i}]`, f));
  const ports = f.array(raw, 'ports', '').map((p, i) => upgradePort(p, `ports[${i}]`, f));
  const bindings = raw.bindings === undefined && version === 1 ? [] : f.array(raw, 'bindings', '');
  bindings.forEach((b, i) => {
    const at = `bindings[${i}]`;
    const bo = isObject(b) ? b : bad(`${at} is ${describe(b)}, expected an object`);
    for (const k of ['domain', 'netdev', 'vfAddr']) f.string(bo, k, at);
  });
  // Added within version 2: absent means no stopped pool left VFs behind.
  const leftovers = raw.leftovers === undefined ? [] : f.array(raw, 'leftovers', '');
  leftovers.forEach((l, i) => {
    const at = `leftovers[${i}]`;
    const lo = isObject(l) ? l : bad(`${at} is ${describe(l)}, expected an object`);
    for (const k of ['pool', 'pf', 'since']) f.string(lo, k, at);
    // Added within version 2, as a pool's pfAddresses.
    if (lo.pfAddr !== undefined) f.pciAddress(lo, 'pfAddr', at);
  });
  // A newer vfpool may add a list within this version (as `leftovers` was added): kept as it is,
  // so that this one's next write (a downgrade, or one of its hooks still running at an
  // upgrade) does not drop it, as the records' own unknown fields are kept.
  // Added within version 2: absent means written before it was kept (of this boot, or not).
  const boot = raw.boot === undefined ? null : raw.boot;
  if (boot !== null && typeof boot !== 'string') bad(`'boot' is ${describe(boot)}, expected a boot id or null`);
  const { version: _v, pools: _p, allocations: _a, ports: _o, bindings: _b, leftovers: _l, boot: _boot, ...unknown } = raw;
  return {
    ...unknown,
    version: STATE_VERSION,
    pools: pools as VfpoolState['pools'],
    allocations,
    ports,
    bindings: bindings as VfpoolState['bindings'],
    leftovers: leftovers as VfpoolState['leftovers'],
    boot: boot as string | null,
  };
}

function upgradeAllocation(raw: unknown, at: string, f: Fields): Allocation {
  if (!isObject(raw)) return f.bad(`${at} is ${describe(raw)}, expected an object`);
  for (const k of ['pf', 'vfAddr', 'alias', 'createdAt']) f.string(raw, k, at);
  f.number(raw, 'vfIndex', at);
  f.oneOf(raw, 'phase', at, ALLOCATION_PHASES);
  // The fields that decide whether a guest still holds the VF, and which VF: one of the wrong
  // type is refused, never taken for a gone owner (which frees a running guest's VF) or for a
  // VF gone from the host (which drops the record and leaves the real VF as the guest had it).
  f.pciAddress(raw, 'vfAddr', at);
  const owner = f.object(raw, 'owner', at);
  f.name(owner, 'domain', `${at}.owner`);
  f.pidOrNull(owner, 'pid', `${at}.owner`);
  f.pidOrNull(owner, 'daemon', `${at}.owner`);
  f.ticksOrNull(owner, 'pidStart', `${at}.owner`);
  f.ticksOrNull(owner, 'daemonStart', `${at}.owner`);
  if (owner.via !== undefined) f.oneOf(owner, 'via', `${at}.owner`, ['libvirt', 'cli']);
  f.pidOrNull(raw, 'worker', at);
  f.ticksOrNull(raw, 'workerStart', at);
  const a = raw as unknown as Allocation & Record<string, unknown>;
  // Absent in version 1 records written before the field existed: the value the code then assumed.
  a.mode ??= 'hostdev';
  f.oneOf(a, 'mode', at, POOL_MODES);
  a.owner.via ??= 'libvirt';
  a.owner.uuid ??= null;
  a.owner.pid ??= null;
  a.iommuGroup ??= null;
  a.pairedMac ??= null;
  a.worker ??= null;
  a.vfioOwner ??= null;
  a.lastError ??= null;
  a.saved ??= null;
  // Before `applied` was recorded, a restore put back the admin MAC only.
  a.applied ??= a.saved ? { link: { mac: a.saved.link.mac }, mtu: null, driver: null } : null;
  // Added within version 2: absent means not kept (a migration then reads `applied`).
  a.requested ??= null;
  monoOrNull(a as unknown as Record<string, unknown>, at, f);
  return a;
}

function upgradePort(raw: unknown, at: string, f: Fields): PortRecord {
  if (!isObject(raw)) return f.bad(`${at} is ${describe(raw)}, expected an object`);
  for (const k of ['network', 'portUuid', 'domain']) f.string(raw, k, at);
  f.name(raw, 'domain', at);
  f.pidOrNull(raw, 'pid', at);
  f.ticksOrNull(raw, 'pidStart', at);
  if (raw.vfAddr !== undefined && raw.vfAddr !== null) f.pciAddress(raw, 'vfAddr', at);
  const p = raw as unknown as PortRecord;
  p.vfAddr ??= null;
  p.netdev ??= null;
  p.domainUuid ??= null;
  // Version 1 recorded a VF address only for hostdev-pci plugs, a netdev only for direct ones.
  p.plug ??= p.vfAddr !== null ? 'hostdev-pci' : 'direct';
  p.mac ??= null;
  p.createdAt ??= null;
  // Added within version 2: absent means not known yet.
  p.pid ??= null;
  monoOrNull(p as unknown as Record<string, unknown>, at, f);
  return p;
}

/** Added within version 2: absent means not kept (the grace then measures by the wall clock). */
function monoOrNull(o: Record<string, unknown>, at: string, f: Fields): void {
  o.createdMonoMs ??= null;
  if (o.createdMonoMs !== null && !(typeof o.createdMonoMs === 'number' && Number.isFinite(o.createdMonoMs) && o.createdMonoMs >= 0)) {
    f.bad(`${at}.createdMonoMs is ${describe(o.createdMonoMs)}, expected a number of milliseconds or null`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

/** Field checks that name the path of what is wrong ("allocations[2].vfAddr is missing"). */
class Fields {
  constructor(readonly bad: (what: string) => never) {}
  private path(at: string, key: string): string {
    return at ? `${at}.${key}` : `'${key}'`;
  }
  string(o: Record<string, unknown>, key: string, at: string): string {
    const v = o[key];
    return typeof v === 'string' ? v : this.bad(`${this.path(at, key)} is ${describe(v)}, expected a string`);
  }
  number(o: Record<string, unknown>, key: string, at: string): number {
    const v = o[key];
    return typeof v === 'number' ? v : this.bad(`${this.path(at, key)} is ${describe(v)}, expected a number`);
  }
  oneOf(o: Record<string, unknown>, key: string, at: string, allowed: readonly string[]): string {
    const v = o[key];
    return typeof v === 'string' && allowed.includes(v) ? v : this.bad(`${this.path(at, key)} is ${describe(v)}, expected one of ${allowed.join(', ')}`);
  }
  object(o: Record<string, unknown>, key: string, at: string): Record<string, unknown> {
    const v = o[key];
    return isObject(v) ? v : this.bad(`${this.path(at, key)} is ${describe(v)}, expected an object`);
  }
  /** A process id, or null/absent (not known yet). */
  /** A process start time (clock ticks since boot), absent or null when not known. */
  ticksOrNull(o: Record<string, unknown>, key: string, at: string): void {
    const v = o[key];
    if (v !== undefined && v !== null && !(typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) this.bad(`${this.path(at, key)} is ${describe(v)}, expected a process start time (a whole number of clock ticks) or null`);
  }
  pidOrNull(o: Record<string, unknown>, key: string, at: string): void {
    const v = o[key];
    if (v !== undefined && v !== null && !(typeof v === 'number' && Number.isInteger(v) && v > 0)) this.bad(`${this.path(at, key)} is ${describe(v)}, expected a process id (a whole number above 0) or null`);
  }
  pciAddress(o: Record<string, unknown>, key: string, at: string): void {
    const v = this.string(o, key, at);
    let ok = false;
    try {
      ok = parsePciAddress(v) === v;
    } catch {
      // not one
    }
    if (!ok) this.bad(`${this.path(at, key)} is ${describe(v)}, expected a PCI address such as 0000:3b:02.0`);
  }
  /** A domain name as vfpool accepts it (it stands in file names: index markers, plans). */
  name(o: Record<string, unknown>, key: string, at: string): void {
    const v = this.string(o, key, at);
    try {
      parseObjectName(v, 'name');
    } catch {
      this.bad(`${this.path(at, key)} is ${describe(v)}, expected a name of letters, digits and _ . + : -`);
    }
  }
  array(o: Record<string, unknown>, key: string, at: string): unknown[] {
    const v = o[key];
    return Array.isArray(v) ? v : this.bad(`${this.path(at, key)} is ${describe(v)}, expected a list`);
  }
}
