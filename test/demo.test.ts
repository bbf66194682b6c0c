import t from 'tap';
import { execa } from 'execa';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './helpers/spawn.js';

// Two QEMUs under TCG, a live migration and some forty CLI runs: about a minute on 2 idle
// cores, more under CI's coverage on busy ones; the per-file default (.taprc timeout) is too tight.
t.setTimeout(10 * 60_000);

/** What `PROMPT$ vfpool ARGS` printed the `nth` time it ran (-1: the last), up to the next command or step. */
function outputOf(out: string, command: string, nth = 0): string {
  const marker = `\n${command}\n`;
  const starts: number[] = [];
  for (let i = out.indexOf(marker); i >= 0; i = out.indexOf(marker, i + 1)) starts.push(i + marker.length);
  const start = starts.at(nth);
  if (start === undefined) return `(no "${command}" in the demo's output)`;
  const rest = out.slice(start);
  const end = rest.search(/^(== |\S*\$ |   \()/m);
  // A step's heading starts with a blank line: not the command's.
  return (end < 0 ? rest : rest.slice(0, end)).replace(/\n+$/, '\n');
}

/** The demo's QEMU processes still running (their argv names the demo's work directory). */
function processesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(pid)) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      if (argv.includes(dir)) found.push(`${pid}: ${argv.split('\0').join(' ').slice(0, 120)}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

t.test('the README\'s main job (scripts/demo.sh): pool -> guest -> live migration to another host -> release -> stop, exit 0', async (t) => {
  const r = await execa('/usr/bin/env', ['-u', 'NODE_OPTIONS', 'bash', join(REPO, 'scripts/demo.sh')], { reject: false, env: { PATH: process.env.PATH! }, extendEnv: false });
  t.equal(r.exitCode, 0, String(r.stderr));
  // eslint-disable-next-line no-control-regex
  const out = String(r.stdout).replace(/\x1b\[[0-9;]*m/g, '');
  const MAC = '52:54:00:11:22:33';

  // The source host: its pool, the guest's VF, the guest's QEMU with the VF plugged.
  t.match(outputOf(out, 'src$ vfpool net-start sriov-pool'), /Pool sriov-pool started/);
  t.match(outputOf(out, 'src$ vfpool status', 0), /eth1 0000:01:00\.0 driver igb up: 4 of 7 VFs/, 'the seed-000 pool created 4 VFs on src');
  t.match(outputOf(out, 'src$ vfpool status', 1), /0000:01:10\.0 .* vfio-pci .* 52:54:00:11:22:33 .* 100 .* vm1 \(sriov-pool\)/, 'the guest holds a VF of src with its MAC and VLAN');
  const configure = /configure domain vm1, pool sriov-pool, VF 0000:01:10\.0: mac=(\S+) vlan=0 driver=vfio-pci -> mac=52:54:00:11:22:33 vlan=100 driver=vfio-pci/.exec(outputOf(out, 'src$ vfpool history'));
  t.ok(configure, 'src\'s history tells what the guest\'s VF was set to');
  const srcOriginalMac = configure?.[1] ?? '(none)';
  t.match(outputOf(out, 'src$ vfpool plug vm1'), /device_add vfpool-vf0 \(e1000e\) into vfpool-rp0/);
  t.match(outputOf(out, 'src$ vfpool guest-devices vm1', 0), new RegExp(`^01:00\\.0  8086:10d3  vfpool-vf0 +${MAC}$`, 'm'), 'the source QEMU shows the VF (an e1000e) with its MAC');

  // The migration: begin names no source PCI address; dst reserves its own VF with the same MAC.
  const description = out.slice(out.indexOf('src$ vfpool migrate begin vm1 > vm1.migration.json\n'), out.indexOf('dst$ vfpool migrate prepare'));
  t.match(description, /"pool": "sriov-pool"[\s\S]*"mac": "52:54:00:11:22:33"/);
  t.notMatch(description, /0000:/, 'the description carries no PCI address');
  t.match(outputOf(out, 'dst$ vfpool status', 1), /0000:02:10\.0 .* vfio-pci .* 52:54:00:11:22:33 .* 100 .* vm1 \(sriov-pool\)/, 'prepare reserved a VF of dst with the same MAC and VLAN');
  t.notMatch(outputOf(out, 'dst$ vfpool guest-devices vm1', 0), /vfpool-vf0/, 'the incoming QEMU starts without the VF');
  t.match(outputOf(out, 'dst$ vfpool guest-devices vm1', 0), /vfpool-rp0/, '…and with its root port');
  const perform = outputOf(out, `src$ vfpool migrate perform vm1 --to ${/--to (tcp:127\.0\.0\.1:[0-9]+)/.exec(out)?.[1]}`);
  t.match(perform, /device_del vfpool-vf0 on the source QEMU[\s\S]*vm1: migrated to tcp:127\.0\.0\.1:[0-9]+ in [0-9]+ ms/, 'perform unplugged the VF, then QEMU migrated');
  t.notMatch(outputOf(out, 'src$ vfpool guest-devices vm1', 1), /vfpool-vf0/, 'the VF left the source guest');
  t.match(outputOf(out, 'dst$ vfpool migrate confirm vm1 --role destination --wait-incoming 120'), /device_add vfpool-vf0 \(e1000e, mac 52:54:00:11:22:33\) on bus vfpool-rp0[\s\S]*confirmed-success/);
  t.match(outputOf(out, 'dst$ vfpool guest-devices vm1', 1), new RegExp(`^01:00\\.0  8086:10d3  vfpool-vf0 +${MAC}$`, 'm'), 'the destination\'s QEMU, over dst\'s QMP socket, has the NIC with the same MAC');

  // After confirm: src's VF restored (its MAC from before the guest) and freed, dst's held.
  t.match(outputOf(out, 'src$ vfpool migrate confirm vm1 --role source'), /restore and free the VFs of 'vm1' on this host \(migrated\)/);
  const srcAfter = outputOf(out, 'src$ vfpool status', 2);
  t.match(srcAfter, new RegExp(`0000:01:10\\.0 .* vfio-pci .* ${srcOriginalMac} .* - .* free`), 'src\'s VF has its original MAC back and is free');
  t.notMatch(srcAfter, /vm1/, 'src holds nothing for vm1');
  t.match(outputOf(out, 'dst$ vfpool status', 2), /0000:02:10\.0 .* 52:54:00:11:22:33 .* 100 .* vm1 \(sriov-pool\)/, 'dst holds the VF');

  // The end: the guest stops on dst, its VF released (twice: idempotent), both pools stopped.
  t.equal(outputOf(out, 'dst$ vfpool release vm1', 0), 'Domain vm1: VF 0000:02:10.0 restored and freed\n');
  t.equal(outputOf(out, 'dst$ vfpool release vm1', 1), 'Domain vm1 holds no VF (nothing to release)\n', 'a second release is a no-op');
  t.match(outputOf(out, 'src$ vfpool status', -1), /^eth1 0000:01:00\.0 driver igb up: 0 of 7 VFs\n$/, 'src\'s VFs are gone at the end');
  t.match(outputOf(out, 'dst$ vfpool status', -1), /^eth1 0000:02:00\.0 driver igb up: 0 of 7 VFs\n$/, 'dst\'s VFs are gone at the end');
  t.match(outputOf(out, 'dst$ vfpool history'), /configure domain vm1, pool sriov-pool, VF 0000:02:10\.0: .* -> mac=52:54:00:11:22:33 vlan=100 driver=vfio-pci/);

  // Nothing left behind: no QEMU of the demo's, no work directory.
  const work = /\/tmp\/vfpool-demo\.[A-Za-z0-9]+/.exec(out)?.[0];
  t.ok(work, 'the output names the demo\'s work directory');
  if (work) {
    t.same(processesUnder(work), [], 'no process of the demo still runs');
    t.equal(existsSync(work), false, 'its work directory is removed');
  }
});
