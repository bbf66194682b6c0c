/**
 * Domain XML exactly as libvirt 11.3 hands it to the qemu hook (captured with a logging hook;
 * ../shared/libvirt-samples/stdin-qemu-seqtest-*.xml), with a name, vfpool metadata and
 * interfaces put in. The XML grows along the lifecycle: by `start begin` libvirt has added
 * aliases and the DAC label QEMU runs under.
 */
export type HookStage = 'prepare' | 'start' | 'started' | 'release';

export const NS = 'https://vfpool.dev/xmlns/1';

export interface DomainOpts {
  name: string;
  uuid?: string;
  /** Inner XML of <vfpool:domain>, e.g. `<vfpool:hostdev pool='p' mac='…'/>`. */
  vfpool?: string;
  /** Extra device XML (interfaces) inside <devices>. */
  devices?: string;
  /** The DAC label libvirt writes at start (default +64055:+64055, Debian's libvirt-qemu). */
  label?: string;
  /** libvirt re-serialises metadata in double quotes, indented: model that. */
  doubleQuoted?: boolean;
  /** `<os><type machine>`: the captured guest's pc-i440fx-10.0 unless given (e.g. pc-q35-10.0). */
  machine?: string;
}

function metadata(o: DomainOpts): string {
  if (o.vfpool === undefined) return '';
  if (o.doubleQuoted) {
    return `  <metadata>\n    <vfpool:domain xmlns:vfpool="${NS}">\n      ${o.vfpool.replace(/'/g, '"')}\n    </vfpool:domain>\n  </metadata>\n`;
  }
  return `  <metadata><vfpool:domain xmlns:vfpool='${NS}'>${o.vfpool}</vfpool:domain></metadata>\n`;
}

export function domainXml(stage: HookStage, o: DomainOpts): string {
  const uuid = o.uuid ?? '614dee8d-7799-4751-9066-5ae47f427da5';
  const live = stage !== 'prepare';
  const id = stage === 'prepare' || stage === 'start' || stage === 'started' ? " id='20'" : '';
  const alias = (n: string) => (live ? `\n      <alias name='${n}'/>` : '');
  const label = o.label ?? '+64055:+64055';
  const seclabel =
    stage === 'prepare'
      ? ''
      : `  <seclabel type='dynamic' model='dac' relabel='yes'>\n    <label>${label}</label>\n    <imagelabel>${label}</imagelabel>\n  </seclabel>\n`;
  return `<domain type='qemu'${id}>
  <name>${o.name}</name>
  <uuid>${uuid}</uuid>
${metadata(o)}  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='${o.machine ?? 'pc-i440fx-10.0'}'>hvm</type>
    <boot dev='network'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' index='0' model='piix3-uhci'>${alias('usb')}
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'>${alias('pci.0')}
    </controller>
${o.devices ?? ''}    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>${alias('serial0')}
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>${alias('serial0')}
    </console>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='none'/>
  </devices>
${seclabel}</domain>
`;
}

/** The verbatim seqtest prepare XML: a domain with a bridge-network NIC and nothing for vfpool. */
export const PLAIN_DOMAIN = domainXml('prepare', {
  name: 'seqtest',
  devices: `    <interface type='network'>
      <mac address='52:54:00:5e:00:01'/>
      <source network='seqnet'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
`,
});

/** `<hookData>` for the network hook's port-created/port-deleted, as libvirt 11.3 writes it. */
export function portHookData(o: { network: string; forward: string; portUuid: string; domain: string; domainUuid?: string; mac: string; plug: string }): string {
  return `<hookData>
  <network connections='1'>
    <name>${o.network}</name>
    <uuid>0fac4c73-294d-4905-a1ae-ecf4df11d6ed</uuid>
    ${o.forward}
  </network>
  <networkport>
    <uuid>${o.portUuid}</uuid>
    <owner>
      <name>${o.domain}</name>
      <uuid>${o.domainUuid ?? '2b65f2a6-db22-4b07-8da3-ec4c8c7fd93d'}</uuid>
    </owner>
    <mac address='${o.mac}'/>
    ${o.plug}
  </networkport>
</hookData>`;
}
