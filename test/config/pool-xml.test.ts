import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parsePoolXml, poolFromNetwork, networkElement } from '../../src/config/pool-xml.js';
import { parseXml } from '../../src/util/xml.js';
import { REPO } from '../helpers/spawn.js';

t.test('the seeds\' network XML parses into pool specs', async (t) => {
  t.same(parsePoolXml(`<network><name>sriov-pool</name>
    <forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='10'/></pf></forward></network>`, 'seed000'), {
    name: 'sriov-pool', mode: 'hostdev', managed: true, pfs: [{ dev: 'eth1', numVfs: 10 }], interfaces: [], addresses: [], vlan: null, origin: 'definition',
  }, 'seed 000');
  t.same(parsePoolXml(`<network><name>passthrough-net</name>
    <forward mode='hostdev'><interface dev='eth20'/><interface dev='eth21'/></forward></network>`, 'seed001').interfaces, ['eth20', 'eth21'], 'seed 001 step 3');
  const hybrid = parsePoolXml(`<network><name>direct-network</name><forward mode="pci-passthrough-hybrid"><pf dev="eth2"/></forward></network>`, 'seed002');
  t.same([hybrid.mode, hybrid.pfs, hybrid.managed], ['pci-passthrough-hybrid', [{ dev: 'eth2', numVfs: null }], false], 'seed 002');
  t.same(parsePoolXml(`<network><name>mvtap-net</name><forward mode='passthrough'><interface dev='eth2'/></forward></network>`, 'seed004').mode, 'passthrough', 'seed 004');
  // libvirt's one-interface shorthand (virNetworkForwardDefParseXML), alone or naming the first <interface>.
  t.same(parsePoolXml(`<network><name>mvtap-net</name><forward mode='passthrough' dev='eth2'/></network>`, 'short').interfaces, ['eth2'], '<forward dev> is one <interface>');
  t.same(parsePoolXml(`<network><name>mvtap-net</name><forward mode='passthrough' dev='eth2'><interface dev='eth2'/><interface dev='eth3'/></forward></network>`, 'both').interfaces, ['eth2', 'eth3'], 'and the first of several');
  t.same(parsePoolXml(`<network><name>addr</name><forward mode='hostdev'>
    <address type='pci' domain='0x0000' bus='0x06' slot='0x02' function='0x1'/><pf dev='eth1'/><pf dev='eth3'/></forward></network>`, 'a').addresses,
    ['0000:06:02.1'], 'PCI addresses, and several PFs');
});

t.test('a libvirt network carrying the pool in <metadata>, any prefix, libvirt\'s own re-serialisation', async (t) => {
  const sample = readFileSync(join(REPO, 'test/libvirt/samples/stdin-network-vfp-net-start-begin.xml'), 'utf8');
  const pool = poolFromNetwork(networkElement(parseXml(sample, 's'), 's'), 's')!;
  t.same([pool.name, pool.mode, pool.managed, pool.pfs, pool.origin], ['vfp-net', 'hostdev', true, [{ dev: 'eth1', numVfs: 4 }], 'libvirt-metadata']);
  const other = poolFromNetwork(networkElement(parseXml(`<network><name>n</name><forward mode='hostdev'/><metadata>
    <p:pool xmlns:p='https://vfpool.dev/xmlns/1' mode='pci-passthrough-hybrid'><p:pf dev='eth2'/></p:pool></metadata></network>`, 's'), 's'), 's')!;
  t.same([other.mode, other.pfs], ['pci-passthrough-hybrid', [{ dev: 'eth2', numVfs: null }]], 'another prefix; mode attribute wins (libvirt refuses that forward mode)');
  const foreign = poolFromNetwork(networkElement(parseXml(`<network><name>n</name><metadata>
    <p:pool xmlns:p='https://example.org/other'><p:pf dev='eth2'/></p:pool></metadata></network>`, 's'), 's'), 's');
  t.equal(foreign, undefined, 'same local name in another namespace is not ours');
  const plain = poolFromNetwork(networkElement(parseXml(`<network><name>n</name><forward mode='bridge'/></network>`, 's'), 's'), 's');
  t.equal(plain, undefined, 'a network without vfpool metadata carries no pool');
});

