import t from 'tap';
import { execa } from 'execa';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, WITHOUT_TAP_LOADER } from './helpers/spawn.js';

// --uninstall asks the installed vfpool whether guests hold VFs, under the settings vfpool.conf
// gives: a configuration and state that do not exist (nothing held), not this machine's
// /etc/vfpool (where a libvirt test running meanwhile may have pools up). `status` only reads.
const QUIET_ENV = { VFPOOL_CONFIG_DIR: '/nonexistent/vfpool-install-test/etc', VFPOOL_STATE_DIR: '/nonexistent/vfpool-install-test/run', VFPOOL_JOURNAL_DIR: '/nonexistent/vfpool-install-test/journal' };
const install = (...args: string[]) => execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'bash', join(REPO, 'install.sh'), ...args], { reject: false, env: { PATH: process.env.PATH!, ...QUIET_ENV } });

t.test('install.sh --dest-dir stages a complete, idempotent install and --uninstall removes it', async (t) => {
  const dest = t.testdir({});
  const first = await install('--dest-dir', dest, '--prefix', '/opt/vfpool');
  t.equal(first.exitCode, 0, first.stderr);
  const lib = join(dest, 'opt/vfpool/lib/vfpool');
  t.equal(readlinkSync(join(dest, 'etc/libvirt/hooks/network.d/vfpool')), '/opt/vfpool/lib/vfpool/hooks/network', 'links point at PREFIX, not the staging dir');
  t.equal(readlinkSync(join(dest, 'etc/libvirt/hooks/qemu.d/vfpool')), '/opt/vfpool/lib/vfpool/hooks/qemu');
  t.equal(readlinkSync(join(dest, 'opt/vfpool/bin/vfpool')), '/opt/vfpool/lib/vfpool/dist/bin/cli.cjs');
  t.equal(readlinkSync(join(dest, 'opt/vfpool/bin/vfpool-qemu')), '/opt/vfpool/lib/vfpool/qemu-args/vfpool-qemu', 'the QEMU wrapper, for <emulator>');
  t.ok(lstatSync(join(lib, 'qemu-args/vfpool-qemu')).mode & 0o100, 'the wrapper is executable');
  t.ok(existsSync(join(lib, 'dist/bin/qemu-wrapper.cjs')) && existsSync(join(lib, 'dist/bin/qemu-wrapper.bundle.cjs.v8cache')), 'and its Node half is bundled, with its code cache');
  t.ok(lstatSync(join(lib, 'hooks/vfpool-hook')).mode & 0o100, 'the shim is executable');
  // So that no hook call forks readlink to find dist/bin (test/entry/shim-home.test.ts).
  t.match(readFileSync(join(lib, 'hooks/vfpool-hook'), 'utf8'), /^vfpool_home=\/opt\/vfpool\/lib\/vfpool$/m, 'the shim knows where it is installed');
  t.match(readFileSync(join(REPO, 'hooks/vfpool-hook'), 'utf8'), /^vfpool_home=$/m, 'the checkout\'s shim is left as it is');
  // Nor any QEMU start forks it (test/entry/qemu-wrapper.test.ts).
  t.match(readFileSync(join(lib, 'qemu-args/vfpool-qemu'), 'utf8'), /^vfpool_home=\/opt\/vfpool\/lib\/vfpool$/m, 'the QEMU wrapper knows where it is installed');
  t.match(readFileSync(join(REPO, 'qemu-args/vfpool-qemu'), 'utf8'), /^vfpool_home=$/m, 'the checkout\'s wrapper is left as it is');
  for (const f of ['network-hook.cjs', 'network-hook.bundle.cjs', 'network-hook.bundle.cjs.v8cache', 'qemu-hook.cjs', 'qemu-hook.bundle.cjs', 'qemu-hook.bundle.cjs.v8cache']) {
    t.ok(existsSync(join(lib, 'dist/bin', f)), `bundled entry point: ${f}`);
  }
  t.notOk(existsSync(join(lib, 'node_modules')), 'no node_modules: the bundles carry their dependencies');
  t.notOk(existsSync(join(lib, 'dist/test')), 'no tests installed');

  const conf = join(dest, 'etc/vfpool/vfpool.conf');
  t.match(readFileSync(conf, 'utf8'), /#VFPOOL_STATE_DIR=\/run\/vfpool/);
  writeFileSync(conf, 'VFPOOL_HOST=sim:/x.json\n');
  const firstRelease = readlinkSync(lib);
  const again = await install('--dest-dir', dest, '--prefix', '/opt/vfpool');
  t.equal(again.exitCode, 0, 'a second install works');
  t.equal(readFileSync(conf, 'utf8'), 'VFPOOL_HOST=sim:/x.json\n', 'an administrator\'s vfpool.conf is never overwritten');
  t.match(readlinkSync(lib), /^vfpool\.\d{14}\.\d+$/, 'lib/vfpool is a link to this install\'s own directory');
  // A hook or migration of the first install still running loads ./execa.cjs from its own
  // directory when it first runs ip or virsh: removed under it, it failed midway.
  t.same(readdirSync(join(dest, 'opt/vfpool/lib')).sort(), ['vfpool', readlinkSync(lib), firstRelease].sort(), 'the install it replaced is kept, for its processes still running');
  t.ok(existsSync(join(dest, 'opt/vfpool/lib', firstRelease, 'dist/bin/execa.cjs')), 'with the files they load as they go');
  const secondRelease = readlinkSync(lib);
  // A link made by hand or by a packager may be absolute: the release it names is kept too.
  rmSync(lib);
  symlinkSync(`/opt/vfpool/lib/${secondRelease}`, lib);
  t.equal((await install('--dest-dir', dest, '--prefix', '/opt/vfpool')).exitCode, 0, 'a third install works');
  t.same(readdirSync(join(dest, 'opt/vfpool/lib')).sort(), ['vfpool', readlinkSync(lib), secondRelease].sort(), 'and removes the installs before the one it replaced: no leftovers');

  // Reproduced: it named /var/lib/vfpool as the history it keeps whatever vfpool.conf said.
  writeFileSync(conf, 'VFPOOL_HOST=sim:/x.json\nVFPOOL_JOURNAL_DIR = "/srv/vfpool-history"\n');
  const un = await install('--dest-dir', dest, '--prefix', '/opt/vfpool', '--uninstall');
  t.equal(un.exitCode, 0);
  t.equal(un.stdout, 'vfpool removed from /opt/vfpool (pool definitions in /etc/vfpool and the VF history in /srv/vfpool-history are kept)');
  for (const p of ['etc/libvirt/hooks/network.d/vfpool', 'etc/libvirt/hooks/qemu.d/vfpool', 'opt/vfpool/bin/vfpool', 'opt/vfpool/bin/vfpool-qemu', 'opt/vfpool/lib/vfpool']) {
    t.notOk(existsSync(join(dest, p)), `${p} removed`);
  }
  t.same(readdirSync(join(dest, 'opt/vfpool/lib')), [], 'and every install directory');
  t.ok(existsSync(conf), 'configuration kept');
  t.equal((await install('--dest-dir', dest, '--prefix', '/opt/vfpool', '--uninstall')).exitCode, 0, 'uninstalling twice is fine');
});

t.test('install.sh refuses bad arguments with one line and exit 2', async (t) => {
  const r = await install('--frobnicate');
  t.same([r.exitCode, r.stderr], [2, "install.sh: unknown argument '--frobnicate' (expected --prefix DIR, --dest-dir DIR, --uninstall, --force)"]);
  // Without its value: bash's own '${2:?}' line ('install.sh: line 18: 2: --prefix needs a directory'), exit 1.
  for (const [opt, example] of [['--prefix', '/usr/local'], ['--dest-dir', '/tmp/stage']]) {
    const r = await install(opt!);
    t.same([r.exitCode, r.stderr], [2, `install.sh: ${opt} needs a directory (e.g. ${opt} ${example})`], `${opt} without a value`);
  }
  // \`--dest-dir "$PKGDIR"\` with PKGDIR unset: it installed into this system (hooks in /etc/libvirt).
  for (const argv of [['--dest-dir', ''], ['--dest-dir=']]) {
    const r = await install(...argv, '--prefix', '/opt/vfpool');
    t.same([r.exitCode, r.stderr], [2, 'install.sh: --dest-dir is empty: give the staging directory, or leave the option out to install into this system'], `${argv.join(' ')}: refused`);
  }
  const rel = await install('--prefix', 'usr');
  t.same([rel.exitCode, rel.stderr], [2, "install.sh: --prefix must be an absolute path, got 'usr'"]);
  // The prefix is written into the hook shim root runs: a path the shell would split is refused.
  const split = await install('--prefix', '/opt/a b');
  t.same([split.exitCode, split.stderr], [2, "install.sh: --prefix '/opt/a b' has characters other than letters, digits and _ . / + -: choose a plain path"]);
});

t.test('install.sh installs vfpool-reconcile.service, which passes systemd-analyze verify, the man page and completion', async (t) => {
  // systemd-analyze ships with Debian's systemd package (scripts/install-lab-packages.sh installs it).
  const dest = t.testdir({});
  t.equal((await install('--dest-dir', dest, '--prefix', '/opt/vfpool')).exitCode, 0);
  const unitFile = join(dest, 'etc/systemd/system/vfpool-reconcile.service');
  const unit = readFileSync(unitFile, 'utf8');
  t.match(unit, /^ExecStart=\/\S+\/node \/opt\/vfpool\/bin\/vfpool reconcile$/m, 'runs the installed CLI with the Node install.sh ran with');
  t.match(unit, /^After=libvirtd\.service virtqemud\.service$/m);
  t.match(unit, /^PartOf=libvirtd\.service virtqemud\.service$/m, 'a daemon restart reruns it');
  t.match(unit, /^WantedBy=libvirtd\.service virtqemud\.service$/m, 'enabled with the daemon');

  // verify checks that ExecStart is an executable: point it at the staged install's CLI (the
  // staged bin/vfpool links to /opt/vfpool, which does not exist here).
  const verify = async (text: string) => {
    const file = join(dest, 'verify', 'vfpool-reconcile.service');
    mkdirSync(join(dest, 'verify'), { recursive: true });
    writeFileSync(file, text.replace(' /opt/vfpool/bin/vfpool', ` ${dest}/opt/vfpool/lib/vfpool/dist/bin/cli.cjs`));
    return execa('systemd-analyze', ['verify', '--man=no', file], { reject: false, env: { PATH: process.env.PATH!, SYSTEMD_LOG_COLOR: '0' } });
  };
  const ok = await verify(unit);
  t.same([ok.exitCode, ok.stderr], [0, ''], 'systemd-analyze verify: no error, no warning');
  const broken = await verify(unit.replace('Type=oneshot', 'Type=oneshoot'));
  t.match(broken.stderr, /Failed to parse service type, ignoring: oneshoot/, 'and verify does catch a broken unit');

  const man = await execa('man', ['-l', join(dest, 'opt/vfpool/share/man/man1/vfpool.1')], { env: { MANPAGER: 'cat', PAGER: 'cat', PATH: process.env.PATH! }, reject: false });
  t.match(man.stdout, /vfpool doctor/, 'the man page is installed');
  t.match(readFileSync(join(dest, 'opt/vfpool/share/bash-completion/completions/vfpool'), 'utf8'), /complete -o bashdefault -o default -F _vfpool_yargs_completions vfpool/);

  t.equal((await install('--dest-dir', dest, '--prefix', '/opt/vfpool', '--uninstall')).exitCode, 0);
  for (const p of ['etc/systemd/system/vfpool-reconcile.service', 'opt/vfpool/share/man/man1/vfpool.1', 'opt/vfpool/share/bash-completion/completions/vfpool']) {
    t.notOk(existsSync(join(dest, p)), `${p} removed`);
  }
});

t.test('install.sh run under a restrictive umask (027, 077: hardened hosts, sudo) still installs what the QEMU user reads', async (t) => {
  // The wrapper runs as the domain's QEMU user (libvirt-qemu), not root: it must traverse the
  // install and read its bundle, and read vfpool.conf to learn the state directory and QEMU.
  // cp, mkdir and `cat >` create with the caller's umask, so under 077 all of that was root-only
  // and every guest whose <emulator> is vfpool-qemu failed to start.
  const dest = t.testdir({});
  const r = await execa('bash', ['-c', 'umask 077 && exec "$@"', 'sh', ...WITHOUT_TAP_LOADER, 'bash', join(REPO, 'install.sh'), '--dest-dir', dest, '--prefix', '/opt/vfpool'], { reject: false, env: { PATH: process.env.PATH! } });
  t.equal(r.exitCode, 0, r.stderr);
  const lib = join(dest, 'opt/vfpool/lib', readlinkSync(join(dest, 'opt/vfpool/lib/vfpool')));
  const mode = (p: string) => (lstatSync(p).mode & 0o777).toString(8);
  const readableByOthers = (p: string) => (lstatSync(p).mode & 0o004) !== 0;
  for (const d of ['opt/vfpool', 'opt/vfpool/lib', 'opt/vfpool/bin', 'etc/vfpool', 'etc/vfpool/networks']) t.equal(mode(join(dest, d)), '755', `${d} is 0755`);
  for (const d of [lib, join(lib, 'dist'), join(lib, 'dist/bin'), join(lib, 'qemu-args'), join(lib, 'hooks')]) t.equal(mode(d), '755', `${d.slice(dest.length)} is 0755`);
  for (const f of ['qemu-wrapper.cjs', 'qemu-wrapper.bundle.cjs', 'qemu-wrapper.bundle.cjs.v8cache', 'cli.bundle.cjs', 'yargs.cjs', 'execa.cjs']) t.ok(readableByOthers(join(lib, 'dist/bin', f)), `dist/bin/${f} is readable by the QEMU user (${mode(join(lib, 'dist/bin', f))})`);
  t.equal(mode(join(lib, 'qemu-args/vfpool-qemu')), '755', 'the wrapper shim is 0755');
  t.equal(mode(join(dest, 'etc/vfpool/vfpool.conf')), '644', 'vfpool.conf is 0644');
  t.equal(mode(join(dest, 'opt/vfpool/share/bash-completion/completions/vfpool')), '644', 'the completion script is 0644 (every user\'s shell reads it)');
});

t.test('install.sh writes the Node it ran with into the hook shim, the QEMU wrapper, the unit and the CLI', async (t) => {
  // A Node that is neither /usr/bin/node nor /usr/local/bin/node (nvm, a tarball under /opt):
  // libvirt runs the hooks with its own PATH and systemd the unit with systemd's, and neither
  // can be given VFPOOL_NODE, so install.sh records the one it found.
  const dir = t.testdir({});
  const nodeDir = join(dir, 'opt/node-v20/bin');
  mkdirSync(nodeDir, { recursive: true });
  symlinkSync(process.execPath, join(nodeDir, 'node'));
  const dest = join(dir, 'dest');
  const r = await execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'bash', join(REPO, 'install.sh'), '--dest-dir', dest, '--prefix', '/opt/vfpool'], { reject: false, env: { PATH: `${nodeDir}:/usr/sbin:/usr/bin:/sbin:/bin` } });
  t.equal(r.exitCode, 0, r.stderr);
  const lib = join(dest, 'opt/vfpool/lib/vfpool');
  for (const f of ['hooks/vfpool-hook', 'qemu-args/vfpool-qemu']) {
    t.match(readFileSync(join(lib, f), 'utf8'), new RegExp(`^vfpool_node=${join(nodeDir, 'node').replace(/[.+]/g, '\\$&')}$`, 'm'), `${f} knows the Node`);
    t.match(readFileSync(join(REPO, f), 'utf8'), /^vfpool_node=$/m, `the checkout's ${f} is left as it is`);
  }
  t.match(readFileSync(join(dest, 'etc/systemd/system/vfpool-reconcile.service'), 'utf8'), new RegExp(`^ExecStart=${join(nodeDir, 'node').replace(/[.+]/g, '\\$&')} /opt/vfpool/bin/vfpool reconcile$`, 'm'));
  // And the CLI: \`sudo vfpool\` (sudo's secure_path), cron (PATH=/usr/bin:/bin) and scripts
  // found no such Node through its \`#!/usr/bin/env node\`.
  for (const f of ['cli.cjs', 'cli.mjs']) {
    t.equal(readFileSync(join(lib, 'dist/bin', f), 'utf8').split('\n')[0], `#!${join(nodeDir, 'node')}`, `${f} starts the Node install.sh found`);
    t.equal(readFileSync(join(REPO, 'dist/bin', f), 'utf8').split('\n')[0], '#!/usr/bin/env node', `the checkout's ${f} is left as it is`);
  }
  const version = await execa(join(lib, 'dist/bin/cli.cjs'), ['--version'], { reject: false, env: { PATH: join(dir, 'empty') }, extendEnv: false });
  const stamped = readFileSync(join(REPO, 'dist/bin/version'), 'utf8').trim();
  t.same([version.exitCode, version.stdout, version.stderr], [0, stamped, ''], 'the installed vfpool runs with no node in PATH, and says which build it is');
  t.match(r.stdout, `vfpool ${stamped} installed in /opt/vfpool/lib/vfpool;`, 'install.sh says which build it installed');

  // No node at all: one line before anything is installed.
  const none = await execa('/bin/bash', [join(REPO, 'install.sh'), '--dest-dir', join(dir, 'none'), '--prefix', '/opt/vfpool'], { reject: false, env: { PATH: join(dir, 'empty') } });
  t.same([none.exitCode, none.stderr], [1, `install.sh: node is not in PATH (${join(dir, 'empty')}): install Node.js >= 20.5, or run install.sh with its directory in PATH`]);
  t.notOk(existsSync(join(dir, 'none')), 'nothing staged');

  // A Node older than vfpool needs (Debian 12's own nodejs is 18.19): one line, nothing staged,
  // where it was installed and every hook failed later, inside libvirt.
  const old = t.testdir({ node: '#!/bin/sh\n[ "$1" = -p ] && echo 18.19.0\n' });
  chmodSync(join(old, 'node'), 0o755);
  const tooOld = await execa('/bin/bash', [join(REPO, 'install.sh'), '--dest-dir', join(dir, 'old'), '--prefix', '/opt/vfpool'], { reject: false, env: { PATH: `${old}:/usr/bin:/bin` } });
  t.same([tooOld.exitCode, tooOld.stdout, tooOld.stderr], [1, '', `install.sh: ${join(old, 'node')} is Node.js 18.19.0, and vfpool needs >= 20.5: install a newer one (Debian 12's nodejs package is 18: NodeSource's or a tarball from nodejs.org), first in PATH`]);
  t.notOk(existsSync(join(dir, 'old')), 'nothing staged');
});

