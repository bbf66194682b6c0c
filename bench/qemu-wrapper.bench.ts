/**
 * What the QEMU wrapper adds to a QEMU start. libvirt runs the <emulator> for every capability
 * probe and every guest: for one vfpool has nothing to do with, the wrapper must cost about
 * nothing (no Node start: the shim decides), and for a planned guest about one Node start.
 * Every number is a ratio against exec'ing the same QEMU directly (`-version`) in the same run.
 *
 *   npm run bench [-- --runs 40]       (needs QEMU 10: VFPOOL_QEMU or /usr/bin/qemu-system-x86_64)
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDomainPlan } from '../src/state/domain-plan.js';
import { machine, memoryDir } from './bench-host.js';
import type { MacAddress, PciAddress } from '../src/types.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');
const SHIM = join(REPO, 'qemu-args/vfpool-qemu');
const QEMU = process.env.VFPOOL_QEMU ?? '/usr/bin/qemu-system-x86_64';
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 30;

if (!existsSync(QEMU)) {
  console.log(`QEMU wrapper bench: no QEMU at ${QEMU} (install qemu-system-x86 10, or set VFPOOL_QEMU)`);
  process.exit(process.env.CI === 'true' ? 1 : 0);
}

// The state (the per-domain plans the wrapper reads) in memory, as /run/vfpool is (bench-host.ts).
const dir = mkdtempSync(join(memoryDir(), 'vfpool-qbench-'));
const state = join(dir, 'run');
const nodeStarts = join(dir, 'node-starts');
// A Node that counts its starts, then runs the real one: proves the fast path never starts it.
const countingNode = join(dir, 'node');
writeFileSync(countingNode, `#!/bin/sh\necho x >>'${nodeStarts}'\nexec '${process.execPath}' "$@"\n`);
chmodSync(countingNode, 0o755);
mkdirSync(join(dir, 'etc'));
const env = { PATH: '/usr/bin:/bin', LC_ALL: 'C', VFPOOL_STATE_DIR: state, VFPOOL_QEMU: QEMU, VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_NODE: countingNode };
await writeDomainPlan(state, {
  version: 1, domain: 'planned', uuid: null, delivery: 'cmdline', sriovNics: [],
  vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: '52:54:00:11:22:33' as MacAddress, failoverStandbyMac: null, guestAddress: null }],
}, { uid: process.getuid!(), gid: process.getgid!() });

interface Case { name: string; cmd: string[] }
const cases: Case[] = [
  { name: 'baseline: QEMU -version, exec\'d directly', cmd: [QEMU, '-version'] },
  { name: 'baseline: node -e 0', cmd: [process.execPath, '-e', '0'] },
  { name: 'wrapper, no -name (libvirt\'s probes)', cmd: [SHIM, '-version'] },
  { name: 'wrapper, a guest with nothing from vfpool', cmd: [SHIM, '-name', 'guest=plain,debug-threads=on', '-machine', 'q35', '-version'] },
  { name: 'wrapper, a planned guest (Node edits argv)', cmd: [SHIM, '-name', 'guest=planned,debug-threads=on', '-machine', 'q35', '-version'] },
];

function timeOnce(c: Case): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(c.cmd[0]!, c.cmd.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${c.name}: exit ${r.status}: ${r.stderr}`);
  return ms;
}
const starts = () => (existsSync(nodeStarts) ? readFileSync(nodeStarts, 'utf8').split('\n').length - 1 : 0);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const c of cases) timeOnce(c);
const results = cases.map((c) => {
  const before = starts();
  const ms = median(Array.from({ length: RUNS }, () => timeOnce(c)));
  return { name: c.name, ms, nodeStarts: starts() - before };
});
const base = results[0]!.ms;
const node = results[1]!.ms;
console.log(`\nQEMU wrapper cost, median of ${RUNS} runs each (${QEMU}; ${machine()})`);
for (const r of results) {
  const starts = r.name.startsWith('wrapper') ? `  Node started ${r.nodeStarts} of ${RUNS} times` : '';
  const vsNode = r.name.includes('planned') ? `  ${(r.ms / node).toFixed(2)}x node` : '';
  console.log(`${r.name.padEnd(46)} ${r.ms.toFixed(2).padStart(8)} ms  ${(r.ms / base).toFixed(2).padStart(5)}x QEMU${vsNode}${starts}`);
}
rmSync(dir, { recursive: true, force: true });
