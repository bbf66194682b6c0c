import t from 'tap';
import fs, { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { PoolRegistry } from '../../src/pool/pool-registry.js';
import { StateStore } from '../../src/state/store.js';
import { poolXml } from './activation-suite.js';
import { scratchDir } from '../helpers/scratch.js';

function registry(t: Parameters<typeof scratchDir>[0]) {
  const dir = scratchDir(t);
  const store = new StateStore(join(dir, 'run'));
  return { dir, store, reg: new PoolRegistry(join(dir, 'etc'), store) };
}

t.test('define writes NAME.xml (0644, one trailing newline), get and names find it, undefine removes it', async (t) => {
  const { dir, reg } = registry(t);
  t.same(reg.names(), [], 'no networks directory yet: no pools');
  const xml = poolXml('eth1', 2, { name: 'p1' });
  const spec = await reg.define(xml, 'p1.xml');
  t.equal(spec.name, 'p1');
  const file = join(dir, 'etc/networks/p1.xml');
  t.equal(readFileSync(file, 'utf8'), xml + '\n');
  t.equal(statSync(file).mode & 0o777, 0o644);
  t.equal(reg.get('p1').name, 'p1');
  t.same(reg.definition('p1')?.xml, xml + '\n');
  t.equal(reg.definition('p2'), undefined);
  writeFileSync(join(dir, 'etc/networks/README'), 'not a pool');
  t.same(reg.names(), ['p1'], 'only *.xml files are pools');
  reg.undefine('p1');
  t.same(reg.names(), []);
});

t.test('a read-only or full definitions directory: define and undefine are one line naming the file (exit 1), nothing changed', async (t) => {
  const { dir, reg } = registry(t);
  const xml = poolXml('eth1', 2, { name: 'p1' });
  await reg.define(xml, 'p1.xml');
  const file = join(dir, 'etc/networks/p1.xml');
  const refuse = (call: 'open' | 'rmSync', code: string) => {
    const real = fs[call];
    (fs as unknown as Record<string, unknown>)[call] = () => {
      throw Object.assign(new Error(`${code}: refused`), { code });
    };
    syncBuiltinESMExports();
    return () => {
      (fs as unknown as Record<string, unknown>)[call] = real;
      syncBuiltinESMExports();
    };
  };
  let undo = refuse('open', 'EROFS'); // write-file-atomic opens its temp file through fs.open
  await t.rejects(reg.define(poolXml('eth1', 4, { name: 'p1' }), 'p1.xml').finally(undo), {
    exitCode: 1,
    message: `the pool definition ${file} is on a read-only file system`,
    hint: 'make it writable, or point VFPOOL_CONFIG_DIR elsewhere',
  });
  undo = refuse('open', 'ENOSPC');
  await t.rejects(reg.define(poolXml('eth1', 4, { name: 'p1' }), 'p1.xml').finally(undo), { exitCode: 1, message: `the pool definition ${file}: its file system is full (ENOSPC)` });
  t.equal(readFileSync(file, 'utf8'), xml + '\n', 'the definition as it was');
  undo = refuse('rmSync', 'EROFS');
  t.throws(() => { try { reg.undefine('p1'); } finally { undo(); } }, { exitCode: 1, message: `the pool definition ${file} is on a read-only file system` });
  t.same(readdirSync(join(dir, 'etc/networks')), ['p1.xml'], 'still defined, no temp file left');
});

t.test('a pool a stopped libvirt network carries is libvirt\'s: net-undefine and net-start point to virsh, not to net-define', async (t) => {
  // Reproduced: \`vfpool net-undefine vfp-net\` of a libvirt network carrying the pool (defined in
  // libvirt, inactive) said "unknown pool 'vfp-net': define it with vfpool net-define FILE".
  const dir = scratchDir(t);
  const libvirt = join(dir, 'libvirt');
  const reg = new PoolRegistry(join(dir, 'etc'), new StateStore(join(dir, 'run')), libvirt);
  mkdirSync(join(libvirt, 'qemu/networks'), { recursive: true });
  const file = join(libvirt, 'qemu/networks/vfp-net.xml');
  writeFileSync(file, `<network><name>vfp-net</name><forward mode='hostdev' managed='yes'/><metadata><vfpool:pool xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:pf dev='eth1'/></vfpool:pool></metadata></network>`);
  const message = `pool 'vfp-net' is not vfpool's: the stopped libvirt network 'vfp-net' (${file}) carries it in its metadata`;
  t.throws(() => reg.undefine('vfp-net'), { exitCode: 2, message, hint: 'use `virsh net-undefine vfp-net`' });
  t.throws(() => reg.undefinable('vfp-net'), { exitCode: 2, message, hint: 'use `virsh net-undefine vfp-net`' }, 'its --dry-run says the same');
  t.throws(() => reg.unknown('vfp-net', 'net-start'), { exitCode: 2, message, hint: 'use `virsh net-start vfp-net`' });
  t.throws(() => reg.get('vfp-net'), { exitCode: 2, message, hint: /^start it with `virsh net-start vfp-net`/ });
  // A plain libvirt network (no vfpool metadata) of that name is not a pool at all.
  writeFileSync(file, `<network><name>vfp-net</name><forward mode='nat'/></network>`);
  t.throws(() => reg.undefine('vfp-net'), { exitCode: 2, message: "unknown pool 'vfp-net'" });
});

t.test('refusals: unknown pool (exit 2), a bad name (exit 2, no file read), undefining an active pool (exit 3)', async (t) => {
  const { dir, store, reg } = registry(t);
  t.throws(() => reg.get('nope'), { exitCode: 2, message: "unknown pool 'nope'", hint: /define it with `vfpool net-define FILE` \(no .*nope\.xml\)/ });
  t.throws(() => reg.undefine('nope'), { exitCode: 2, message: "unknown pool 'nope'" });
  t.throws(() => reg.get('../etc/passwd'), { exitCode: 2, message: /pool name '\.\.\/etc\/passwd' is not a name vfpool accepts/ });
  await t.rejects(reg.define('<network><name>p</name></network>', 'bad.xml'), { exitCode: 2, message: /^bad\.xml: / });
  t.same(reg.names(), [], 'an invalid definition is not written');
  const xml = poolXml('eth1', 2, { name: 'p1' });
  await reg.define(xml, 'p1.xml');
  await store.update((s) => {
    s.pools.p1 = { xml, origin: 'definition', startedAt: new Date().toISOString(), activated: [] } as never;
  });
  t.throws(() => reg.undefine('p1'), { exitCode: 3, message: "pool 'p1' is active", hint: 'stop it first with `vfpool net-destroy p1`' });
  t.throws(() => reg.undefinable('p1'), { exitCode: 3, message: "pool 'p1' is active" }, 'what a dry run checks is what undefine checks');
  t.ok(reg.definition('p1'), 'still defined');
  await store.update((s) => {
    s.pools.t1 = { xml: poolXml('eth2', 2, { name: 't1' }), origin: 'libvirt-metadata', startedAt: new Date().toISOString(), activated: [] } as never;
  });
  t.throws(() => reg.undefinable('t1'), { exitCode: 2, message: "pool 't1' is transient (no definition file: libvirt network 't1' carries it)", hint: /^stop it with `vfpool net-destroy t1`/ });
  mkdirSync(join(dir, 'etc/networks/p2.xml'));
  t.throws(() => reg.readDefinition('p2'), { exitCode: 2, message: /p2\.xml is a directory/ }, 'a definition that cannot be read is not taken for a missing one');
});

t.test('a running pool is planned from the XML it was started with, and is listed without a file', async (t) => {
  const { store, reg } = registry(t);
  const started = poolXml('eth1', 2, { name: 'p1' });
  await store.update((s) => {
    s.pools.p1 = { xml: started, origin: 'definition', startedAt: new Date().toISOString(), activated: [] } as never;
  });
  t.same(reg.names(), ['p1']);
  t.equal(reg.get('p1').pfs[0]!.numVfs, 2);
  await reg.define(poolXml('eth1', 5, { name: 'p1' }), 'p1.xml');
  t.equal(reg.get('p1').pfs[0]!.numVfs, 2, 'the running definition, not the edited file');
  t.equal(reg.get('p1', { ...store.read(), pools: {} }).pfs[0]!.numVfs, 5, 'the file once it is stopped');
});
