import t from 'tap';
import { BadInputError, HostError } from '../src/errors.js';
import { macFromKernel, netdevFromKernel, parseGuestMac, parseMac, parseNetdevName, parseObjectName, parsePciAddress, pciAddressFromParts } from '../src/types.js';

t.test('the branded parsers: accepted values, normalised', async (t) => {
  const ok: Array<[string, () => string, string]> = [
    ['PCI address, upper case', () => parsePciAddress(' 0000:3B:02.1 '), '0000:3b:02.1'],
    ['PCI address from libvirt parts', () => pciAddressFromParts({ domain: '0x0000', bus: '0x3b', slot: '0x02', function: '0x1' }), '0000:3b:02.1'],
    ['PCI parts, decimal, domain and function defaulted', () => pciAddressFromParts({ bus: '59', slot: '2' }), '0000:3b:02.0'],
    // As libvirt reads them (strtoul, base 0): a leading 0 is octal, so bus='010' is bus 8, not 10.
    ['PCI parts with a leading 0: octal, as libvirt reads them', () => pciAddressFromParts({ domain: '0', bus: '010', slot: '017', function: '07' }), '0000:08:0f.7'],
    ['MAC, upper case', () => parseMac('52:54:00:AA:BB:CC'), '52:54:00:aa:bb:cc'],
    ['guest MAC', () => parseGuestMac('52:54:00:00:00:01'), '52:54:00:00:00:01'],
    ['MAC from the kernel', () => macFromKernel('AA:BB:CC:DD:EE:FF'), 'aa:bb:cc:dd:ee:ff'],
    ['netdev', () => parseNetdevName('enp59s0f1v3'), 'enp59s0f1v3'],
    ['netdev, 15 characters', () => parseNetdevName('a23456789012345'), 'a23456789012345'],
    ['netdev the kernel named with a colon', () => netdevFromKernel('eth0:1'), 'eth0:1'],
    ['object name', () => parseObjectName('vm-1.test:x', 'domain'), 'vm-1.test:x'],
  ];
  for (const [name, fn, want] of ok) t.equal(fn(), want, name);
});

t.test('the branded parsers: refusals, one line each, exit 2', async (t) => {
  const bad: Array<[() => unknown, string]> = [
    [() => parsePciAddress('3b:02.1'), "address '3b:02.1' is not a PCI address: write it as DDDD:BB:SS.F, e.g. '0000:3b:02.0'"],
    [() => parsePciAddress('0000:3b:20.0'), "address '0000:3b:20.0' is not a PCI address: write it as DDDD:BB:SS.F, e.g. '0000:3b:02.0'"],
    [() => pciAddressFromParts({ bus: '0x3b' }, 'plug'), "plug: attribute 'slot' is missing: give slot='0x..'"],
    [() => pciAddressFromParts({ bus: '0x3b', slot: '0x20' }, 'plug'), "plug: slot='0x20' is not a number from 0 to 0x1f"],
    [() => pciAddressFromParts({ bus: 'x', slot: '0' }, 'plug'), "plug: bus='x' is not a number from 0 to 0xff"],
    [() => pciAddressFromParts({ bus: '0x3b', slot: '09' }, 'plug'), "plug: slot='09' is not a number libvirt reads: a leading 0 makes it octal: write it in hex (slot='0x9') or without the leading 0"],
    [() => parseMac('52:54:00:aa:bb'), "mac '52:54:00:aa:bb' is not a MAC address: write six hex bytes, e.g. '52:54:00:11:22:33'"],
    [() => parseGuestMac('00:00:00:00:00:00'), "mac '00:00:00:00:00:00' is the zero MAC: pick a unicast address, e.g. '52:54:00:xx:xx:xx'"],
    [() => parseGuestMac('01:00:5e:00:00:01'), "mac '01:00:5e:00:00:01' is a multicast MAC (low bit of the first byte set): pick a unicast address, e.g. '52:54:00:xx:xx:xx'"],
    [() => parseNetdevName('../etc'), "dev '../etc' is not a valid network interface name: use 1-15 characters from A-Z a-z 0-9 _ . - + @"],
    [() => parseNetdevName('a234567890123456'), "dev 'a234567890123456' is not a valid network interface name: use 1-15 characters from A-Z a-z 0-9 _ . - + @"],
    [() => parseNetdevName('..'), "dev '..' is not a valid network interface name: use 1-15 characters from A-Z a-z 0-9 _ . - + @"],
    [() => parseObjectName('.hidden', 'domain'), "domain '.hidden' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters"],
    [() => parseObjectName('-x', 'network'), "network '-x' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters"],
    [() => parseObjectName('web\nvm', 'domain'), "domain 'web\\nvm' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters"],
    [() => parseObjectName('a/b', 'network'), "network 'a/b' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters"],
  ];
  for (const [fn, line] of bad) {
    const err = t.throws(fn, line) as BadInputError;
    t.ok(err instanceof BadInputError, line);
    t.equal(err.toLine(), line);
  }
  const k = t.throws(() => netdevFromKernel('a/b')) as HostError;
  t.ok(k instanceof HostError, 'a kernel name with a slash is the machine misbehaving (exit 1)');
  t.equal(k.code, 'EINVAL');
});
