import { BadInputError } from '../errors.js';
import { parseDomainXml, type HostdevRequest } from '../config/domain-xml.js';
import { validateDomainPlan, type DomainPlanV1 } from '../state/domain-plan.js';
import { parseObjectName, type MacAddress } from '../types.js';
import { VFPOOL_NS } from '../util/xml.js';
import type { MigrationVfRequest } from './ports.js';
import { noVfSettings, parseVfSettingsJson, vfSettingsToJson, type VfSettingsJson } from '../vf-settings.js';

/**
 * Begin. What leaves the source describes what the guest ASKED for (pool, MAC, VLAN, …),
 * never what the source host GAVE it: its VFs' PCI addresses and the transient vfio-pci
 * devices mean nothing on another host.
 */

/** How the destination maps a request that names a source-only device; null: it cannot. */
export type SourceDeviceMapper = (req: HostdevRequest) => { pool: string } | null;

export interface BeginXmlResult {
  xml: string;
  /** One line per request changed, for the log. */
  mapped: string[];
}

// The vfpool:domain element inside <metadata>, whatever its prefix (libvirt keeps the
// document's, or re-serialises with the default namespace).
const HOSTDEV_TAG = /<((?:[A-Za-z_][\w.-]*:)?)hostdev\b([^>]*?)(\/?)>/g;

function metadataRange(xml: string): { start: number; end: number } | null {
  const open = /<metadata\b[^>]*>/.exec(xml);
  if (!open) return null;
  const close = xml.indexOf('</metadata>', open.index);
  return close < 0 ? null : { start: open.index, end: close };
}

/**
 * Where vfpool's `<P:domain xmlns:P="…vfpool…">` lies in `<metadata>`'s text, and its prefix P
 * (with its colon; '' for a default namespace). libvirt re-serialises each metadata element
 * with its declaration on it. Another application's metadata may hold an element named
 * hostdev too: only vfpool's own are counted. null when no declaration names vfpool's namespace.
 */
