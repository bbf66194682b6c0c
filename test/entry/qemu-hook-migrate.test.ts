import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { domainXml } from '../helpers/libvirt-domains.js';
import { hookStatus as status, META, qemuHook as hook, qemuHookInProcess, setupHookWorld as setup, type HookEnv } from '../helpers/hook-world.js';

/** The Node half in-process (the first test runs the shim too: stdout must pass through it). */
const node = (w: HookEnv, args: string[], stdin: string) => qemuHookInProcess(w.hookEnv, args, stdin);

/**
 * The qemu hook's part in a migration libvirt drives: `migrate begin` on the destination (the
 * XML in, the XML to use out, non-zero cancels) and `started` of the incoming QEMU.
 */
const MAPPED = `<vfpool:hostdev pool='sriov-pool' address='0000:01:10.0' mac='52:54:00:9a:00:11'/>`;
const REFUSED = `<vfpool:hostdev netdev='eth3' mac='52:54:00:9a:00:12'/>`;

t.test('migrate begin: a source PCI address is dropped for the pool; the XML on stdout', async (t) => {
  const w = await setup(t);
  const r = await hook(w, ['vm1', 'migrate', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: MAPPED }));
  t.equal(r.exitCode, 0, r.stderr);
  t.match(r.stdout, /<vfpool:hostdev pool='sriov-pool' mac='52:54:00:9a:00:11'\/>/, 'pool kept, address gone');
  t.notMatch(r.stdout, /0000:01:10\.0/);
  t.match(r.stdout, /^<domain[\s\S]*<\/domain>\s*$/, 'the whole domain XML, for libvirt to use');
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /address='0000:01:10\.0' \(source host\) replaced by pool='sriov-pool'/, 'the mapping is logged');
  t.equal((await status(w)).pfs[0]!.vfs.filter((v) => v.owner).length, 0, 'nothing reserved by migrate begin');
});

t.test('migrate begin: a request naming a netdev of the source with no pool is refused (exit 2 cancels), stdout empty', async (t) => {
  const w = await setup(t);
  const r = await node(w, ['vm1', 'migrate', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: REFUSED }));
  t.equal(r.exitCode, 2);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^vfpool: .*names netdev='eth3', a device of the source host, which the destination cannot hold: give the request a pool/);
});

t.test('migrate begin: a domain with only pool requests keeps its XML (empty stdout)', async (t) => {
  const w = await setup(t);
  const r = await node(w, ['vm1', 'migrate', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
  t.same([r.exitCode, r.stdout], [0, ''], r.stderr);
});

t.test('started of an incoming QEMU: the destination side is recorded and a detached confirm is spawned; a normal start records nothing', async (t) => {
  const w = await setup(t);
  const env = { ...w.hookEnv, VFPOOL_SIM_VF_DEVICE: 'e1000e', VFPOOL_PROC: join(w.dir, 'proc') };
  const pid = process.pid; // alive (libvirt's pid file must name a running process); its cmdline is the fake below
  mkdirSync(join(w.dir, 'proc', String(pid)), { recursive: true });
  const cmdline = (extra: string[]) => writeFileSync(join(w.dir, 'proc', String(pid), 'cmdline'), ['qemu-system-x86_64', '-name', 'guest=vm1', ...extra, ''].join('\0'));
  writeFileSync(join(w.runDir, 'vm1.pid'), `${pid}\n`);
  const we = { ...w, hookEnv: env };
  const prep = await node(we, ['vm1', 'prepare', 'begin', '-'], domainXml('prepare', { name: 'vm1', vfpool: META }));
  t.equal(prep.exitCode, 0, prep.stderr);
  const record = join(w.settings.stateDir, 'migrate', 'vm1.json');

  cmdline(['-S']);
  const normal = await node(we, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([normal.exitCode, normal.stdout], [0, ''], normal.stderr);
  t.notOk(existsSync(record), 'a QEMU without -incoming: no migration record');

  cmdline(['-S', '-incoming', 'defer']);
  const incoming = await node(we, ['vm1', 'started', 'begin', '-'], domainXml('started', { name: 'vm1', vfpool: META }));
  t.same([incoming.exitCode, incoming.stdout], [0, ''], incoming.stderr);
  const r = JSON.parse(readFileSync(record, 'utf8')) as { role: string; stage: string; reserved: boolean; vfs: Array<{ id: string; kind: string; mac: string }> };
  t.match(r, { role: 'destination', stage: 'prepared', reserved: true, vfs: [{ id: 'vfpool-vf0', kind: 'plain', mac: '52:54:00:11:22:33' }] });
  t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /started \(incoming migration\): vfpool-vf0 left off; confirm --wait-incoming runs as pid [0-9]+/);
  t.equal((await status(w)).pfs[0]!.vfs[0]!.owner?.domain, 'vm1', 'the reservation stays (confirm plugs or frees it)');
});
