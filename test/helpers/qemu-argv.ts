import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './spawn.js';

/** The argv libvirt 11.3 gave an <emulator> wrapper at domain start (captured from a real libvirtd). */
export function libvirtArgv(): string[] {
  const log = readFileSync(join(REPO, 'test/libvirt/samples/wrapper-argv-domain-start.log'), 'utf8');
  return log.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.slice(2));
}

/** libvirt's q35 shape: its own root ports numbered from chassis 1 at 0x2.x, a virtio-net standby on one. */
export function libvirtQ35Argv(name = 'vm1', mac = '52:54:00:aa:bb:01', netId = 'net0'): string[] {
  return [
    '-name', `guest=${name},debug-threads=on`, '-S',
    '-machine', 'pc-q35-10.0,usb=off,dump-guest-core=off,acpi=on',
    '-accel', 'tcg', '-display', 'none', '-no-user-config', '-nodefaults',
    '-chardev', 'socket,id=charmonitor,fd=21,server=on,wait=off', '-mon', 'chardev=charmonitor,id=monitor,mode=control',
    '-device', '{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0","multifunction":true,"addr":"0x2"}',
    '-device', '{"driver":"pcie-root-port","port":17,"chassis":2,"id":"pci.2","bus":"pcie.0","addr":"0x2.0x1"}',
    '-device', '{"driver":"pcie-root-port","port":18,"chassis":3,"id":"pci.3","bus":"pcie.0","addr":"0x2.0x2"}',
    '-netdev', '{"type":"user","id":"hostnet0"}',
    '-device', `{"driver":"virtio-net-pci","netdev":"hostnet0","id":"${netId}","mac":"${mac}","bus":"pci.1","addr":"0x0"}`,
    '-device', '{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.2","addr":"0x0"}',
  ];
}
