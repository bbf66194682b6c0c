import t from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { domainRequests, type PoolModeLookup } from '../../src/pool/requests.js';
import { BadInputError } from '../../src/errors.js';
import { domainXml, PLAIN_DOMAIN } from '../helpers/libvirt-domains.js';

const pools: PoolModeLookup = (n) =>
  ({ 'sriov-pool': 'hostdev', 'passthrough-net': 'hostdev', 'direct-network': 'pci-passthrough-hybrid', 'mvtap-net': 'passthrough' })[n] as never;

const meta = (inner: string) => domainXml('prepare', { name: 'vm1', vfpool: inner });
const requests = (xml: string) => domainRequests(parseDomainXml(xml, 'test'), pools);

t.test('a libvirt domain with no vfpool request parses to no requests', async (t) => {
  const spec = parseDomainXml(PLAIN_DOMAIN, 'seqtest prepare');
  t.equal(spec.name, 'seqtest');
  t.equal(spec.uuid, '614dee8d-7799-4751-9066-5ae47f427da5');
  t.same(spec.hostdevs, []);
  t.same(spec.networkInterfaces.map((n) => n.network), ['seqnet']);
  t.equal(spec.dacLabel, null, 'no DAC label before start');
  t.same(domainRequests(spec, pools), []);
});

t.test('DAC label from start begin: numeric and named', async (t) => {
  t.same(parseDomainXml(domainXml('start', { name: 'vm1' }), 'x').dacLabel, { user: { uid: 64055 }, group: { gid: 64055 } });
  t.same(parseDomainXml(domainXml('start', { name: 'vm1', label: 'libvirt-qemu:kvm' }), 'x').dacLabel, {
    user: { name: 'libvirt-qemu' },
    group: { name: 'kvm' },
  });
});

t.test('seed 001 steps 3, 2, 1 with every setting', async (t) => {
  const r = requests(
    meta(`<vfpool:hostdev pool='passthrough-net' mac='52:54:00:11:22:33' vlan='100' qos='3' spoofchk='off' trust='yes' link-state='enable' min-tx-rate='10' max-tx-rate='100' mtu='9000'/>
      <vfpool:hostdev netdev='eth22' mac='52:54:00:11:22:34'/>
      <vfpool:hostdev address='0000:06:02.0' mac='52:54:00:11:22:35'/>
      <vfpool:sriov-nic vfs='3' backend='user'/>`),
  );
  t.equal(r.length, 3);
  t.match(r[0], { index: 0, pool: 'passthrough-net', mac: '52:54:00:11:22:33', vlan: 100, qos: 3, spoofchk: false, trust: true, linkState: 'enable', minTxRate: 10, maxTxRate: 100, mtu: 9000, source: 'metadata' });
  t.match(r[1], { index: 1, pool: null, netdev: 'eth22', address: null, vlan: null, spoofchk: null });
  t.match(r[2], { index: 2, address: '0000:06:02.0' });
});

t.test('libvirt re-serialises metadata in double quotes: same requests', async (t) => {
  const inner = `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='7'/>`;
  t.same(requests(domainXml('start', { name: 'vm1', vfpool: inner, doubleQuoted: true })), requests(meta(inner)));
});

t.test('interfaces: a hybrid pool gives a VF partner with the same MAC; other modes are libvirt\'s', async (t) => {
  const xml = domainXml('prepare', {
    name: 'vm1',
    vfpool: `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:09'/>`,
    devices: `<interface type='network'><mac address='00:50:56:0f:86:3b'/><source network='direct-network'/><vlan><tag id='42'/></vlan><model type='virtio'/></interface>
      <interface type='network'><mac address='52:54:00:00:00:02'/><source network='sriov-pool'/></interface>
      <interface type='network'><mac address='52:54:00:00:00:03'/><source network='default'/></interface>`,
  });
  const r = requests(xml);
  t.equal(r.length, 2);
  t.match(r[0], { index: 0, source: 'metadata' });
  t.match(r[1], { index: 1, source: 'interface', pool: 'direct-network', mac: '00:50:56:0f:86:3b', pairedMac: '00:50:56:0f:86:3b', vlan: 42 });
});

