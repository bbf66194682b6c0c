import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { REPO, spawnEntry } from '../helpers/spawn.js';

// The shim must find vfpool's dist/bin without forking readlink on every hook call (libvirt
// waits for each): install.sh writes the install path into it, a checkout's hooks sit beside
// vfpool-hook (the installed line: test/install.test.ts). A `readlink` first in PATH records
// every call, so a fork shows.
const POOL = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf></forward></network>`;

async function startThrough(hook: string, env: Record<string, string>): Promise<{ exitCode: number; stderr: string }> {
  const r = await spawnEntry(hook, ['p', 'start', 'begin', '-'], { env, stdin: "<hookData><network><name>p</name><forward mode='hostdev'/></network></hookData>" });
  return { exitCode: r.exitCode, stderr: r.stderr };
}

t.test('the checkout\'s hook starts Node without forking readlink; a copy elsewhere resolves its link', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  const bin = join(w.dir, 'bin');
  mkdirSync(bin);
  const calls = join(w.dir, 'readlink-calls');
  writeFileSync(join(bin, 'readlink'), `#!/bin/sh\necho "$*" >>${JSON.stringify(calls)}\nexec /usr/bin/readlink "$@"\n`);
  chmodSync(join(bin, 'readlink'), 0o755);
  const env = { ...w.env, PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin` };

  const direct = await startThrough('hooks/network', env);
  t.same(direct, { exitCode: 0, stderr: '' }, 'the pool started');
  t.notOk(existsSync(calls), 'no readlink');
  t.equal(w.ctx.store.read().pools.p?.activated[0]?.numVfs, 2);

  // As libvirt finds it: a link in another directory (network.d/vfpool) to the checkout's hook.
  mkdirSync(join(w.dir, 'network.d'));
  symlinkSync(join(REPO, 'hooks/network'), join(w.dir, 'network.d/vfpool'));
  const linked = await startThrough(join(w.dir, 'network.d/vfpool'), env);
  t.same(linked, { exitCode: 0, stderr: '' }, 'started again (already active: allowed for libvirt)');
  t.match(readFileSync(calls, 'utf8'), /network\.d\/vfpool/, 'the link was resolved');
});

t.test('an installed hook starts the Node install.sh recorded, which libvirt\'s environment could not name', async (t) => {
  // As install.sh leaves the shim (test/install.test.ts): vfpool_home and vfpool_node written
  // in. libvirt passes no VFPOOL_NODE and its own PATH; /usr/bin/node may be another Node.
  const w = makeSimEnv(t);
  w.definePool('p', POOL);
  const hooks = join(w.dir, 'inst/hooks');
  mkdirSync(hooks, { recursive: true });
  const starts = join(w.dir, 'node-starts');
  writeFileSync(join(w.dir, 'recorded-node'), `#!/bin/sh\necho start >>${JSON.stringify(starts)}\nexec ${JSON.stringify(process.execPath)} "$@"\n`);
  chmodSync(join(w.dir, 'recorded-node'), 0o755);
  const shim = readFileSync(join(REPO, 'hooks/vfpool-hook'), 'utf8').replace(/^vfpool_home=$/m, `vfpool_home=${REPO}`).replace(/^vfpool_node=$/m, `vfpool_node=${join(w.dir, 'recorded-node')}`);
  writeFileSync(join(hooks, 'vfpool-hook'), shim);
  chmodSync(join(hooks, 'vfpool-hook'), 0o755);
  symlinkSync('vfpool-hook', join(hooks, 'network'));
  const { VFPOOL_NODE: _unset, ...env } = { ...w.env, VFPOOL_NODE: undefined, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  t.same(await startThrough(join(hooks, 'network'), env as Record<string, string>), { exitCode: 0, stderr: '' }, 'the pool started');
  t.equal(readFileSync(starts, 'utf8'), 'start\n', 'through the recorded Node');
  t.equal(w.ctx.store.read().pools.p?.activated[0]?.numVfs, 2);
});
