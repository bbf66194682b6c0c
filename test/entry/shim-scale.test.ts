import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnEntry } from '../helpers/spawn.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

// A guest XML of 20 000 lines (a long <description>): the shim reads all of it line by line.
// Only behaviour is asserted here; `npm run bench` shows what such a call costs.
const LINES = 20_000;
function bigDomain(name: string, vfpool?: string): string {
  const xml = domainXml('prepare', { name, ...(vfpool === undefined ? {} : { vfpool }) });
  const padding = Array.from({ length: LINES }, (_, i) => `line ${i} of a long description &amp; more`).join('\n');
  // After <name>, so anything vfpool looks for comes after the 20 000 lines.
  return xml.replace('</name>', `</name>\n  <description>${padding}</description>`);
}

t.test('a 20 000-line guest vfpool ignores: exit 0, nothing printed, no state written', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const r = await spawnEntry('hooks/qemu', ['big', 'prepare', 'begin', '-'], { env: w.env, stdin: bigDomain('big') });
  t.same([r.exitCode, r.stdout, r.stderr], [0, '', '']);
  t.notOk(existsSync(w.settings.stateDir), 'Node never ran: no state directory');
});

t.test('a 20 000-line guest whose vfpool metadata comes last gets its VF: Node saw every line', async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  // The pool's start is not what is tested (in-process); the hook calls are the shim's, spawned.
  t.equal((await runCliInProcess(['net-start', 'sriov-pool'], w.env)).exitCode, 0);
  const xml = bigDomain('big', `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>`);
  t.ok(xml.split('\n').length > LINES);
  const r = await spawnEntry('hooks/qemu', ['big', 'prepare', 'begin', '-'], { env: w.env, stdin: xml });
  t.same([r.exitCode, r.stderr], [0, '']);
  t.same(w.ctx.store.read().allocations.map((a) => [a.owner.domain, a.mac]), [['big', '52:54:00:11:22:33']]);
  // Now the domain has a marker: the shim hands stdin to Node unread, and release still works.
  t.ok(readdirSync(`${w.settings.stateDir}/index`).includes('domain.big'));
  const rel = await spawnEntry('hooks/qemu', ['big', 'release', 'end', '-'], { env: w.env, stdin: bigDomain('big') });
  t.same([rel.exitCode, rel.stderr], [0, '']);
  t.same(w.ctx.store.read().allocations, []);
});