function vfpoolDomainRange(meta: string): { start: number; end: number; prefix: string } | null {
  for (const m of meta.matchAll(/<((?:[A-Za-z_][\w.-]*:)?)domain\b([^>]*?)(\/?)>/g)) {
    const prefix = m[1]!;
    const decl = prefix ? `xmlns:${prefix.slice(0, -1)}` : 'xmlns';
    const declares = [...m[2]!.matchAll(/\s([\w.:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)].some((a) => a[1] === decl && (a[2] ?? a[3]) === VFPOOL_NS);
    if (!declares) continue;
    if (m[3]) return { start: m.index, end: m.index + m[0].length, prefix };
    const close = meta.indexOf(`</${prefix}domain>`, m.index);
    return { start: m.index, end: close < 0 ? meta.length : close, prefix };
  }
  return null;
}

function dropAttrs(attrs: string, names: string[]): string {
  let out = attrs;
  for (const n of names) out = out.replace(new RegExp(`\\s+${n}\\s*=\\s*("[^"]*"|'[^']*')`), '');
  return out;
}

function setAttr(attrs: string, name: string, value: string): string {
  const re = new RegExp(`(\\s${name}\\s*=\\s*)("[^"]*"|'[^']*')`);
  return re.test(attrs) ? attrs.replace(re, `$1'${value}'`) : `${attrs} ${name}='${value}'`;
}

/**
 * libvirt's `migrate begin` hook on the destination: the domain XML in, the XML to use out.
 * A `<vfpool:hostdev>` that names a source-only device (`netdev=`, `address=`) is mapped to a
 * pool of this host (its own `pool=`, else `mapDevice`) or refused with one sentence, before
 * anything is reserved: the refusal cancels the migration and leaves the source untouched.
 */
export function migrateBeginXml(xml: string, mapDevice: SourceDeviceMapper, where = 'migrate begin'): BeginXmlResult {
  const spec = parseDomainXml(xml, where);
  const dom = `domain '${spec.name}'`;
  const changes = new Map<number, { pool: string; line: string }>();
  spec.hostdevs.forEach((h, i) => {
    if (h.netdev === null && h.address === null) return;
    const named = h.address !== null ? `address='${h.address}'` : `netdev='${h.netdev}'`;
    const pool = h.pool ?? mapDevice(h)?.pool ?? null;
    if (pool === null) {
      throw new BadInputError(
        `${h.field}: names ${named}, a device of the source host, which the destination cannot hold`,
        `give the request a pool (pool='POOL' beside ${named.split('=')[0]}) so that any VF of that pool will do after a migration`,
      );
    }
    changes.set(i, { pool, line: `${dom}: vfpool:hostdev #${i + 1}: ${named} (source host) replaced by pool='${pool}'` });
  });
  if (changes.size === 0) return { xml, mapped: [] };
  const range = metadataRange(xml);
  if (!range) throw new BadInputError(`${dom}: vfpool:hostdev requests found but no <metadata> element in the XML text`);
  const metaAll = xml.slice(range.start, range.end);
  // An XML whose vfpool namespace is declared above <metadata> (not as libvirt writes it): every
  // hostdev in <metadata> counts, as before.
  const own = vfpoolDomainRange(metaAll) ?? { start: 0, end: metaAll.length, prefix: null };
  const meta = metaAll.slice(own.start, own.end);
  let k = -1;
  let seen = 0;
  const edited = meta.replace(HOSTDEV_TAG, (whole, prefix: string, attrs: string, selfClose: string) => {
    // Only vfpool's hostdev elements count (libvirt's own <hostdev> lives in <devices>, not here).
    if (own.prefix !== null && prefix !== own.prefix) return whole;
    k++;
    const c = changes.get(k);
    if (!c) return whole;
    seen++;
    return `<${prefix}hostdev${setAttr(dropAttrs(attrs, ['netdev', 'address']), 'pool', c.pool)}${selfClose}>`;
  });
  if (seen !== changes.size) throw new BadInputError(`${dom}: could not locate ${changes.size - seen} vfpool:hostdev element(s) in the XML text to map`);
  return { xml: xml.slice(0, range.start + own.start) + edited + xml.slice(range.start + own.end), mapped: [...changes.values()].map((c) => c.line) };
}

/** What the source sends the destination in a migration without libvirt (`vfpool migrate begin`). */
export interface MigrationDescriptionV1 {
  version: 1;
  domain: string;
  uuid: string | null;
  delivery: DomainPlanV1['delivery'];
  vfs: Array<{
    id: string;
    pool: string;
    mac: MacAddress | null;
    failoverStandbyMac: MacAddress | null;
    guestAddress: { slot: number } | null;
    /** What the request asked for beyond pool and MAC (src/vf-settings.ts), only what it named. */
    settings: VfSettingsJson;
  }>;
  sriovNics: DomainPlanV1['sriovNics'];
}

/** The source's plan's requests, for the destination: pools and MACs, no host addresses. */
export type RequestLookup = (domain: string, vfId: string) => { pool: string; settings: VfSettingsJson } | null;

/** `vfpool migrate begin DOMAIN` on the source: the description, from the plan and the requests behind it. */
export function describeForMigration(plan: DomainPlanV1, requestOf: RequestLookup): MigrationDescriptionV1 {
  return {
    version: 1,
    domain: plan.domain,
    uuid: plan.uuid,
    delivery: plan.delivery,
    vfs: plan.vfs.map((vf) => {
      const req = requestOf(plan.domain, vf.id);
      if (!req) {
        throw new BadInputError(
          `domain '${plan.domain}': ${vf.id} was not given from a pool, so the destination has nothing to ask for`,
          "only pool requests migrate: give the request pool='POOL' (a netdev= or address= names a device of this host)",
        );
      }
      return { id: vf.id, pool: req.pool, mac: vf.mac, failoverStandbyMac: vf.failoverStandbyMac, guestAddress: vf.guestAddress, settings: req.settings };
    }),
    sriovNics: plan.sriovNics,
  };
}

const DESCRIPTION_HINT = 'give the output of `vfpool migrate begin DOMAIN` on the source';

/**
 * A description comes from another host, and its fields become this host's plan, records and
 * QEMU arguments: every one is checked here, the plan's part as the plan it becomes.
 */
export function validateDescription(value: unknown, where: string): MigrationDescriptionV1 {
  const o = value as MigrationDescriptionV1;
  const bad = (what: string): never => {
    throw new BadInputError(`${where}: ${what}`, DESCRIPTION_HINT);
  };
  if (!o || typeof o !== 'object' || o.version !== 1) bad('is not a version 1 migration description');
  if (typeof o.domain !== 'string' || !Array.isArray(o.vfs) || !Array.isArray(o.sriovNics)) bad('needs domain, vfs and sriovNics');
  for (const [i, v] of o.vfs.entries()) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) bad(`vfs[${i}] is not an object`);
    if (typeof v.id !== 'string' || !/^vfpool-vf[0-9]{1,3}$/.test(v.id)) bad(`vfs[${i}].id is not 'vfpool-vfN'`);
    if (typeof v.pool !== 'string') bad(`vfs[${i}] has no pool`);
    parseObjectName(v.pool, `${where}: vfs[${i}].pool`);
    if ('host' in (v as object)) bad(`vfs[${i}] carries a host address: a description never names the source's devices`);
    if (!v.settings || typeof v.settings !== 'object' || Array.isArray(v.settings)) bad(`vfs[${i}].settings is not an object (the VF's settings on the source, such as {"vlan": 100})`);
  }
  // Checked as the XML's attributes are, and kept as parsed: these become the destination's VF settings.
  const vfs = o.vfs.map((v, i) => ({ ...v, settings: vfSettingsToJson(parseVfSettingsJson(v.settings as Record<string, unknown>, `${where}: vfs[${i}].settings`)) }));
  // The destination picks each VF's device only at prepare: a description has neither a host
  // address nor a model, which a plan must. A placeholder model lets every other field be
  // checked as the plan will check it; only the checked fields are taken from the result.
  const plan = validateDomainPlan(
    { version: 1, domain: o.domain, uuid: o.uuid, delivery: o.delivery, sriovNics: o.sriovNics, vfs: o.vfs.map((v) => ({ id: v.id, host: null, emulatedModel: 'pending', mac: v.mac, failoverStandbyMac: v.failoverStandbyMac, guestAddress: v.guestAddress })) },
    where,
    DESCRIPTION_HINT,
  );
  return { ...o, domain: plan.domain, uuid: plan.uuid, delivery: plan.delivery, sriovNics: plan.sriovNics, vfs };
}

export function requestsOf(d: MigrationDescriptionV1): MigrationVfRequest[] {
  return d.vfs.map((v) => ({ id: v.id, pool: v.pool, mac: v.mac, settings: { ...noVfSettings(), ...v.settings } }));
}
