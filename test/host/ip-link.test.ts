import t from 'tap';
import { HostError } from '../../src/errors.js';
import { parseVfInfoList, vfLinkSetArgs } from '../../src/host/ip-link.js';

t.test('parseVfInfoList: what iproute2 prints, and what it leaves out', async (t) => {
  // Shapes from iproute2 6.x (`ip -j -d link show dev PF`): vlan/qos only when non-zero, rates in
  // either the flat or the nested form, fields a driver does not report left out.
  const json = JSON.stringify([{
    ifname: 'eth1',
    vfinfo_list: [
      { vf: 0, address: 'AA:BB:CC:00:00:01', vlan_list: [{}], rate: { max_tx: 0, min_tx: 0 }, spoofchk: true, trust: false, link_state: 'auto' },
      { vf: 1, mac: '52:54:00:00:00:02', vlan_list: [{ vlan: 10, qos: 3 }], max_tx_rate: 500, min_tx_rate: 100, link_state: 'disable' },
      { vf: 2, address: '52:54:00:00:00:03', vlan: 20, tx_rate: 300, link_state: 'weird' },
    ],
  }]);
  const got = parseVfInfoList(json, 'eth1');
  t.same([...got.keys()], [0, 1, 2]);
  t.same(got.get(0), { mac: 'aa:bb:cc:00:00:01', vlan: 0, qos: 0, spoofchk: true, trust: false, linkState: 'auto', minTxRate: 0, maxTxRate: 0 });
  t.same(got.get(1), { mac: '52:54:00:00:00:02', vlan: 10, qos: 3, spoofchk: null, trust: null, linkState: 'disable', minTxRate: 100, maxTxRate: 500 });
  t.same(got.get(2), { mac: '52:54:00:00:00:03', vlan: 20, qos: 0, spoofchk: null, trust: null, linkState: null, minTxRate: 0, maxTxRate: 300 });
  t.equal(parseVfInfoList('[{"ifname":"eth0"}]', 'eth0').size, 0, 'a PF without VFs');
  const err = t.throws(() => parseVfInfoList('Error: Device does not exist', 'eth9')) as HostError;
  t.ok(err instanceof HostError);
  t.equal(err.message, 'ip -j link show eth9: output is not JSON');
});

t.test('vfLinkSetArgs: one argv per change, qos only with a vlan', async (t) => {
  const cases: Array<[string, Parameters<typeof vfLinkSetArgs>[2], string[]]> = [
    ['mac', { mac: '52:54:00:00:00:01' as never }, ['mac', '52:54:00:00:00:01']],
    ['vlan and qos', { vlan: 10, qos: 3 }, ['vlan', '10', 'qos', '3']],
    ['vlan alone', { vlan: 0 }, ['vlan', '0']],
    ['qos without vlan is dropped', { qos: 3 }, []],
    ['spoofchk, trust, state', { spoofchk: false, trust: true, linkState: 'enable' }, ['spoofchk', 'off', 'trust', 'on', 'state', 'enable']],
    ['null means not reported: not set', { spoofchk: null, trust: null, linkState: null }, []],
    ['rates', { minTxRate: 100, maxTxRate: 0 }, ['min_tx_rate', '100', 'max_tx_rate', '0']],
  ];
  for (const [name, change, tail] of cases) t.same(vfLinkSetArgs('eth1', 2, change), ['link', 'set', 'dev', 'eth1', 'vf', '2', ...tail], name);
});