t.test('<vlan>/<mtu> are a VF\'s only on a hybrid pool: another network\'s trunk is libvirt\'s business', async (t) => {
  const iface = (network: string, mac: string, extra: string) =>
    `<interface type='network'><mac address='${mac}'/><source network='${network}'/>${extra}<model type='virtio'/></interface>`;
  const ovsTrunk = iface('ovs-net', '52:54:00:aa:bb:cc', `<vlan trunk='yes'><tag id='42'/><tag id='43'/></vlan>`);
  const oneTagTrunk = `<vlan trunk='yes'><tag id='42' nativeMode='untagged'/></vlan>`;
  // An Open vSwitch trunk (and a tiny MTU) on networks that are not vfpool pools: not vfpool's to refuse.
  const r = requests(
    domainXml('prepare', {
      name: 'vm1',
      vfpool: `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:09'/>`,
      devices: `${ovsTrunk}\n${iface('default', '52:54:00:aa:bb:cd', `<mtu size='20'/>`)}\n${iface('ovs-net', '52:54:00:aa:bb:ce', oneTagTrunk)}`,
    }),
  );
  t.same(r.map((x) => x.field), ["domain 'vm1': vfpool:hostdev #1"], 'the VF request alone, nothing refused');
  // The same on a hybrid interface, whose VF has one access VLAN: refused, as libvirt refuses a trunk on SR-IOV.
  const cases: Array<[string, RegExp]> = [
    [`<vlan trunk='yes'><tag id='42'/><tag id='43'/></vlan>`, /<interface> #1: a VLAN trunk \(2 tags\) cannot be set on a VF/],
    [oneTagTrunk, /<interface> #1: <vlan trunk='yes'> cannot be set on a VF .*: drop trunk='yes': the guest then sends untagged frames on VLAN 42$/],
    [`<vlan><tag id='4096'/></vlan>`, /<interface> #1: vlan tag id='4096' is not a whole number from 0 to 4095/],
    [`<mtu size='20'/>`, /<interface> #1: mtu size='20' is not a whole number from 68 to 65535/],
  ];
  for (const [extra, re] of cases) {
    const xml = domainXml('prepare', { name: 'vm1', devices: iface('direct-network', '00:50:56:0f:86:3b', extra) });
    t.throws(() => requests(xml), { name: 'BadInputError', exitCode: 2 }, extra);
    try {
      requests(xml);
    } catch (e) {
      t.match((e as BadInputError).toLine(), re, extra);
    }
  }
  t.match(requests(domainXml('prepare', { name: 'vm1', devices: iface('direct-network', '00:50:56:0f:86:3b', `<vlan><tag id='42' nativeMode='untagged'/></vlan>`) }))[0], { vlan: 42 }, "one tag without trunk='yes' is the VF's VLAN (nativeMode too)");
});

t.test('libvirt\'s own failover (<teaming>) on a hybrid interface: exit 2, QEMU allows one primary per standby', async (t) => {
  const devices = (network: string) => `<interface type='network'><mac address='00:50:56:0f:86:3b'/><source network='${network}'/><model type='virtio'/><teaming type='persistent'/><alias name='ua-net0'/></interface>
    <interface type='hostdev' managed='yes'><mac address='00:50:56:0f:86:3b'/><source><address type='pci' domain='0x0000' bus='0x3c' slot='0x02' function='0x1'/></source><teaming type='transient' persistent='ua-net0'/></interface>`;
  t.throws(() => requests(domainXml('prepare', { name: 'vm1', devices: devices('direct-network') })), {
    name: 'BadInputError',
    exitCode: 2,
    message: "domain 'vm1': <interface> #1: has libvirt's own <teaming type='persistent'/>, and on pool 'direct-network' (pci-passthrough-hybrid) vfpool gives it its failover primary: QEMU allows one primary per standby",
  });
  // On a network that is not vfpool's, libvirt's pair is libvirt's: its two interfaces share one
  // MAC by design (one NIC to the guest), which is no duplicate, beside a VF from vfpool.
  const r = requests(domainXml('prepare', { name: 'vm1', devices: devices('default'), vfpool: `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:00:00:09'/>` }));
  t.same(r.map((x) => x.mac), ['52:54:00:00:00:09'], 'accepted, the VF request served');
  t.throws(() => requests(domainXml('prepare', { name: 'vm1', devices: devices('default'), vfpool: `<vfpool:hostdev pool='sriov-pool' mac='00:50:56:0f:86:3b'/>` })),
    { message: /vfpool:hostdev #1: mac '00:50:56:0f:86:3b' is already used by domain 'vm1': <interface> #1/ }, 'the pair\'s MAC is still taken');
});

t.test('bad input: one line naming domain and field, exit 2', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['multicast MAC', `<vfpool:hostdev pool='sriov-pool' mac='01:00:5e:00:00:01'/>`, /domain 'vm1': vfpool:hostdev #1: mac '01:00:5e:00:00:01' is a multicast MAC/],
    ['zero MAC', `<vfpool:hostdev pool='sriov-pool' mac='00:00:00:00:00:00'/>`, /vfpool:hostdev #1: mac '00:00:00:00:00:00' is the zero MAC/],
    ['not a MAC', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22'/>`, /is not a MAC address/],
    ['VLAN 4096', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='4096'/>`, /vfpool:hostdev #1: vlan='4096' is not a whole number from 0 to 4095/],
    ['VLAN -1', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='-1'/>`, /vlan='-1' is not a whole number from 0 to 4095/],
    ['qos without vlan', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' qos='3'/>`, /qos='3' needs a vlan/],
    ['qos 8', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='1' qos='8'/>`, /qos='8' is not a whole number from 0 to 7/],
    ['unknown pool', `<vfpool:hostdev pool='nosuch' mac='52:54:00:11:22:33'/>`, /domain 'vm1': vfpool:hostdev #1: unknown pool 'nosuch'/],
    ['duplicate MAC', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/><vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>`, /vfpool:hostdev #2: mac '52:54:00:11:22:33' is already used by domain 'vm1': vfpool:hostdev #1/],
    ['no mac', `<vfpool:hostdev pool='sriov-pool'/>`, /vfpool:hostdev #1: has no mac/],
    ['no device', `<vfpool:hostdev mac='52:54:00:11:22:33'/>`, /vfpool:hostdev #1: names no VF/],
    ['unknown attribute', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan-id='3'/>`, /unknown attribute 'vlan-id'/],
    ['spoofchk maybe', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' spoofchk='maybe'/>`, /spoofchk='maybe' must be 'on' or 'off'/],
    ['link-state', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' link-state='up'/>`, /link-state='up' must be 'auto', 'enable' or 'disable'/],
    ['bad address', `<vfpool:hostdev address='06:02.0' mac='52:54:00:11:22:33'/>`, /address '06:02.0' is not a PCI address/],
    ['bad netdev', `<vfpool:hostdev netdev='eth/0' mac='52:54:00:11:22:33'/>`, /netdev 'eth\/0' is not a valid network interface name/],
    ['unknown element', `<vfpool:hostdevs/>`, /unknown element <vfpool:hostdevs> in vfpool:domain/],
  ];
  for (const [what, inner, re] of cases) {
    const err = (() => {
      try {
        requests(meta(inner));
        return null;
      } catch (e) {
        return e;
      }
    })();
    t.type(err, BadInputError, what);
    t.match((err as BadInputError).message, re, what);
    t.equal((err as BadInputError).exitCode, 2, what);
    t.notMatch((err as BadInputError).toLine(), /\n/, `${what}: one line`);
  }
});

t.test('a vfpool MAC may not repeat a NIC of the domain', async (t) => {
  const xml = domainXml('prepare', {
    name: 'vm1',
    vfpool: `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:5e:00:01'/>`,
    devices: `<interface type='bridge'><mac address='52:54:00:5e:00:01'/><source bridge='br0'/></interface>`,
  });
  t.throws(() => requests(xml), { exitCode: 2, message: /vfpool:hostdev #1: mac '52:54:00:5e:00:01' is already used by domain 'vm1': <interface> #1/ });
});

t.test('entities are refused before anything is parsed', async (t) => {
  const xml = `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><domain><name>&x;</name></domain>`;
  t.throws(() => parseDomainXml(xml, 'evil'), { exitCode: 2, message: /DOCTYPE and ENTITY/ });
});

t.test('name and uuid are validated', async (t) => {
  t.throws(() => parseDomainXml(`<domain><name>../etc</name></domain>`, 'x'), { exitCode: 2, message: /domain name '..\/etc'/ });
  t.throws(() => parseDomainXml(`<domain><name>a</name><uuid>nope</uuid></domain>`, 'x'), { exitCode: 2, message: /is not a UUID/ });
  t.throws(() => parseDomainXml(`<network/>`, 'x'), { exitCode: 2, message: /no <domain> element/ });
});

t.test('<vfpool:sriov-nic> (seed 003) and a pinned guest-slot are parsed; every bad value refused in one line', async (t) => {
  const spec = parseDomainXml(meta(`<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' guest-slot='0x10'/>
      <vfpool:sriov-nic vfs='3' backend='user'/><vfpool:sriov-nic vfs='9' backend='socket' backend-options='mcast=230.0.0.1:1234'/><vfpool:sriov-nic vfs='1'/>`), 'x');
  t.same(spec.sriovNics.map(({ vfs, backend, backendOptions }) => [vfs, backend, backendOptions]), [[3, 'user', null], [9, 'socket', 'mcast=230.0.0.1:1234'], [1, 'user', null]]);
  t.equal(spec.hostdevs[0]!.guestSlot, 0x10);
  t.equal(domainRequests(spec, pools)[0]!.guestSlot, 0x10, 'the pin reaches the request');
  t.equal(requests(meta(`<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' guest-slot='12'/>`))[0]!.guestSlot, 12);
  const cases: Array<[string, string, RegExp]> = [
    ['guest slot 0', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' guest-slot='0'/>`, /vfpool:hostdev #1: guest-slot='0' is not a slot from 0x1 to 0x1e/],
    ['guest slot of the chipset', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' guest-slot='0x1f'/>`, /guest-slot='0x1f' is not a slot from 0x1 to 0x1e/],
    ['guest slot not a number', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' guest-slot='ten'/>`, /guest-slot='ten'/],
    ['no vfs', `<vfpool:sriov-nic backend='user'/>`, /vfpool:sriov-nic #1: has no vfs/],
    ['0 VFs', `<vfpool:sriov-nic vfs='0'/>`, /vfpool:sriov-nic #1: vfs='0' is not a whole number from 1 to 255/],
    ['256 VFs (past ARI)', `<vfpool:sriov-nic vfs='256'/>`, /vfs='256' is not a whole number from 1 to 255/],
    ['unknown backend', `<vfpool:sriov-nic vfs='2' backend='carrier'/>`, /vfpool:sriov-nic #1: backend='carrier' is not a QEMU netdev type vfpool knows/],
    ['backend options naming an id', `<vfpool:sriov-nic vfs='2' backend-options='id=x'/>`, /backend-options='id=x' is not a list of key=value without id=/],
    ['backend options with a comma escape', `<vfpool:sriov-nic vfs='2' backend-options='a=b,,c'/>`, /backend-options='a=b,,c'/],
    ['unknown attribute', `<vfpool:sriov-nic vfs='2' pf='x'/>`, /vfpool:sriov-nic #1: unknown attribute 'pf'/],
    // Each function's netdev gets the options: a port or a tap name would be taken twice.
    ['listen= (the README\'s own example once)', `<vfpool:sriov-nic vfs='8' backend='socket' backend-options='listen=:1234'/>`,
      /^domain 'vm1': vfpool:sriov-nic #1: backend-options='listen=:1234': listen= binds a host port, and every function of the NIC \(the PF and each VF\) gets a netdev of its own with these options, so QEMU would refuse the second$/],
    ['hostfwd= among others', `<vfpool:sriov-nic vfs='1' backend-options='restrict=on,hostfwd=tcp::2222-:22'/>`, /backend-options='restrict=on,hostfwd=tcp::2222-:22': hostfwd= binds a host port/],
    ['a tap name', `<vfpool:sriov-nic vfs='1' backend='tap' backend-options='ifname=tap0'/>`, /ifname= names one tap device/],
    // QEMU 11.1 on two l2tpv3 netdevs with one srcport: "could not bind socket: Address already in use".
    ['an L2TPv3 source port', `<vfpool:sriov-nic vfs='1' backend='l2tpv3' backend-options='src=192.0.2.1,dst=192.0.2.2,udp=on,srcport=1701,dstport=1701,txsession=1'/>`, /srcport= binds a host port/],
  ];
  for (const [name, inner, msg] of cases) t.throws(() => parseDomainXml(meta(inner), 'x'), { name: 'BadInputError', exitCode: 2, message: msg }, name);
});
