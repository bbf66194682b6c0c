import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QEMU_HOOK_OPS } from '../../src/entry/main/qemu-hook.js';
import type { NetdevName } from '../../src/types.js';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { REPO, spawnEntry, vfpoolCli } from '../helpers/spawn.js';

const META = `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>`;

t.test('the shim reads vfpool.conf as vfpool does: blanks around =, quotes, CRLF', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  t.equal((await vfpoolCli(['net-start', 'sriov-pool'], { env: w.env })).exitCode, 0);
  // Prepared by libvirt's hook: its release frees only what the hook prepared.
  t.equal((await spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], { env: { ...w.env, VFPOOL_SIM_VF_DEVICE: 'e1000e' }, stdin: domainXml('prepare', { name: 'vm1', vfpool: META }) })).exitCode, 0);
  const vf0 = () => w.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1').length;
  t.equal(vf0(), 1, 'vm1 holds a VF');

  // libvirt's environment: only the conf file says where the state is, written loosely.
  writeFileSync(join(w.settings.configDir, 'vfpool.conf'), `  # loose\r\nVFPOOL_HOST = ${w.settings.host}\r\n VFPOOL_STATE_DIR = "${w.settings.stateDir}" \r\n`);
  const r = await spawnEntry('hooks/qemu', ['vm1', 'release', 'end', 'destroyed'], {
    env: { VFPOOL_CONFIG_DIR: w.settings.configDir },
    // No vfpool metadata in this input: only the domain's marker, in the state directory the
    // conf file names, can tell the shim that the call is vfpool's.
    stdin: domainXml('release', { name: 'vm1' }),
  });
  t.same([r.exitCode, r.stderr], [0, '']);
  t.equal(vf0(), 0, 'the shim found the domain\'s marker where the conf file put the state, and Node released it');
  t.equal((await w.sim.getVfLinks('eth1' as NetdevName)).get(0)!.mac === '52:54:00:11:22:33', false, 'MAC restored');
});

t.test('a domain name vfpool cannot use is refused when the domain asks for a VF, ignored when it does not', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  mkdirSync(w.settings.stateDir, { recursive: true });
  const asks = await spawnEntry('hooks/qemu', ['web 1', 'prepare', 'begin', '-'], { env: w.env, stdin: domainXml('prepare', { name: 'web 1', vfpool: META }) });
  t.equal(asks.exitCode, 2, 'not silently started without its VF');
  t.equal(asks.stderr, "vfpool: domain name argument 'web 1' is not a name vfpool accepts: use letters, digits and _ . + : - (not starting with a dot or a dash), at most 128 characters\n");
  const plain = await spawnEntry('hooks/qemu', ['web 1', 'prepare', 'begin', '-'], { env: w.env, stdin: domainXml('prepare', { name: 'web 1' }) });
  t.same([plain.exitCode, plain.stdout, plain.stderr], [0, '', ''], 'a guest with nothing from vfpool is none of its business');
});

t.test('vfpool metadata in a mistyped namespace is refused with the fix, not silently a guest without its VF', async (t) => {
  // Reproduced on libvirt 11.3: xmlns:vfpool='http://vfpool.dev/xmlns/1' (http for https) made
  // the shim exit 0 without starting Node, and the guest started with no VF and no word.
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const right = domainXml('prepare', { name: 'vm1', vfpool: META });
  const prepare = async (stdin: string) => {
    const r = await spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], { env: w.env, stdin });
    return [r.exitCode, r.stdout, r.stderr];
  };
  for (const ns of ['http://vfpool.dev/xmlns/1', 'https://vfpool.dev/xmlns/2']) {
    t.same(await prepare(right.replaceAll('https://vfpool.dev/xmlns/1', ns)), [2, '', `vfpool: domain 'vm1': <metadata> holds <vfpool:domain> in namespace '${ns}', not vfpool's https://vfpool.dev/xmlns/1, ` +
      "so vfpool would give the domain nothing it asks for: declare xmlns:vfpool='https://vfpool.dev/xmlns/1'\n"], ns);
  }
  // Matched by URI, not by prefix: vfpool: bound to another project's URI is that project's.
  t.same(await prepare(right.replaceAll('https://vfpool.dev/xmlns/1', 'https://example.com/other')), [0, '', ''], "another project's metadata");
  t.same(w.ctx.store.read().allocations, [], 'nothing allocated');
});

t.test('operations the qemu hook ignores (restore among them) exit 0 in the shim, without starting Node, for a guest of vfpool\'s too', async (t) => {
  const w = makeSimEnv(t);
  // A "node" that records being started: the shim runs VFPOOL_NODE when it hands a call to Node.
  const started = join(w.dir, 'node-started');
  const node = join(w.dir, 'node');
  writeFileSync(node, `#!/bin/sh\necho "$*" >>${JSON.stringify(started)}\nexit 1\n`);
  chmodSync(node, 0o755);
  const env = { ...w.env, VFPOOL_NODE: node };
  const xml = domainXml('prepare', { name: 'vm1', vfpool: META });
  for (const [op, sub] of [['restore', 'begin'], ['stopped', 'end']]) {
    const r = await spawnEntry('hooks/qemu', ['vm1', op!, sub!, '-'], { env, stdin: xml });
    t.same([r.exitCode, r.stdout, r.stderr], [0, '', ''], `${op} ${sub}: exit 0, nothing printed`);
  }
  t.notOk(existsSync(started), 'Node never started');
  const prep = await spawnEntry('hooks/qemu', ['vm1', 'prepare', 'begin', '-'], { env, stdin: xml });
  t.equal(prep.exitCode, 1, 'prepare is handed to Node (here the recording stand-in)');
  t.match(readFileSync(started, 'utf8'), /qemu-hook\.cjs vm1 prepare begin -/);

  // The shim's list is the Node half's: an operation only one of them knows is a Node start
  // for nothing, or a call Node would act on that never reaches it.
  const shim = readFileSync(join(REPO, 'hooks/vfpool-hook'), 'utf8');
  const listed = /vfpool_kind=qemu\n(?:\s*#.*\n)*\s*case \$2 in ([^)]*)\)/.exec(shim)?.[1]?.split('|').map((o) => o.trim());
  t.same(listed?.sort(), Object.keys(QEMU_HOOK_OPS).sort(), 'hooks/vfpool-hook lets through exactly the operations qemu-hook.ts acts on');
});
