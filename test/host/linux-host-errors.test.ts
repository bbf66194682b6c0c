import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostError } from '../../src/errors.js';
import { LinuxHost } from '../../src/host/linux-host.js';

const host = (sysfsRoot: string) => new LinuxHost({ sysfsRoot, procRoot: '/nonexistent', devRoot: '/nonexistent', ipPath: '/bin/false' });

t.test('listPfs: no class/net is "no PFs"; a broken sysfs root is reported, not shown as none', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vfpool-sysfs-'));
  t.same(await host(root).listPfs(), [], 'no class/net at all');
  mkdirSync(join(root, 'class'));
  writeFileSync(join(root, 'class/net'), '');
  const err = await host(root).listPfs().then(() => null, (e: unknown) => e as HostError);
  t.ok(err instanceof HostError);
  t.equal(err?.code, 'ENOTDIR');
  t.equal(err?.toLine(), `cannot list ${join(root, 'class/net')}: ENOTDIR: check VFPOOL_SYSFS names a sysfs tree`);
});

t.test('bootId: the kernel\'s boot_id under VFPOOL_PROC; null when there is none to read', async (t) => {
  const real = new LinuxHost({ sysfsRoot: '/sys', procRoot: '/proc', devRoot: '/dev', ipPath: '/bin/false' });
  t.match(real.bootId(), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'this machine\'s');
  t.equal(real.bootId(), real.bootId(), 'the same for the whole process');
  t.equal(host('/nonexistent').bootId(), null, 'no boot_id (a fixture /proc): null, every state file is taken as this boot\'s');
});
