import t from 'tap';
import { execa } from 'execa';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './helpers/spawn.js';

const install = (...args: string[]) => execa('bash', [join(REPO, 'install.sh'), ...args], { reject: false, env: { PATH: process.env.PATH! } });

t.test('install.sh --dest-dir stages a complete, idempotent install and --uninstall removes it', async (t) => {
  const dest = t.testdir({});
  const first = await install('--dest-dir', dest, '--prefix', '/opt/vfpool');
  t.equal(first.exitCode, 0, first.stderr);
  const lib = join(dest, 'opt/vfpool/lib/vfpool');
  t.equal(readlinkSync(join(dest, 'etc/libvirt/hooks/network.d/vfpool')), '/opt/vfpool/lib/vfpool/hooks/network', 'links point at PREFIX, not the staging dir');
  t.equal(readlinkSync(join(dest, 'etc/libvirt/hooks/qemu.d/vfpool')), '/opt/vfpool/lib/vfpool/hooks/qemu');
  t.equal(readlinkSync(join(dest, 'opt/vfpool/bin/vfpool')), '/opt/vfpool/lib/vfpool/dist/bin/cli.mjs');
  t.equal(readlinkSync(join(dest, 'opt/vfpool/bin/vfpool-qemu')), '/opt/vfpool/lib/vfpool/qemu-args/vfpool-qemu', 'the QEMU wrapper, for <emulator>');
  t.ok(lstatSync(join(lib, 'qemu-args/vfpool-qemu')).mode & 0o100, 'the wrapper is executable');
  t.ok(existsSync(join(lib, 'dist/bin/qemu-wrapper.mjs')), 'and its Node half is bundled');
  t.ok(lstatSync(join(lib, 'hooks/vfpool-hook')).mode & 0o100, 'the shim is executable');
  t.ok(existsSync(join(lib, 'dist/bin/network-hook.mjs')) && existsSync(join(lib, 'dist/bin/qemu-hook.mjs')), 'bundled entry points');
  t.notOk(existsSync(join(lib, 'node_modules')), 'no node_modules: the bundles carry their dependencies');
  t.notOk(existsSync(join(lib, 'dist/test')), 'no tests installed');

  const conf = join(dest, 'etc/vfpool/vfpool.conf');
  t.match(readFileSync(conf, 'utf8'), /#VFPOOL_STATE_DIR=\/run\/vfpool/);
  writeFileSync(conf, 'VFPOOL_HOST=sim:/x.json\n');
  const again = await install('--dest-dir', dest, '--prefix', '/opt/vfpool');
  t.equal(again.exitCode, 0, 'a second install works');
  t.equal(readFileSync(conf, 'utf8'), 'VFPOOL_HOST=sim:/x.json\n', 'an administrator\'s vfpool.conf is never overwritten');
  t.match(readlinkSync(lib), /^vfpool\.\d{14}\.\d+$/, 'lib/vfpool is a link to this install\'s own directory');
  t.same(readdirSync(join(dest, 'opt/vfpool/lib')).sort(), ['vfpool', readlinkSync(lib)].sort(), 'the previous install is gone, no leftovers');

  const un = await install('--dest-dir', dest, '--prefix', '/opt/vfpool', '--uninstall');
  t.equal(un.exitCode, 0);
  for (const p of ['etc/libvirt/hooks/network.d/vfpool', 'etc/libvirt/hooks/qemu.d/vfpool', 'opt/vfpool/bin/vfpool', 'opt/vfpool/bin/vfpool-qemu', 'opt/vfpool/lib/vfpool']) {
    t.notOk(existsSync(join(dest, p)), `${p} removed`);
  }
  t.same(readdirSync(join(dest, 'opt/vfpool/lib')), [], 'and every install directory');
  t.ok(existsSync(conf), 'configuration kept');
  t.equal((await install('--dest-dir', dest, '--prefix', '/opt/vfpool', '--uninstall')).exitCode, 0, 'uninstalling twice is fine');
});

t.test('install.sh refuses bad arguments with one line and exit 2', async (t) => {
  const r = await install('--frobnicate');
  t.same([r.exitCode, r.stderr], [2, "install.sh: unknown argument '--frobnicate' (expected --prefix DIR, --dest-dir DIR, --uninstall)"]);
  const rel = await install('--prefix', 'usr');
  t.same([rel.exitCode, rel.stderr], [2, "install.sh: --prefix must be an absolute path, got 'usr'"]);
});