t.test('install.sh --uninstall refuses while guests hold VFs or pools run, and --force removes it anyway', async (t) => {
  // Removed then, vfpool would leave the VFs with the guests' MACs, VLANs and vfio-pci, and
  // nothing to give them back (libvirt's release and network stop would find no hook).
  const dir = t.testdir({ etc: { networks: { 'p.xml': `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward></network>` } } });
  writeFileSync(join(dir, 'host.json'), '{"pfs":[{"name":"eth1","totalVfs":4}]}');
  writeFileSync(join(dir, 'vm1.xml'), `<domain><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='p' mac='52:54:00:11:22:33'/></vfpool:domain></metadata></domain>`);
  const env = { PATH: process.env.PATH!, VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: join(dir, 'run'), VFPOOL_JOURNAL_DIR: join(dir, 'lib'), VFPOOL_HOST: `sim:${join(dir, 'host.json')}`, VFPOOL_LIBVIRT_RUN_DIR: join(dir, 'libvirt') };
  const vfpool = async (...args: string[]) => {
    const r = await execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), process.execPath, join(REPO, 'dist/bin/cli.cjs'), ...args], { reject: false, env });
    t.equal(r.exitCode, 0, `vfpool ${args.join(' ')}: ${r.stderr}`);
  };
  const dest = join(dir, 'dest');
  const un = (...more: string[]) => execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'bash', join(REPO, 'install.sh'), '--dest-dir', dest, '--prefix', '/opt/vfpool', ...more], { reject: false, env });
  t.equal((await un()).exitCode, 0);
  const cliLink = join(dest, 'opt/vfpool/bin/vfpool');

  await vfpool('net-start', 'p');
  await vfpool('prepare', '--xml', join(dir, 'vm1.xml'));
  const held = await un('--uninstall');
  t.same([held.exitCode, held.stderr], [3, 'install.sh: vfpool still holds VFs for domain(s) vm1 and runs pool(s) p: stop those guests and pools first (vfpool net-destroy POOL, or virsh net-destroy for a libvirt network) so their VFs are given back; or uninstall with --force']);
  for (const p of [cliLink, join(dest, 'etc/libvirt/hooks/qemu.d/vfpool'), join(dest, 'etc/libvirt/hooks/network.d/vfpool')]) t.ok(lstatSync(p).isSymbolicLink(), `${p.slice(dest.length)} is still there`);

  await vfpool('release', 'vm1');
  const running = await un('--uninstall');
  t.same([running.exitCode, running.stderr], [3, 'install.sh: vfpool still runs pool(s) p: stop those guests and pools first (vfpool net-destroy POOL, or virsh net-destroy for a libvirt network) so their VFs are given back; or uninstall with --force']);
  const forced = await un('--uninstall', '--force');
  t.equal(forced.exitCode, 0, '--force removes it anyway');
  t.throws(() => lstatSync(cliLink), 'the CLI is gone');

  t.equal((await un()).exitCode, 0, 'installed again');
  // A state vfpool cannot read: it cannot tell, so it does not remove itself either.
  const state = readFileSync(join(dir, 'run/state.json'));
  writeFileSync(join(dir, 'run/state.json'), '{"version":2,');
  const unknown = await un('--uninstall');
  t.equal(unknown.exitCode, 3);
  t.match(unknown.stderr, /^install\.sh: cannot tell whether vfpool is in use: `vfpool status --json` failed \(vfpool: .*state\.json is not valid JSON.*\); or uninstall with --force$/);
  t.ok(lstatSync(cliLink).isSymbolicLink(), 'nothing removed');
  writeFileSync(join(dir, 'run/state.json'), state);
  await vfpool('net-destroy', 'p');
  const idle = await un('--uninstall');
  t.equal(idle.exitCode, 0, `nothing in use: removed (${idle.stderr})`);
  t.throws(() => lstatSync(cliLink), 'the CLI is gone');
});

