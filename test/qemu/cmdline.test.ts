import t from 'tap';
import { BadInputError } from '../../src/errors.js';
import { machineKind, parseQemuArgv } from '../../src/qemu/cmdline.js';
import { formatKv, parsePciAddr, parseQemuOpts } from '../../src/qemu/qemu-opts.js';
import { libvirtArgv } from '../helpers/qemu-argv.js';

t.test('QemuOpts: kv with ,, escaping, the implied key, bare booleans; JSON keeps types', async (t) => {
  const cases: Array<[string, string, Record<string, unknown>]> = [
    ['virtio-net-pci,id=net0,mac=52:54:00:aa:bb:cc', 'driver', { driver: 'virtio-net-pci', id: 'net0', mac: '52:54:00:aa:bb:cc' }],
    ['guest=my,,vm,debug-threads=on', 'guest', { guest: 'my,vm', 'debug-threads': 'on' }],
    ['vm1', 'guest', { guest: 'vm1' }],
    ['q35,usb=off,,x', 'type', { type: 'q35', usb: 'off,x' }],
    ['e1000e,multifunction', 'driver', { driver: 'e1000e', multifunction: 'on' }],
    ['driver=e1000e,id=a', 'driver', { driver: 'e1000e', id: 'a' }],
    ['{"driver":"pcie-root-port","chassis":1,"multifunction":true,"addr":"0x2"}', 'driver', { driver: 'pcie-root-port', chassis: 1, multifunction: true, addr: '0x2' }],
  ];
  for (const [text, implied, props] of cases) t.same(parseQemuOpts(text, implied, 'x').props, props, text);
  t.equal(formatKv({ driver: 'x', path: '/run/a,b', server: true }, 'driver'), 'x,path=/run/a,,b,server=on', 'commas escaped on the way out');
  t.throws(() => parseQemuOpts('{"driver":', 'driver', 'arg 3'), { name: 'BadInputError', message: /^arg 3: '\{"driver":' is not valid JSON/ });
  t.equal(parseQemuOpts('{"driver":"x","l":[1]}', 'driver', 'x').props.l, '[1]', 'nested JSON kept as text');
  t.throws(() => parseQemuOpts('{"a":1}x', 'driver', 'arg 3'), BadInputError);
});

t.test('PCI addr property: slot, slot.fn, hex with or without 0x, JSON number', async (t) => {
  const cases: Array<[string | number, { slot: number; fn: number } | null]> = [
    ['0x2', { slot: 2, fn: 0 }], ['0x1.0x2', { slot: 1, fn: 2 }], ['1f.7', { slot: 31, fn: 7 }], ['10', { slot: 16, fn: 0 }],
    [3, { slot: 3, fn: 0 }], ['0x20', null], ['0x1.0x8', null], ['x', null],
  ];
  for (const [v, want] of cases) t.same(parsePciAddr(v), want, String(v));
});

t.test('machine kinds', async (t) => {
  const cases: Array<[string, string | null]> = [
    ['q35', 'q35'], ['pc-q35-10.0', 'q35'], ['pc', 'i440fx'], ['pc-i440fx-10.0', 'i440fx'], ['pc-1.0', 'i440fx'],
    ['microvm', null], ['none', null], ['isapc', null],
  ];
  for (const [type, kind] of cases) t.equal(machineKind(type), kind, type);
});

t.test("libvirt 11.3's real argv: name, i440fx with acpi=off, JSON devices with their ids, addresses and the monitor fd", async (t) => {
  const cmd = parseQemuArgv(libvirtArgv());
  t.equal(cmd.name, 'wraptest');
  t.same(cmd.machine, { type: 'pc-i440fx-10.0', kind: 'i440fx', acpi: false });
  t.equal(cmd.rootBus, 'pci.0');
  t.equal(cmd.nodefaults, true);
  t.equal(cmd.incoming, false);
  t.same(cmd.devices.map((d) => [d.driver, d.id, d.bus, d.addr, d.opts.form]), [
    ['piix3-usb-uhci', 'usb', 'pci.0', { slot: 1, fn: 2 }, 'json'],
    ['isa-serial', 'serial0', null, null, 'json'],
  ]);
  for (const id of ['masterKey0', 'pc.ram', 'charmonitor', 'charserial0', 'audio1', 'usb', 'serial0']) t.ok(cmd.ids.has(id), `id ${id} known`);
});

t.test('a person\'s kv command line: -M, --device, netdevs, root ports, NIC MACs, -incoming, a bare disk image', async (t) => {
  const cmd = parseQemuArgv([
    '-M', 'q35,accel=tcg', '-name', 'vm2', '-m', '512', '-S',
    '-netdev', 'user,id=n0', '--netdev', '{"type":"user","id":"n1"}',
    '-device', 'pcie-root-port,id=rp1,chassis=3,slot=2,bus=pcie.0,addr=0x4',
    '-device', 'virtio-net-pci,netdev=n0,id=ua-net,mac=52:54:00:AA:00:01,bus=rp1',
    '-device', 'e1000e,netdev=n1',
    '-append', '-device nothing,id=fake',
    '-incoming', 'defer', 'disk.img',
  ]);
  t.equal(cmd.name, 'vm2');
  t.same(cmd.machine, { type: 'q35', kind: 'q35', acpi: null });
  t.equal(cmd.incoming, true);
  t.same([...cmd.netdevIds], ['n0', 'n1']);
  t.same(cmd.devices.map((d) => [d.driver, d.id, d.chassis, d.portSlot, d.mac, d.netdev]), [
    ['pcie-root-port', 'rp1', 3, 2, null, null],
    ['virtio-net-pci', 'ua-net', null, null, '52:54:00:aa:00:01', 'n0'],
    ['e1000e', null, null, null, null, 'n1'],
  ], 'the -append value is not read as a device');
  t.notOk(cmd.ids.has('fake'));
});

t.test('QEMU defaults: no -machine is pc (i440fx); a later -machine type wins', async (t) => {
  t.equal(parseQemuArgv(['-name', 'a']).machine.kind, 'i440fx');
  t.equal(parseQemuArgv(['-machine', 'pc', '-machine', 'type=q35']).machine.type, 'q35');
  t.equal(parseQemuArgv(['-machine', '{"type":"pc-q35-9.2","acpi":"on"}']).machine.acpi, true);
  t.equal(parseQemuArgv([]).name, null, 'no -name: no domain');
});

t.test('refusals: an unknown machine, a -device without driver, bad JSON', async (t) => {
  t.throws(() => parseQemuArgv(['-machine', 'microvm']), { name: 'BadInputError', message: "QEMU machine type 'microvm' is neither q35 nor i440fx (pc)" });
  t.throws(() => parseQemuArgv(['-device', 'id=x']), { message: 'QEMU argument 2 (-device id=x): names no driver' });
  t.throws(() => parseQemuArgv(['-device', '{"driver":']), { name: 'BadInputError', message: /^QEMU argument 2 \(-device \{"driver":\): .* is not valid JSON/ });
});
