import t from 'tap';
import { BadInputError } from '../../src/errors.js';
import { parseNetworkPort } from '../../src/config/network-port.js';
import { child, parseXml } from '../../src/util/xml.js';

const UUID = '2e5b8f3a-1c4d-4e6f-9a0b-1c2d3e4f5a6b';
const port = (inner: string) => `<hookData><network><name>n</name></network><networkport><uuid>${UUID}</uuid>${inner}</networkport></hookData>`;
const parse = (xml: string) => parseNetworkPort(child(parseXml(xml, 'W'), 'hookData')!, 'W');
const OWNER = `<owner><name>vm1</name><uuid>${UUID}</uuid></owner><mac address='52:54:00:AA:00:01'/>`;

t.test('parseNetworkPort: the plugs libvirt formats', async (t) => {
  t.same(parse(port(`${OWNER}<plug type='hostdev-pci' managed='yes'><driver name='vfio'/><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></plug>`)), {
    uuid: UUID, domain: 'vm1', domainUuid: UUID, mac: '52:54:00:aa:00:01', plug: { type: 'hostdev-pci', address: '0000:3b:02.1' },
  });
  t.same(parse(port(`${OWNER}<plug type='direct' dev='eth1v3' mode='passthrough'/>`)).plug, { type: 'direct', dev: 'eth1v3' });
  t.same(parse(port(`${OWNER}<plug type='bridge' bridge='virbr0'/>`)).plug, { type: 'other', name: 'bridge' });
  t.same(parse(port(`<owner><name>vm2</name></owner>`)), { uuid: UUID, domain: 'vm2', domainUuid: null, mac: null, plug: { type: 'other', name: 'none' } });
  // Any guest's name, as libvirt allows it: checked only where a VF is recorded under it (recordPort).
  t.equal(parse(port(`<owner><name>web 1</name></owner>`)).domain, 'web 1');
});

t.test('parseNetworkPort refusals: one line naming what is missing', async (t) => {
  const cases: Array<[string, string]> = [
    ['<hookData/>', 'W: no <networkport> in the hook\'s input'],
    ['<hookData><networkport/></hookData>', 'W: <networkport> has no <uuid>'],
    [port(''), 'W: <networkport> has no <owner><name>'],
    [port(`${OWNER}<plug type='hostdev-pci'/>`), "W: <plug type='hostdev-pci'> has no <address>"],
    [port(`${OWNER}<plug type='direct'/>`), "W: <plug type='direct'> has no dev"],
    [port(`${OWNER}<plug type='direct' dev='../etc'/>`), "W: plug dev '../etc' is not a valid network interface name"],
  ];
  for (const [xml, msg] of cases) {
    const err = t.throws(() => parse(xml), msg) as BadInputError;
    t.ok(err instanceof BadInputError);
    t.equal(err.message, msg);
  }
});
