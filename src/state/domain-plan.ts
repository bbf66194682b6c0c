import { chmodSync, chownSync, lstatSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { makeDir } from '../util/make-dir.js';
import { join } from 'node:path';
import { BadInputError, errnoOf, HostError } from '../errors.js';
import { parseGuestMac, parseObjectName, parsePciAddress, type MacAddress, type PciAddress } from '../types.js';
import { readTextNoFollow, symlinkRefused, writeFileNoFollow } from '../util/json-file.js';
import { lazyCrypto } from '../util/lazy-builtins.js';
import { assertStateDirTrusted } from '../util/state-dir-owner.js';

/**
 * The per-domain wrapper file: what `prepare` (root) decided for one domain, read by the QEMU
 * wrapper, which under libvirt runs as the domain's QEMU user and cannot read root's state.
 *
 *   $VFPOOL_STATE_DIR/qemu/<domain>/plan.json   (dir 0700, file 0600, both owned by QEMU's uid:gid)
 *
 * The QEMU user may write the directory (QEMU creates vfpool's QMP socket there), so the
 * wrapper validates everything it reads: a plan is data that ends up in QEMU's argv.
 */
export interface DomainPlanVf {
  /** QEMU device id, stable: `vfpool-vf0`, `vfpool-vf1`, … (request order). */
  id: string;
  /** The VF's BDF (vfio-pci host=); null when emulated. */
  host: PciAddress | null;
  /** Simulated host + VFPOOL_SIM_VF_DEVICE: a QEMU NIC model (e.g. `e1000e`) instead of vfio-pci. */
  emulatedModel: string | null;
  /** The MAC set on the VF (an emulated NIC carries it as mac=). */
  mac: MacAddress | null;
  /** Hybrid: the virtio-net standby on libvirt's command line, found by this MAC. */
  failoverStandbyMac: MacAddress | null;
  /** Pinned by metadata (`guest-slot`), else generated deterministically from the command line. */
  guestAddress: { slot: number } | null;
}

export interface DomainPlanSriovNic {
  /** `vfpool-sriov0`, … : the PF is `ID-pf`, VF M is `ID-vfM`, netdev K is `ID-netK` (0 = PF). */
  id: string;
  vfs: number;
  /** The netdev type every function gets (`user`, `tap`, `socket`, …). */
  backend: string;
  /** Extra `-netdev` options (kv, no id), the same for every function. */
  backendOptions: string | null;
  /** PF first, then VF 0..N-1; stable per domain. */
  macs: MacAddress[];
}

export interface DomainPlanV1 {
  version: 1;
  domain: string;
  uuid: string | null;
  /** 'cmdline': devices go on QEMU's command line; 'hotplug': the wrapper reserves root ports, the `started` hook device_adds. */
  delivery: 'cmdline' | 'hotplug';
  vfs: DomainPlanVf[];
  sriovNics: DomainPlanSriovNic[];
}

export { MAX_SRIOV_NIC_VFS, SRIOV_BACKENDS, validateBackend } from '../sriov-nic-settings.js';
import { MAX_SRIOV_NIC_VFS, validateBackend } from '../sriov-nic-settings.js';
const MODEL_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;


const PLAN_FILE_HINT = 'this file is written by vfpool at prepare: run `vfpool release DOMAIN` and start the domain again';

function fail(file: string, what: string, hint = PLAN_FILE_HINT): never {
  throw new BadInputError(`${file}: ${what}`, hint);
}

/**
 * Checks a parsed plan field by field; everything in it may end up in QEMU's argv. `hint` is
 * what to do about a bad one: the default speaks of a plan file; a migration description,
 * checked as the plan it becomes (src/migrate/begin.ts), gives its own.
 */
export function validateDomainPlan(value: unknown, file: string, hint = PLAN_FILE_HINT): DomainPlanV1 {
  const bad: (what: string) => never = (what) => fail(file, what, hint);
  const o = value as Record<string, unknown>;
  if (!o || typeof o !== 'object' || Array.isArray(o)) bad('is not a JSON object');
  if (o.version !== 1) bad(`has version ${JSON.stringify(o.version)}, this vfpool reads version 1`);
  if (typeof o.domain !== 'string') bad('has no domain name');
  const domain = parseObjectName(o.domain, `${file}: domain`);
  if (o.uuid !== null && (typeof o.uuid !== 'string' || !/^[0-9a-f-]{32,36}$/.test(o.uuid))) bad(`uuid ${JSON.stringify(o.uuid)} is not a UUID`);
  if (o.delivery !== 'cmdline' && o.delivery !== 'hotplug') bad(`delivery ${JSON.stringify(o.delivery)} is not 'cmdline' or 'hotplug'`);
  if (!Array.isArray(o.vfs) || !Array.isArray(o.sriovNics)) bad('needs the arrays vfs and sriovNics');
  const mac = (v: unknown, f: string): MacAddress | null => (v === null ? null : typeof v === 'string' ? parseGuestMac(v, `${file}: ${f}`) : bad(`${f} is not a MAC`));
  const seenIds = new Set<string>();
  const vfs = (o.vfs as unknown[]).map((raw, i): DomainPlanVf => {
    const v = raw as Record<string, unknown>;
    const f = `vfs[${i}]`;
    if (!v || typeof v !== 'object') bad(`${f} is not an object`);
    if (typeof v.id !== 'string' || !/^vfpool-vf[0-9]{1,3}$/.test(v.id) || seenIds.has(v.id)) bad(`${f}.id ${JSON.stringify(v.id)} is not a unique 'vfpool-vfN'`);
    seenIds.add(v.id);
    const host = v.host === null ? null : typeof v.host === 'string' ? parsePciAddress(v.host, `${file}: ${f}.host`) : bad(`${f}.host is not a PCI address`);
    const model = v.emulatedModel;
    if (model !== null && (typeof model !== 'string' || !MODEL_RE.test(model))) bad(`${f}.emulatedModel ${JSON.stringify(model)} is not a QEMU device name`);
    if (host === null && model === null) bad(`${f} has neither host nor emulatedModel`);
    const ga = v.guestAddress as { slot?: unknown } | null;
    if (ga !== null && (typeof ga !== 'object' || !Number.isInteger(ga.slot) || (ga.slot as number) < 1 || (ga.slot as number) > 31)) bad(`${f}.guestAddress ${JSON.stringify(ga)} is not {slot: 1..31}`);
    return {
      id: v.id,
      host,
      emulatedModel: model as string | null,
      mac: mac(v.mac, `${f}.mac`),
      failoverStandbyMac: mac(v.failoverStandbyMac, `${f}.failoverStandbyMac`),
      guestAddress: ga === null ? null : { slot: ga.slot as number },
    };
  });
  const sriovNics = (o.sriovNics as unknown[]).map((raw, i): DomainPlanSriovNic => {
    const n = raw as Record<string, unknown>;
    const f = `sriovNics[${i}]`;
    if (!n || typeof n !== 'object') bad(`${f} is not an object`);
    if (n.id !== `vfpool-sriov${i}`) bad(`${f}.id ${JSON.stringify(n.id)} is not 'vfpool-sriov${i}'`);
    if (!Number.isInteger(n.vfs) || (n.vfs as number) < 1 || (n.vfs as number) > MAX_SRIOV_NIC_VFS) bad(`${f}.vfs ${JSON.stringify(n.vfs)} is not 1..${MAX_SRIOV_NIC_VFS}`);
    if (typeof n.backend !== 'string') bad(`${f}.backend is missing`);
    if (n.backendOptions !== null && typeof n.backendOptions !== 'string') bad(`${f}.backendOptions is not a string`);
    validateBackend(n.backend, n.backendOptions as string | null, `${file}: ${f}`);
    if (!Array.isArray(n.macs) || n.macs.length !== (n.vfs as number) + 1) bad(`${f}.macs must list ${(n.vfs as number) + 1} MACs (PF, then each VF)`);
    return { id: n.id, vfs: n.vfs as number, backend: n.backend, backendOptions: n.backendOptions as string | null, macs: (n.macs as unknown[]).map((m, k) => mac(m, `${f}.macs[${k}]`)!) };
  });
  return { version: 1, domain, uuid: (o.uuid as string | null) ?? null, delivery: o.delivery as DomainPlanV1['delivery'], vfs, sriovNics };
}

/**
 * Stable MACs for an emulated SR-IOV NIC's functions (virtio-net VFs take no MAC through the
 * PF: each needs its own mac= on the command line). Derived from the domain's identity, so the
 * guest sees the same MACs on every boot: 52:54:00 (QEMU's prefix) + 3 bytes of a hash.
 */
export function sriovNicMacs(domain: string, uuid: string | null, nicIndex: number, vfs: number, avoid: Iterable<string> = []): MacAddress[] {
  const { createHash } = lazyCrypto();
  const taken = new Set<string>(avoid);
  const macs: MacAddress[] = [];
  for (let fn = 0; fn <= vfs; fn++) {
    for (let attempt = 0; ; attempt++) {
      const h = createHash('sha256').update(`${uuid ?? domain}/sriov-nic/${nicIndex}/${fn}/${attempt}`).digest();
      const mac = `52:54:00:${[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
      if (taken.has(mac)) continue;
      taken.add(mac);
      macs.push(mac as MacAddress);
      break;
    }
  }
  return macs;
}

function domainDir(stateDir: string, domain: string): string {
  return join(stateDir, 'qemu', parseObjectName(domain, 'domain'));
}

export function domainPlanPath(stateDir: string, domain: string): string {
  return join(domainDir(stateDir, domain), 'plan.json');
}

/**
 * A Unix socket's path must fit sun_path, 108 bytes with its NUL (unix(7)); QEMU refuses a
 * longer one ("UNIX socket path … is too long") and never starts. A 128-character domain name
 * under /run/vfpool makes one.
 */
const SOCKET_PATH_MAX = 107;

/**
 * Where a domain whose own directory is too deep for its socket reaches it: a link in qemu/,
 * named by a hash of the domain name (as libvirt shortens names in its socket paths), to the
 * domain's directory. Root makes it (qemu/ is root's, 0711: no QEMU user can plant or move
 * it); the socket itself stays in the domain's directory, where its QEMU user creates it.
 * null: the direct path fits, no link.
 */
export function qmpLinkPath(stateDir: string, domain: string): string | null {
  const name = parseObjectName(domain, 'domain');
  if (Buffer.byteLength(join(domainDir(stateDir, name), 'qmp.sock')) <= SOCKET_PATH_MAX) return null;
  // A dot: domain names never start with one, so the link is never taken for a domain's directory.
  return join(stateDir, 'qemu', `.qmp-${lazyCrypto().createHash('sha256').update(name).digest('hex').slice(0, 16)}`);
}

/**
 * vfpool's QMP socket for the domain (created by QEMU itself, as the QEMU user): in the domain's
 * directory, through the short link when the direct path would not fit sun_path. The one place
 * the path is computed: the wrapper gives it to QEMU, and plug, guest-devices, the migration
 * stages and reconcile connect to it.
 */
export function domainQmpSocketPath(stateDir: string, domain: string): string {
  const link = qmpLinkPath(stateDir, domain);
  return join(link ?? domainDir(stateDir, domain), 'qmp.sock');
}

/** Makes (or repoints) the domain's short link, when it needs one: atomically, by rename over it. */
function linkQmpDir(stateDir: string, domain: string): void {
  const link = qmpLinkPath(stateDir, domain);
  if (link === null) return;
  try {
    if (readlinkSync(link) === domain) return;
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT' && errnoOf(err) !== 'EINVAL') throw err;
  }
  const tmp = `${link}.${process.pid}`;
  rmSync(tmp, { force: true });
  // Relative: a copy of the state directory (a backup, a test's copy of a host) keeps it right.
  symlinkSync(domain, tmp);
  renameSync(tmp, link);
}

/** The domain's wrapper directory (owned by its QEMU user): the plan, the QMP socket, the capability cache. */
export function domainRunDir(stateDir: string, domain: string): string {
  return domainDir(stateDir, domain);
}

/**
 * Writes the plan atomically (temp file + fsync + rename), 0600, in a 0700 directory, both
 * owned by `owner` (the domain's QEMU uid:gid from its DAC label; root without libvirt).
 * `$VFPOOL_STATE_DIR` and its `qemu/` get o+x (0711): the QEMU user must traverse them, never list.
 */
export async function writeDomainPlan(stateDir: string, plan: DomainPlanV1, owner: { uid: number; gid: number }): Promise<string> {
  const checked = validateDomainPlan(plan, `plan of domain '${plan.domain}'`);
  const dir = domainDir(stateDir, checked.domain);
  assertStateDirTrusted(stateDir);
  try {
    // The state directory first, with its own mode: made as qemu/'s parent it would be 0755.
    makeDir(stateDir, 0o700);
    makeDir(join(stateDir, 'qemu'), 0o711);
    for (const d of [stateDir, join(stateDir, 'qemu')]) {
      // lstat: a chmod through a link planted for qemu/ would open its target to every user.
      const st = lstatSync(d);
      if (st.isSymbolicLink()) throw symlinkRefused('the QEMU plans directory', d);
      const mode = st.mode & 0o777;
      if ((mode & 0o711) !== 0o711) chmodSync(d, mode | 0o711);
    }
    mkdirSync(dir, { mode: 0o700, recursive: true });
    const st = lstatSync(dir);
    if (st.isSymbolicLink()) throw symlinkRefused(`the QEMU plan directory of domain '${checked.domain}'`, dir);
    if (!st.isDirectory()) throw new HostError(`${dir} is not a directory`, { hint: 'remove it' });
    chmodSync(dir, 0o700);
    chownSync(dir, owner.uid, owner.gid);
    linkQmpDir(stateDir, checked.domain);
    const file = join(dir, 'plan.json');
    // The directory may be the QEMU user's from an earlier run (a release that never came): a
    // link it planted for plan.json is refused here, and one planted after this is replaced by
    // the rename, never written through (writeFileNoFollow).
    if (lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink()) throw symlinkRefused(`the QEMU plan of domain '${checked.domain}'`, file);
    writeFileNoFollow(file, JSON.stringify(checked, null, 2) + '\n', { mode: 0o600, owner });
    return file;
  } catch (err) {
    if (err instanceof HostError || err instanceof BadInputError) throw err;
    throw new HostError(`cannot write the QEMU plan of domain '${checked.domain}' in ${dir}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), cause: err });
  }
}

