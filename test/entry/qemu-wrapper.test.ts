import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { decodeArgv, encodeArgv } from '../../src/qemu/wrapper-argv.js';
import { domainQmpSocketPath, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { libvirtQ35Argv } from '../helpers/qemu-argv.js';
import { REPO, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';
import { qemuWrapper } from '../../src/entry/main/qemu-wrapper.js';
import { runEntry, runInProcess } from '../../src/entry/run.js';

/**
 * The wrapper as libvirt runs it: a process with argv, an inherited descriptor (libvirt's
 * monitor fd), and an environment of its own. A stand-in QEMU records the argv it got (NUL
 * separated), its pid, the descriptor and exits 7; a stand-in Node records each start, so
 * the fast path is proven not to start Node.
 */
const SHIM = join(REPO, 'qemu-args/vfpool-qemu');
const MAC = '52:54:00:aa:bb:01' as MacAddress;

function world(dir: string) {
  const record = join(dir, 'qemu-record');
  const nodeStarts = join(dir, 'node-starts');
  const qemu = join(dir, 'fake-qemu');
  writeFileSync(qemu, `#!/bin/sh
{ printf '%s\\0' "pid=$$" "fd3=$(readlink /proc/$$/fd/3)"; for a do printf '%s\\0' "$a"; done; } >'${record}'
exit 7
`);
  const node = join(dir, 'fake-node');
  writeFileSync(node, `#!/bin/sh\necho start >>'${nodeStarts}'\nexec '${process.execPath}' "$@"\n`);
  chmodSync(qemu, 0o755);
  chmodSync(node, 0o755);
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', HOME: '/root', VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: join(dir, 'run'), VFPOOL_QEMU: qemu, VFPOOL_NODE: node };
  const fd3File = join(dir, 'monitor-fd');
  writeFileSync(fd3File, '');
  const run = async (argv: string[], envOver: Record<string, string | undefined> = {}, shim = SHIM) => {
    const fd = openSync(fd3File, 'r');
    try {
      // node:child_process, not execa: execa cannot hand a child a descriptor above 2.
      const [envBin, ...unset] = WITHOUT_TAP_LOADER;
      const child = spawn(envBin, [...unset, shim, ...argv], { env: { ...env, ...envOver }, stdio: ['ignore', 'ignore', 'pipe', fd] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exitCode = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const r = { exitCode, stderr };
      const rec = existsSync(record) ? readFileSync(record, 'utf8').split('\0').slice(0, -1) : null;
      return { exitCode: r.exitCode, stderr: r.stderr, shimPid: child.pid, qemuPid: rec ? Number(rec[0]!.slice(4)) : null, fd3: rec?.[1]?.slice(4) ?? null, argv: rec?.slice(2) ?? null, nodeStarts: existsSync(nodeStarts) ? readFileSync(nodeStarts, 'utf8').split('\n').length - 1 : 0 };
    } finally {
      closeSync(fd);
      for (const f of [record, nodeStarts]) if (existsSync(f)) writeFileSync(f, ''), (await import('node:fs')).rmSync(f);
    }
  };
  return { dir, env, run, fd3File, state: join(dir, 'run'), qemu };
}

const hostile = ['with space', '$(touch /tmp/vfpool-pwned)', '`id`', 'a\nb\n', '', '*', '\\n\\', "'\"", '-'];

t.test('fast path: no -name, or a domain without a plan, reaches QEMU untouched, same pid and fds, without starting Node', async (t) => {
  const w = world(t.testdir({ etc: {}, run: {} }));
  for (const argv of [['-version'], ['-S', '-name', 'guest=plain,debug-threads=on', ...hostile], ['-machine', 'none', '-qmp', 'unix:/x'], ['-name', 'guest=../etc,x=1']]) {
    const r = await w.run(argv);
    t.equal(r.exitCode, 7, 'QEMU\'s exit status');
    t.same(r.argv, argv, 'argv byte for byte');
    t.equal(r.qemuPid, r.shimPid, 'exec: QEMU has the pid libvirt started');
    t.equal(r.fd3, w.fd3File, 'the inherited descriptor reaches QEMU');
    t.equal(r.nodeStarts, 0, 'no Node start');
  }
  t.notOk(existsSync('/tmp/vfpool-pwned'), 'nothing was evaluated');
});

t.test('a planned domain: Node edits, the shim execs QEMU with exactly the generated argv (hostile arguments intact)', async (t) => {
  const w = world(t.testdir({ etc: {}, run: {} }));
  const plan: DomainPlanV1 = {
    version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: MAC, failoverStandbyMac: MAC, guestAddress: null }],
  };
  await writeDomainPlan(w.state, plan, { uid: process.getuid!(), gid: process.getgid!() });
  const argv = [...libvirtQ35Argv('vm1', MAC), '-append', hostile.join(' '), ...hostile.flatMap((h) => ['-fw_cfg', h])];
  const r = await w.run(argv);
  t.equal(r.exitCode, 7, r.stderr);
  t.equal(r.nodeStarts, 1, 'Node started once');
  t.same(r.argv, planQemuArgs(plan, parseQemuArgv(argv), { qmpSocketPath: domainQmpSocketPath(w.state, 'vm1') }).argv, 'the generator\'s argv, exactly');
  t.equal(r.qemuPid, r.shimPid, 'still exec: same pid');
  t.equal(r.fd3, w.fd3File, 'the inherited descriptor survives the Node round trip');
  t.notOk(existsSync('/tmp/vfpool-pwned'), 'nothing was evaluated');

  const refused = await w.run(libvirtQ35Argv('vm1', '52:54:00:00:00:99'));
  t.equal(refused.exitCode, 2, 'a refusal is the wrapper\'s exit status');
  t.equal(refused.argv, null, 'QEMU not started');
  t.match(refused.stderr, /^vfpool: domain 'vm1': vfpool-vf0: no virtio-net device with mac=52:54:00:aa:bb:01 on QEMU's command line to pair with: [^\n]*\n$/);
});

t.test('an installed wrapper starts the Node install.sh recorded, which libvirt\'s environment could not name', async (t) => {
  // As install.sh leaves it (test/install.test.ts): vfpool_home and vfpool_node written in. No
  // VFPOOL_NODE (libvirt passes none), and a /usr/bin/node that is not the one vfpool runs on.
  const w = world(t.testdir({ etc: {}, run: {}, inst: { 'qemu-args': {} } }));
  await writeDomainPlan(w.state, { version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] }, { uid: process.getuid!(), gid: process.getgid!() });
  const installed = join(w.dir, 'inst/qemu-args/vfpool-qemu');
  writeFileSync(installed, readFileSync(SHIM, 'utf8').replace(/^vfpool_home=$/m, `vfpool_home=${REPO}`).replace(/^vfpool_node=$/m, `vfpool_node=${join(w.dir, 'fake-node')}`));
  chmodSync(installed, 0o755);
  const r = await w.run(['-name', 'guest=vm1', '-S'], { VFPOOL_NODE: undefined }, installed);
  t.equal(r.exitCode, 7, r.stderr);
  t.equal(r.nodeStarts, 1, 'the recorded Node ran the wrapper\'s Node half');
  t.ok(r.argv?.includes('-S'), 'and QEMU got the edited command line');
});

t.test('the checkout\'s wrapper starts Node without forking readlink; a link to it elsewhere resolves the link', async (t) => {
  // install.sh writes the install path into the installed wrapper (test/install.test.ts); a
  // `readlink` first in PATH records every call of the shim's (the stand-in QEMU reads its
  // descriptor with readlink too: only calls naming the wrapper count).
  const w = world(t.testdir({ etc: {}, run: {} }));
  await writeDomainPlan(w.state, { version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] }, { uid: process.getuid!(), gid: process.getgid!() });
  const bin = join(w.dir, 'bin');
  mkdirSync(bin);
  const calls = join(w.dir, 'readlink-calls');
  writeFileSync(join(bin, 'readlink'), `#!/bin/sh\necho "$*" >>${JSON.stringify(calls)}\nexec /usr/bin/readlink "$@"\n`);
  chmodSync(join(bin, 'readlink'), 0o755);
  const PATH = `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`;
  const wrapperCalls = () => (existsSync(calls) ? readFileSync(calls, 'utf8') : '').split('\n').filter((l) => l.includes('vfpool-qemu'));
  const socket = ['-qmp', `unix:${domainQmpSocketPath(w.state, 'vm1')},server=on,wait=off`];

  const direct = await w.run(['-name', 'vm1', '-machine', 'q35'], { PATH });
  t.equal(direct.exitCode, 7, direct.stderr);
  t.same([direct.nodeStarts, direct.argv?.slice(4)], [1, socket], 'Node edited the argv');
  t.same(wrapperCalls(), [], 'no readlink');

  // As a person may link a checkout's wrapper into PATH, or name it in <emulator> through a link.
  const link = join(w.dir, 'vfpool-qemu');
  symlinkSync(SHIM, link);
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const linked = spawnSync(envBin, [...unset, link, '-name', 'vm1', '-machine', 'q35'], { env: { ...w.env, PATH }, stdio: ['ignore', 'ignore', 'pipe'] });
  t.equal(linked.status, 7, String(linked.stderr));
  t.match(wrapperCalls(), [new RegExp(`^-f ${link}$`)], 'the link was resolved, once');
});

t.test('settings from vfpool.conf when the environment has none (libvirt runs the wrapper with its own)', async (t) => {
  const w = world(t.testdir({ etc: {}, run: {} }));
  const other = join(w.dir, 'state-from-conf');
  mkdirSync(other);
  await writeDomainPlan(other, { version: 1, domain: 'vm1', uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] }, { uid: process.getuid!(), gid: process.getgid!() });
  writeFileSync(join(w.dir, 'etc/vfpool.conf'), `# comment\nVFPOOL_STATE_DIR = "${other}"\nVFPOOL_QEMU=${w.qemu}\n`);
  const r = await w.run(['-name', 'vm1', '-machine', 'q35'], { VFPOOL_STATE_DIR: undefined, VFPOOL_QEMU: undefined });
  t.equal(r.exitCode, 7, r.stderr);
  t.same(r.argv?.slice(4), ['-qmp', `unix:${domainQmpSocketPath(other, 'vm1')},server=on,wait=off`]);
});