t.test('install.sh refuses a state or history directory another user owns, with one line, before it installs anything', { skip: process.getuid?.() !== 0 && !process.env.CI && 'needs root (a private mount namespace stands in for the system directories)' }, async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('needs root (a private mount namespace stands in for the system directories); CI runs as root');
    return;
  }
  // Reproduced: an existing /run/vfpool of uid 4242 stayed that user's (`install -d -m 0711`
  // changes only the mode), and every vfpool operation then refused the state directory.
  // install.sh runs without --dest-dir here, so /etc and /var are overlays (their changes in a
  // tmpfs) and /run a tmpfs of a private mount namespace: nothing reaches this machine's own.
  const dir = t.testdir({ prefix: {}, overlays: {} });
  const prefix = join(dir, 'prefix');
  const script = [
    'set -e',
    'mount -t tmpfs none "$4" && cd "$4"',
    'for d in etc var; do mkdir -p $d/upper $d/work; mount -t overlay overlay -o "lowerdir=/$d,upperdir=$PWD/$d/upper,workdir=$PWD/$d/work" /$d; done',
    'mount -t tmpfs none /run',
    // This machine's own vfpool.conf (a libvirt test may have moved the state directory in it) stays out.
    'mkdir -p /etc/vfpool && : >/etc/vfpool/vfpool.conf',
    'mkdir -m 0711 /run/vfpool',
    'chown "$3" /run/vfpool',
    'status=0; bash "$1" --prefix "$2" || status=$?',
    'stat -c "%u %a" /run/vfpool; ls /etc/libvirt/hooks/qemu.d 2>/dev/null || true',
    'exit $status',
  ].join('\n');
  const run = (owner: string) => execa('unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', join(REPO, 'install.sh'), prefix, owner, join(dir, 'overlays')], { reject: false, env: { PATH: process.env.PATH!, ...QUIET_ENV } });
  const foreign = await run('4242:4242');
  t.same([foreign.exitCode, foreign.stderr], [1, 'install.sh: /run/vfpool is owned by uid 4242, not root, and vfpool refuses a directory another user controls: check what is in it, then chown 0:0 /run/vfpool (or remove it), and run install.sh again']);
  t.equal(foreign.stdout, '4242 711', 'the directory left as it was, no hook linked');
  t.same(readdirSync(prefix), [], 'nothing installed');
  const root = await run('0:0');
  t.equal(root.exitCode, 0, root.stderr);
  t.match(root.stdout, /^vfpool .* installed in [^]*\n0 711\nvfpool$/, 'root\'s: installed, the directory kept 0711, the hook linked');
});