/** Reads and validates the plan; null when the domain has none (vfpool adds nothing to its QEMU). */
export function readDomainPlan(stateDir: string, domain: string): DomainPlanV1 | null {
  const file = domainPlanPath(stateDir, domain);
  assertStateDirTrusted(stateDir);
  let text: string;
  try {
    // The QEMU user owns the directory: root (reconcile, migrate, started) must not read through a link it planted.
    text = readTextNoFollow(file);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    if (errnoOf(err) === 'ELOOP') throw symlinkRefused(`the QEMU plan of domain '${domain}'`, file, err);
    throw new HostError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), hint: 'it must be readable by the user QEMU runs as', cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    fail(file, `is not valid JSON: ${(err as Error).message}`);
  }
  const plan = validateDomainPlan(value, file);
  if (plan.domain !== domain) fail(file, `is the plan of domain '${plan.domain}', not '${domain}'`);
  return plan;
}

/**
 * The plan entries of a domain's `<vfpool:sriov-nic>` requests, ids and MACs filled in (MACs
 * stable per domain, none equal to `avoidMacs`: the domain's other NICs).
 */
export function sriovNicPlans(
  domain: string,
  uuid: string | null,
  nics: Array<{ vfs: number; backend: string; backendOptions: string | null }>,
  avoidMacs: Iterable<string> = [],
): DomainPlanSriovNic[] {
  const taken = new Set<string>(avoidMacs);
  return nics.map((n, i) => {
    const macs = sriovNicMacs(domain, uuid, i, n.vfs, taken);
    macs.forEach((m) => taken.add(m));
    return { id: `vfpool-sriov${i}`, vfs: n.vfs, backend: n.backend, backendOptions: n.backendOptions, macs };
  });
}
