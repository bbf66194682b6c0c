import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * virsh as `vfpool migrate DOMAIN URI` runs it (`--version`, `-c URI capabilities` and
 * `capabilities`: the destination's host UUID, `destUuid`, and this host's; `migrate --live …`,
 * `-c URI qemu-monitor-command DOMAIN JSON`): a shell script in DIR/bin that appends each command
 * line to DIR/virsh.log. `destDown`: the destination refuses the connection. Returns a PATH with it first.
 */
export function fakeVirsh(dir: string, opts: { migrateFails?: boolean; destPeripherals: string[]; destDown?: boolean; destUuid?: string }): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const list = JSON.stringify({ return: opts.destPeripherals.map((name) => ({ name, type: 'child<e1000e>' })), id: 'libvirt-7' });
  writeFileSync(join(bin, 'virsh'), `#!/bin/sh
echo "$*" >> ${join(dir, 'virsh.log')}
case $1 in
  --version) echo 11.3.0 ;;
  capabilities) echo '<capabilities><host><uuid>8037112c-b8e3-4aa9-a2ca-d6876d585386</uuid></host></capabilities>' ;;
  migrate) ${opts.migrateFails ? "echo 'error: operation failed: job: unexpectedly failed' >&2; exit 1" : 'exit 0'} ;;
  -c) [ "$3" != capabilities ] || { ${opts.destDown ? `echo "error: unable to connect to server at 'dest.example:16509': Connection refused" >&2; exit 1` : `echo '<capabilities><host><uuid>${opts.destUuid ?? '5c1e2d3f-0a4b-4c5d-8e6f-7a8b9c0d1e2f'}</uuid></host></capabilities>'; exit 0`} ; }
      case $5 in
        *qom-list*) echo '${list}' ;;
        *query-bogus*) echo '{"id":"libvirt-8","error":{"class":"CommandNotFound","desc":"The command query-bogus has not been found"}}' ;;
        *) echo "error: failed to connect to the hypervisor" >&2; exit 1 ;;
      esac ;;
esac
`);
  chmodSync(join(bin, 'virsh'), 0o755);
  return `${bin}:${process.env.PATH}`;
}