t.test('a network-level <vlan> is the pool\'s VLAN; one tag only, no trunk, no portgroup VLANs', async (t) => {
  const net = (extra: string) => `<network><name>direct-network</name>${extra}<forward mode='pci-passthrough-hybrid'><pf dev='eth2'/></forward></network>`;
  t.equal(parsePoolXml(net(`<vlan><tag id='42'/></vlan>`), 'p').vlan, 42);
  t.equal(parsePoolXml(net(`<vlan trunk='no'><tag id='0'/></vlan><portgroup name='plain'/>`), 'p').vlan, 0, 'a portgroup without a <vlan> is fine');
  t.equal(parsePoolXml(net(''), 'p').vlan, null);
  const meta = poolFromNetwork(networkElement(parseXml(`<network><name>n</name><forward mode='bridge'/><bridge name='br0'/><vlan><tag id='7'/></vlan><metadata>
    <vfpool:pool xmlns:vfpool='https://vfpool.dev/xmlns/1' mode='pci-passthrough-hybrid'><vfpool:pf dev='eth2'/></vfpool:pool></metadata></network>`, 's'), 's'), 's')!;
  t.equal(meta.vlan, 7, 'a libvirt network carrying a pool: its own <vlan>');
  const lvNet = (mode: string) => `<network><name>n</name><forward mode='hostdev' managed='yes'/><portgroup name='eng'><vlan><tag id='9'/></vlan></portgroup><metadata>
    <vfpool:pool xmlns:vfpool='https://vfpool.dev/xmlns/1' mode='${mode}'><vfpool:pf dev='eth2'/></vfpool:pool></metadata></network>`;
  t.equal(poolFromNetwork(networkElement(parseXml(lvNet('hostdev'), 's'), 's'), 's')!.vlan, null, "a libvirt hostdev network's portgroups are libvirt's own");
  t.throws(() => poolFromNetwork(networkElement(parseXml(lvNet('pci-passthrough-hybrid'), 's'), 's'), 's'), { exitCode: 2, message: /<portgroup name='eng'> has a <vlan>/ }, 'on a hybrid pool the VF would miss its standby\'s VLAN');
  for (const [extra, msg] of [
    [`<vlan trunk='yes'><tag id='42'/><tag id='43'/></vlan>`, /the network's <vlan> must be one <tag id='N'\/> without trunk='yes' \(a VF has one access VLAN\), not 2 tag\(s\) with trunk='yes'/],
    [`<vlan trunk='yes'><tag id='42'/></vlan>`, /not 1 tag\(s\) with trunk='yes'/],
    [`<vlan><tag id='4096'/></vlan>`, /tag id='4096' is not a whole number from 0 to 4095/],
    [`<portgroup name='eng' default='yes'><vlan><tag id='7'/></vlan></portgroup>`, /<portgroup name='eng'> has a <vlan>, which vfpool does not apply to its VFs$/],
  ] as const) {
    t.throws(() => parsePoolXml(net(extra), 'p.xml'), { name: 'BadInputError', exitCode: 2, message: msg }, extra);
  }
});

const BAD: Array<[string, string, RegExp]> = [
  ['bad mode', `<network><name>p</name><forward mode='nat'><pf dev='eth1'/></forward></network>`, /forward mode 'nat' is not a vfpool mode/],
  ['no mode', `<network><name>p</name><forward><pf dev='eth1'/></forward></network>`, /<forward> has no mode/],
  ['missing dev', `<network><name>p</name><forward mode='hostdev'><pf/></forward></network>`, /<pf> has no dev attribute/],
  ['num not a number', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='ten'/></pf></forward></network>`, /vf num='ten' is not a number from 1 to 4096/],
  ['num zero', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='0'/></pf></forward></network>`, /vf num='0' is not a number/],
  ['vf without num', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf/></pf></forward></network>`, /<vf> in <pf dev='eth1'> has no num/],
  ['no members', `<network><name>p</name><forward mode='hostdev'/></network>`, /has no <pf>, <interface> or <address>/],
  ['no forward', `<network><name>p</name></network>`, /network 'p' has no <forward>/],
  ['no name', `<network><forward mode='hostdev'><pf dev='eth1'/></forward></network>`, /<network> has no <name>/],
  ['bad name', `<network><name>../etc</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`, /network name '..\/etc' is not a name vfpool accepts/],
  ['path in dev', `<network><name>p</name><forward mode='hostdev'><pf dev='../../x'/></forward></network>`, /pf dev '..\/..\/x' is not a valid network interface name/],
  ['managed', `<network><name>p</name><forward mode='hostdev' managed='maybe'><pf dev='eth1'/></forward></network>`, /managed='maybe' must be 'yes' or 'no'/],
  ['listed twice', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/><pf dev='eth1'/></forward></network>`, /'eth1' is listed twice/],
  ['address type', `<network><name>p</name><forward mode='hostdev'><address type='usb' bus='1'/></forward></network>`, /<address type='usb'> must be type='pci'/],
  ['address slot', `<network><name>p</name><forward mode='hostdev'><address type='pci' bus='0x06' slot='0x40'/></forward></network>`, /slot='0x40' is not a number from 0 to 0x1f/],
  ['forward dev not the first interface', `<network><name>p</name><forward mode='passthrough' dev='eth3'><interface dev='eth2'/></forward></network>`, /^p\.xml: <forward dev='eth3'> must name the first <interface>, 'eth2' \(libvirt refuses it too\)$/],
  ['forward dev beside a pf', `<network><name>p</name><forward mode='passthrough' dev='eth3'><pf dev='eth2'/></forward></network>`, /<forward dev='eth3'> beside <pf> or <address>: libvirt would use 'eth3' alone/],
  ['forward dev not a netdev name', `<network><name>p</name><forward mode='passthrough' dev='../x'/></network>`, /forward dev '..\/x' is not a valid network interface name/],
  ['not XML', `<network><name>p</name>`, /not well-formed XML/],
  ['entity', `<!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/shadow">]><network><name>&x;</name></network>`, /DOCTYPE and ENTITY declarations are not accepted/],
  ['no network', `<domain/>`, /no <network> element/],
];

t.test('every malformed or invalid definition is one BadInputError (exit 2) naming the field', async (t) => {
  for (const [name, xml, msg] of BAD) {
    t.throws(() => parsePoolXml(xml, 'p.xml'), { exitCode: 2, message: msg }, name);
  }
});