t.test('VFPOOL_QEMU pointing at the wrapper itself is refused, not an endless exec loop', async (t) => {
  const w = world(t.testdir({ etc: {}, run: {} }));
  const r = await w.run(['-version'], { VFPOOL_QEMU: SHIM });
  t.same([r.exitCode, r.stderr], [1, `vfpool: VFPOOL_QEMU (${SHIM}) is the vfpool-qemu wrapper itself: point it at the real QEMU\n`]);
});

t.test('the argv encoding round-trips every argument', async (t) => {
  t.same(decodeArgv(encodeArgv(hostile)), hostile);
  t.same(decodeArgv(encodeArgv([])), []);
});

t.test('the Node half in-process: the generated argv for a planned domain, the argv unchanged without a plan, a refusal as its exit code', async (t) => {
  const dir = t.testdir({ etc: {}, run: {} });
  const env = { VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: join(dir, 'run') };
  const wrapper = (argv: string[]) => runInProcess(() => runEntry(() => qemuWrapper(argv)), { env });
  const plan: DomainPlanV1 = {
    version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: MAC, failoverStandbyMac: null, guestAddress: null }],
  };
  await writeDomainPlan(join(dir, 'run'), plan, { uid: process.getuid!(), gid: process.getgid!() });
  const argv = [...libvirtQ35Argv('vm1'), '-append', hostile.join(' ')];
  const r = await wrapper(argv);
  t.same([r.exitCode, r.stderr], [0, '']);
  t.same(decodeArgv(r.stdout), planQemuArgs(plan, parseQemuArgv(argv), { qmpSocketPath: domainQmpSocketPath(join(dir, 'run'), 'vm1') }).argv);
  const plain = ['-name', 'guest=other', ...hostile];
  t.same(decodeArgv((await wrapper(plain)).stdout), plain, 'no plan: untouched');
  t.same(decodeArgv((await wrapper(['-version'])).stdout), ['-version'], 'no -name: untouched');
  const clash = await wrapper([...argv, '-device', 'e1000e,id=vfpool-vf0']);
  t.equal(clash.exitCode, 3);
  t.match(clash.stderr, /^vfpool: domain 'vm1': QEMU's command line already has the id 'vfpool-vf0'/);
  t.equal(clash.stdout, '', 'nothing for the shim to exec');
});
