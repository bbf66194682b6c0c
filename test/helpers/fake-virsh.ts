import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * virsh as `vfpool migrate DOMAIN URI` runs it (`--version`, `migrate --live …`, `-c URI
 * qemu-monitor-command DOMAIN JSON`): a shell script in DIR/bin that appends each command line
 * to DIR/virsh.log. Returns a PATH with it first.
 */
export function fakeVirsh(dir: string, opts: { migrateFails?: boolean; destPeripherals: string[] }): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const list = JSON.stringify({ return: opts.destPeripherals.map((name) => ({ name, type: 'child<e1000e>' })), id: 'libvirt-7' });
  writeFileSync(join(bin, 'virsh'), `#!/bin/sh
echo "$*" >> ${join(dir, 'virsh.log')}
case $1 in
  --version) echo 11.3.0 ;;
  migrate) ${opts.migrateFails ? "echo 'error: operation failed: job: unexpectedly failed' >&2; exit 1" : 'exit 0'} ;;
  -c) case $5 in
        *qom-list*) echo '${list}' ;;
        *query-bogus*) echo '{"id":"libvirt-8","error":{"class":"CommandNotFound","desc":"The command query-bogus has not been found"}}' ;;
        *) echo "error: failed to connect to the hypervisor" >&2; exit 1 ;;
      esac ;;
esac
`);
  chmodSync(join(bin, 'virsh'), 0o755);
  return `${bin}:${process.env.PATH}`;
}
