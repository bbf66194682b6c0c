/**
 * Hostile input, fuzzed, in process: the pool and domain XML parsers must turn anything into
 * either a validated spec or ONE BadInputError line, never another error (a "vfpool bug"), and
 * nothing they return may stand in a path outside its directory.
 */
import t from 'tap';
import fc from 'fast-check';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { BadInputError } from '../../src/errors.js';
import { checkProperty, HOSTILE_STRINGS } from '../helpers/fuzz.js';
import { NS } from '../helpers/libvirt-domains.js';

const SAFE_NAME = /^[A-Za-z0-9_+][A-Za-z0-9_.+:-]{0,127}$/;
const SAFE_NETDEV = /^[A-Za-z0-9_.@+-]{1,15}$/;
const PCI = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Runs `parse`; a BadInputError must be one printable line; anything else is a failure. */
function outcome<T>(parse: () => T): T | BadInputError {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof BadInputError)) throw new Error(`not a BadInputError: ${err instanceof Error ? err.stack : String(err)}`);
    const line = err.toLine();
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(line)) throw new Error(`control character in the message: ${JSON.stringify(line)}`);
    if (line.length > 2000) throw new Error(`a ${line.length}-character message`);
    return err;
  }
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');
// Attribute values: hostile strings, numbers around every range, and plain noise.
const value = fc.oneof(
  fc.constantFrom(...HOSTILE_STRINGS),
  fc.integer({ min: -5, max: 70000 }).map(String),
  fc.constantFrom('0x1f', '0x20', '0xff', '0x100', '0xffff', '0x10000', '0x-1', '1e3', 'NaN', '4096', '4097', '4095', '65535', '65536', '1000001'),
  fc.string({ maxLength: 20 }),
  fc.constantFrom('52:54:00:11:22:33', '53:54:00:11:22:33', '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '52:54:00:11:22', '52-54-00-11-22-33'),
);
const attrs = (names: string[]) =>
  fc.dictionary(fc.constantFrom(...names), value, { maxKeys: names.length }).map((d) =>
    Object.entries(d).map(([k, v]) => ` ${k}='${xmlEscape(v)}'`).join(''));

const poolXml = fc
  .record({
    name: value,
    mode: fc.oneof(fc.constantFrom('hostdev', 'passthrough', 'pci-passthrough-hybrid'), value),
    pfs: fc.array(fc.tuple(attrs(['dev']), fc.option(attrs(['num']))), { maxLength: 3 }),
    addrs: fc.array(attrs(['type', 'domain', 'bus', 'slot', 'function']), { maxLength: 2 }),
    ifs: fc.array(attrs(['dev']), { maxLength: 2 }),
    meta: fc.boolean(),
  })
  .map((p) => {
    const members =
      p.pfs.map(([a, vf]) => (vf === null ? `<pf${a}/>` : `<pf${a}><vf${vf}/></pf>`)).join('') +
      p.addrs.map((a) => `<address${a}/>`).join('') +
      p.ifs.map((a) => `<interface${a}/>`).join('');
    const body = p.meta
      ? `<forward mode='${xmlEscape(p.mode)}'/><metadata><v:pool xmlns:v='${NS}'>${members.replace(/<(\/?)/g, '<$1v:')}</v:pool></metadata>`
      : `<forward mode='${xmlEscape(p.mode)}'>${members}</forward>`;
    return `<network><name>${xmlEscape(p.name)}</name>${body}</network>`;
  });

const HOSTDEV_ATTRS = ['pool', 'netdev', 'address', 'mac', 'vlan', 'qos', 'spoofchk', 'trust', 'link-state', 'min-tx-rate', 'max-tx-rate', 'mtu', 'bogus'];
const domainXmlArb = fc
  .record({
    name: value,
    uuid: fc.option(value),
    hostdevs: fc.array(attrs(HOSTDEV_ATTRS), { maxLength: 3 }),
    nics: fc.array(fc.record({ mac: fc.option(value), net: fc.option(value), tag: fc.option(value), mtu: fc.option(value) }), { maxLength: 3 }),
    label: fc.option(value),
  })
  .map((d) => {
    const nics = d.nics
      .map((n) => `<interface type='network'>${n.mac === null ? '' : `<mac address='${xmlEscape(n.mac)}'/>`}${n.net === null ? '' : `<source network='${xmlEscape(n.net)}'/>`}${n.tag === null ? '' : `<vlan><tag id='${xmlEscape(n.tag)}'/></vlan>`}${n.mtu === null ? '' : `<mtu size='${xmlEscape(n.mtu)}'/>`}</interface>`)
      .join('');
    return `<domain type='kvm'><name>${xmlEscape(d.name)}</name>${d.uuid === null ? '' : `<uuid>${xmlEscape(d.uuid)}</uuid>`}` +
      `<metadata><vfpool:domain xmlns:vfpool='${NS}'>${d.hostdevs.map((a) => `<vfpool:hostdev${a}/>`).join('')}</vfpool:domain></metadata>` +
      `<devices>${nics}</devices>${d.label === null ? '' : `<seclabel type='dynamic' model='dac'><label>${xmlEscape(d.label)}</label></seclabel>`}</domain>`;
  });

// Broken documents: truncations and splices of valid ones, entities, DOCTYPE, deep nesting.
const VALID_POOL = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
const VALID_DOMAIN = `<domain type='kvm'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='${NS}'><vfpool:hostdev pool='p' mac='52:54:00:11:22:33'/></vfpool:domain></metadata></domain>`;
const mangled = (doc: string) =>
  fc.oneof(
    fc.nat({ max: doc.length }).map((n) => doc.slice(0, n)),
    fc.tuple(fc.nat({ max: doc.length }), fc.constantFrom('<', '>', '&', '&amp;', '&xxe;', '&#0;', '&#x110000;', ']]>', '<!--', '<?xml?>', '\0', '"', "'", '</a>', '<a>', 'xmlns:vfpool="x"')).map(([n, s]) => doc.slice(0, n) + s + doc.slice(n)),
    fc.constantFrom(
      `<!DOCTYPE d [<!ENTITY x "xx">]>${doc}`,
      `<!doctype network SYSTEM "file:///etc/passwd">${doc}`,
      doc.replace('<name>', '<name>&x;'),
      doc.replace('<name>', '<name>&#10;'),
      doc.replace(/<name>[^<]*/, `<name>${'<a>'.repeat(120)}${'</a>'.repeat(120)}`),
      doc.replace(/<name>[^<]*/, '<name><![CDATA[../../x]]>'),
      doc + doc,
      '',
      '\uFEFF' + doc,
    ),
    fc.string({ maxLength: 200 }),
  );

t.test('pool XML: any document gives a valid pool or one bad-input line', async (t) => {
  const check = (xml: string) => {
    const r = outcome(() => parsePoolXml(xml, 'fuzz.xml'));
    if (r instanceof BadInputError) return true;
    // What is accepted is safe to use in a path and in argv.
    return SAFE_NAME.test(r.name) && r.pfs.every((p) => SAFE_NETDEV.test(p.dev) && p.dev !== '.' && p.dev !== '..') &&
      r.interfaces.every((d) => SAFE_NETDEV.test(d)) && r.addresses.every((a) => PCI.test(a)) &&
      r.pfs.every((p) => p.numVfs === null || (Number.isInteger(p.numVfs) && p.numVfs >= 1 && p.numVfs <= 4096));
  };
  await checkProperty(t, 'generated pool XML', fc.property(poolXml, check), 400);
  await checkProperty(t, 'mangled pool XML', fc.property(mangled(VALID_POOL), check), 400);
});

t.test('domain XML: any document gives a valid spec or one bad-input line', async (t) => {
  const check = (xml: string) => {
    const r = outcome(() => parseDomainXml(xml, "domain 'fuzz'"));
    if (r instanceof BadInputError) return true;
    return SAFE_NAME.test(r.name) &&
      r.hostdevs.every((h) => (h.pool === null || SAFE_NAME.test(h.pool)) && (h.netdev === null || SAFE_NETDEV.test(h.netdev)) &&
        (h.address === null || PCI.test(h.address)) && MAC.test(h.mac) && (h.vlan === null || (h.vlan >= 0 && h.vlan <= 4095)) &&
        (h.mtu === null || (h.mtu >= 68 && h.mtu <= 65535))) &&
      r.networkInterfaces.every((n) => SAFE_NAME.test(n.network));
  };
  await checkProperty(t, 'generated domain XML', fc.property(domainXmlArb, check), 400);
  await checkProperty(t, 'mangled domain XML', fc.property(mangled(VALID_DOMAIN), check), 400);
});

t.test('a 10 MB document is refused in one line, before it is parsed', async (t) => {
  const big = `<domain type='kvm'><name>vm1</name><description>${'x'.repeat(10 * 1024 * 1024)}</description></domain>`;
  t.throws(() => parseDomainXml(big, "domain 'vm1'"), { constructor: BadInputError, message: "domain 'vm1': 10.0 MiB of XML, more than vfpool reads (4 MiB)" });
  // The limit is in bytes, as documented: 1.5 Mi characters of Chinese are 4.5 MiB of UTF-8
  // (counted in characters, they were let through, 1.5 MiB).
  const chinese = `<domain type='kvm'><name>vm1</name><description>${'中'.repeat(1.5 * 1048576)}</description></domain>`;
  t.throws(() => parseDomainXml(chinese, "domain 'vm1'"), { constructor: BadInputError, message: "domain 'vm1': 4.5 MiB of XML, more than vfpool reads (4 MiB)" });
  const wide = `<network><name>p</name><forward mode='hostdev'>${"<pf dev='eth1'/>".repeat(600_000)}</forward></network>`;
  t.throws(() => parsePoolXml(wide, 'wide.xml'), BadInputError);
  // Under the limit, a wide document is parsed and refused for what it says.
  const dup = `<network><name>p</name><forward mode='hostdev'>${"<pf dev='eth1'/>".repeat(20_000)}</forward></network>`;
  t.throws(() => parsePoolXml(dup, 'dup.xml'), { constructor: BadInputError, message: "dup.xml: 'eth1' is listed twice" });
});
