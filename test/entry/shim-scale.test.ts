import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { makeSimEnv, SEED_000_POOL } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { spawnEntry } from '../helpers/spawn.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';

// A guest XML of a few thousand lines (a long <description>): the shim reads all of it line by
// line into tiered buffers (32 lines, 1024 lines, then 32768): this many lines move the first
// up 67 times and the second up twice, with lines left in both at the end, as 20 000 lines did,
// at a tenth of the shell's reading (dash reads a byte per system call). Only behaviour is
// asserted here; what a call costs is measured, not tested (README, "Hooks and their cost").
const LINES = 2 * 1024 + 100;
function bigDomain(name: string, vfpool?: string): string {
  const xml = domainXml('prepare', { name, ...(vfpool === undefined ? {} : { vfpool }) });
  const padding = Array.from({ length: LINES }, (_, i) => `line ${i} of a long description &amp; more`).join('\n');
  // After <name>, so anything vfpool looks for comes after the padding.
  return xml.replace('</name>', `</name>\n  <description>${padding}</description>`);
}

t.test(`a ${LINES}-line guest vfpool ignores: exit 0, nothing printed, no state written`, async (t) => {
  const w = makeSimEnv(t);
  w.definePool('sriov-pool', SEED_000_POOL);
  const r = await spawnEntry('hooks/qemu', ['big', 'prepare', 'begin', '-'], { env: w.env, stdin: bigDomain('big') });
  t.same([r.exitCode, r.stdout, r.stderr], [0, '', '']);
  t.notOk(existsSync(w.settings.stateDir), 'Node never ran: no state directory');
});

t.test(`a ${LINES}-line guest whose vfpool metadata comes last gets its VF: Node saw every line`, async (t) => {
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
