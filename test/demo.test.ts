import t from 'tap';
import { execa } from 'execa';
import { join } from 'node:path';
import { REPO } from './helpers/spawn.js';

t.test('the README\'s main job (scripts/demo.sh) walks pool -> guest -> release -> stop and exits 0', async (t) => {
  const r = await execa('/usr/bin/env', ['-u', 'NODE_OPTIONS', 'bash', join(REPO, 'scripts/demo.sh')], { reject: false, env: { PATH: process.env.PATH! }, extendEnv: false });
  t.equal(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.match(out, /Pool sriov-pool started/);
  t.match(out, /eth1 0000:01:00\.0 driver igb up: 4 of 7 VFs/, 'the seed-000 pool created 4 VFs');
  t.match(out, /0000:01:10\.0 .* vfio-pci .* 52:54:00:11:22:33 .* 100 .* vm1 \(sriov-pool\)/, 'the guest holds a VF with its MAC and VLAN');
  t.match(out, /Domain vm1: VF 0000:01:10\.0 restored and freed/);
  t.match(out, /Domain vm1 holds no VF \(nothing to release\)/, 'a second release is a no-op');
  t.match(out, /Pool sriov-pool destroyed[\s\S]*eth1 0000:01:00\.0 driver igb up: 0 of 7 VFs/, 'and the VFs are gone at the end');
  t.match(out, /configure domain vm1, pool sriov-pool, VF 0000:01:10\.0: mac=\S+ vlan=0 driver=vfio-pci -> mac=52:54:00:11:22:33 vlan=100 driver=vfio-pci/, 'the history tells what the guest\'s VF was set to');
});
