import t from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { networkElement, parsePoolXml, poolFromNetwork } from '../../src/config/pool-xml.js';
import { BadInputError } from '../../src/errors.js';
import { parseObjectName } from '../../src/types.js';
import { escapeControl, quoteInput } from '../../src/util/quote.js';
import { parseXml } from '../../src/util/xml.js';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { domainXml, NS } from '../helpers/libvirt-domains.js';
import { spawnEntry } from '../helpers/spawn.js';

t.test('the vfpool namespace declared on <domain> applies to its <metadata> (XML scoping)', async (t) => {
  const xml = `<domain type='kvm' xmlns:vfpool='${NS}'><name>vm1</name>
    <metadata><vfpool:domain><vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/></vfpool:domain></metadata></domain>`;
  t.same(parseDomainXml(xml, 'x').hostdevs.map((h) => [h.pool, h.mac]), [['sriov-pool', '52:54:00:11:22:33']]);
  // Matched by URI, not by prefix: another prefix bound to another URI is not vfpool's.
  const other = xml.replace(`xmlns:vfpool='${NS}'`, "xmlns:vfpool='https://example.com/other'");
  t.same(parseDomainXml(other, 'x').hostdevs, []);
  // The nearest declaration wins: <metadata> rebinding the prefix hides the one on <domain>.
  const rebound = xml.replace('<metadata>', "<metadata xmlns:vfpool='https://example.com/other'>");
  t.same(parseDomainXml(rebound, 'x').hostdevs, []);
});

t.test('the vfpool namespace declared on <network> applies to its <metadata>', async (t) => {
  const xml = `<network xmlns:v='${NS}'><name>meta-pool</name><forward mode='hostdev'/>
    <metadata><v:pool><v:pf dev='eth1'/></v:pool></metadata></network>`;
  const pool = poolFromNetwork(networkElement(parseXml(xml, 'x'), 'x'), 'x');
  t.same([pool?.name, pool?.pfs], ['meta-pool', [{ dev: 'eth1', numVfs: null }]]);
  t.same(parsePoolXml(xml, 'x').pfs, [{ dev: 'eth1', numVfs: null }], 'a definition file too');
});

t.test('entity and character references are left as written: none is ever expanded', async (t) => {
  const parsed = parseXml("<a b='x&amp;y&#65;'>p&lt;q&#x41;</a>", 'x') as { a: { '#text': string; '@_b': string } };
  t.same(parsed.a, { '#text': 'p&lt;q&#x41;', '@_b': 'x&amp;y&#65;' });
  t.throws(() => parseXml("<!DOCTYPE a [<!ENTITY e 'boom'>]><a>&e;</a>", 'x'), { constructor: BadInputError, message: /DOCTYPE and ENTITY declarations are not accepted/ });
});

t.test('XML nested deeper than the parser goes is bad input, not a bug', async (t) => {
  const deep = `<domain><name>vm1</name>${'<a>'.repeat(150)}${'</a>'.repeat(150)}</domain>`;
  t.throws(() => parseDomainXml(deep, "domain 'vm1'"), { constructor: BadInputError, message: "domain 'vm1': elements nested more than 100 deep" });
  t.throws(() => parsePoolXml(`<network>${'<a>'.repeat(150)}${'</a>'.repeat(150)}</network>`, 'f.xml'), BadInputError);
});

t.test('a name starting with - is refused: the CLI would read it as an option', async (t) => {
  t.throws(() => parseObjectName('-x', 'network name'), BadInputError);
  t.throws(() => parsePoolXml("<network><name>--help</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>", 'f.xml'), BadInputError);
  t.equal(parseObjectName('a-x', 'n'), 'a-x', 'a dash inside is fine');
});

t.test('control characters in quoted input are escaped, and long values cut', async (t) => {
  t.equal(quoteInput('a\nb\0c\x1b[31m\u2028'), "'a\\nb\\0c\\x1b[31m\\u2028'");
  t.equal(escapeControl('plain'), 'plain');
  const long = quoteInput('x'.repeat(10_000));
  t.ok(long.length < 220 && long.endsWith("(10000 characters)"), long);
  const err = t.throws(() => parseObjectName('web\nvm', 'domain name')) as BadInputError;
  t.equal(err.toLine().includes('\n'), false);
  t.match(err.toLine(), "domain name 'web\\nvm' is not a name");
});

t.test('a domain name with a newline, through the hook: one line on stderr, exit 2', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const name = 'web\nvm';
  const xml = domainXml('prepare', { name, vfpool: "<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>" });
  const r = await spawnEntry('hooks/qemu', [name, 'prepare', 'begin', '-'], { env: w.env, stdin: xml });
  t.equal(r.exitCode, 2);
  t.equal(r.stderr.split('\n').length, 2, `exactly one line: ${JSON.stringify(r.stderr)}`);
  t.match(r.stderr, "'web\\nvm' is not a name vfpool accepts");
});

t.test('characters XML does not allow (NUL, other C0 controls) are refused, naming the line', async (t) => {
  t.throws(() => parseXml('<domain>\n<name>vm\u0000</name></domain>', 'f.xml'), { constructor: BadInputError, message: 'f.xml: character U+0000 at line 2 is not allowed in XML' });
  t.throws(() => parseXml('<domain><name>a\u001bb</name></domain>', 'f.xml'), { constructor: BadInputError, message: 'f.xml: character U+001B at line 1 is not allowed in XML' });
  t.ok(parseXml('<domain>\t<name>a</name>\r\n</domain>', 'f.xml'), 'tab, CR and LF are fine');
});
