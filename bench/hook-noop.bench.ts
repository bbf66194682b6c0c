/**
 * What libvirt pays for vfpool's hooks. libvirt runs the qemu hook five times per guest
 * lifecycle for every guest on the host, and waits for each (DESIGN.md, speed budget): a call
 * vfpool has nothing to do with must cost about what a shell script costs, and real work not
 * much more than starting Node once. Every number is a ratio against baselines measured in the
 * same run on the same machine: a trivial hook-shaped shell script, and `node -e 0`.
 *
 *   npm run bench [-- --runs 40]
 */
import { spawnSync } from 'node:child_process';
import { benchHost, machine } from './bench-host.js';
import { chmodSync, cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');
// libvirt 11.3's own hook input, captured (see test/libvirt/README.md).
const SAMPLES = join(REPO, 'test/libvirt/samples');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 30;

function sample(name: string): string {
  return readFileSync(join(SAMPLES, name), 'utf8');
}

const { dir, env } = benchHost('vfpool-bench-', { pfs: [{ name: 'eth1', totalVfs: 8 }] });
writeFileSync(join(dir, 'etc/networks/bench-pool.xml'), "<network><name>bench-pool</name><forward mode='hostdev'><pf dev='eth1'><vf num='4'/></pf></forward></network>\n");
const baselineScript = join(dir, 'baseline-hook');
// What an administrator's own hook that ignores the call looks like: read stdin, exit 0.
writeFileSync(baselineScript, '#!/bin/sh\ncase $2 in prepare|release) ;; *) exit 0 ;; esac\ninput=$(cat)\nexit 0\n');
chmodSync(baselineScript, 0o755);

const domainXml = sample('stdin-qemu-seqtest-prepare-begin.xml');
const netXml = sample('stdin-network-seqnet-start-begin.xml');
const poolNetXml = "<hookData><network><name>bench-pool</name><forward mode='hostdev'/></network></hookData>";

interface Case {
  name: string;
  cmd: string[];
  stdin: string;
  before?: () => void;
}

/**
 * CPU time (user + system, ms) of this process's waited-for children so far: what a run cost
 * in CPU is the difference across its spawnSync. In clock ticks (10 ms), so it is summed over
 * the runs of a row, never read from one. Unlike the wall time, it barely moves with the
 * machine's load (a busy host makes every run wait for a core, not work more).
 */
function childrenCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
}

function timeOnce(c: Case): { ms: number; cpuMs: number } {
  c.before?.();
  const cpu0 = childrenCpuMs();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(c.cmd[0]!, c.cmd.slice(1), { input: c.stdin, env, stdio: ['pipe', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${c.name}: exit ${r.status}: ${r.stderr}`);
  return { ms, cpuMs: childrenCpuMs() - cpu0 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const hook = (h: string) => join(REPO, 'hooks', h);
const cases: Case[] = [
  { name: 'baseline: shell hook that ignores the call', cmd: [baselineScript, 'seqtest', 'prepare', 'begin', '-'], stdin: domainXml },
  { name: 'baseline: node -e 0', cmd: [process.execPath, '-e', '0'], stdin: '' },
  { name: 'qemu hook, operation vfpool ignores (stopped end)', cmd: [hook('qemu'), 'seqtest', 'stopped', 'end', '-'], stdin: domainXml },
  { name: 'qemu hook, prepare of a guest with no VF', cmd: [hook('qemu'), 'seqtest', 'prepare', 'begin', '-'], stdin: domainXml },
  { name: 'network hook, a network that is not a pool', cmd: [hook('network'), 'seqnet', 'start', 'begin', '-'], stdin: netXml },
];
// A host whose PF has no VFs yet, as the kernel keeps it: the simulated host fills in its
// seed file (addresses, MACs) on first use, which a real host never pays; `vfpool status`
// does that once here, and every round starts from a copy of the filled-in file.
const seededHost = join(dir, 'host.seeded.json');
{
  const r = spawnSync(process.execPath, [join(REPO, 'dist/bin/cli.cjs'), 'status'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`filling in the simulated host: vfpool status: exit ${r.status}: ${r.stderr}`);
  cpSync(join(dir, 'host.json'), seededHost);
}
const freshHost = () => {
  rmSync(join(dir, 'run'), { recursive: true, force: true });
  cpSync(seededHost, join(dir, 'host.json'));
};
// The hook bundles run with the V8 code cache the build wrote (scripts/hook-loader.cjs); a
// copy without it shows what the cache is worth.
const noCache = join(dir, 'bin-no-code-cache');
cpSync(join(REPO, 'dist/bin'), noCache, { recursive: true });
rmSync(join(noCache, 'network-hook.bundle.cjs.v8cache'));
cases.push(
  { name: 'network hook, real work: start a 4-VF pool', cmd: [hook('network'), 'bench-pool', 'start', 'begin', '-'], stdin: poolNetXml, before: freshHost },
  { name: '  same, node on the bundle (no shim)', cmd: [process.execPath, join(REPO, 'dist/bin/network-hook.cjs'), 'bench-pool', 'start', 'begin', '-'], stdin: poolNetXml, before: freshHost },
  { name: '  same, no shim, without the V8 code cache', cmd: [process.execPath, join(noCache, 'network-hook.cjs'), 'bench-pool', 'start', 'begin', '-'], stdin: poolNetXml, before: freshHost },
  // The same start by a person or a script: the CLI, as install.sh links it (`vfpool`).
  { name: 'CLI: vfpool net-start of the same pool', cmd: [process.execPath, join(REPO, 'dist/bin/cli.cjs'), 'net-start', 'bench-pool'], stdin: '', before: freshHost },
);

// Warm the page cache before measuring anything; then interleave the cases round by round,
// so a busy moment of the (shared) machine hits every row alike.
for (const c of cases) timeOnce(c);
const samples = cases.map(() => [] as number[]);
const cpu = cases.map(() => 0);
for (let r = 0; r < RUNS; r++) {
  cases.forEach((c, i) => {
    const { ms, cpuMs } = timeOnce(c);
    samples[i]!.push(ms);
    cpu[i]! += cpuMs;
  });
}
const results = cases.map((c, i) => ({ name: c.name, ms: median(samples[i]!), cpuMs: cpu[i]! / RUNS }));
const shell = results[0]!.ms;
const node = results[1]!;
console.log(`vfpool hook cost, median of ${RUNS} runs each; CPU: mean user+system time (${machine()})`);
for (const r of results) {
  const cpuColumns = r.name.startsWith('baseline: shell') ? '' : `   CPU ${r.cpuMs.toFixed(1).padStart(6)} ms ${(r.cpuMs / node.cpuMs).toFixed(2).padStart(5)}x node`;
  console.log(`${r.name.padEnd(52)} ${r.ms.toFixed(2).padStart(8)} ms  ${(r.ms / shell).toFixed(2).padStart(6)}x shell  ${(r.ms / node.ms).toFixed(2).padStart(5)}x node${cpuColumns}`);
}
rmSync(dir, { recursive: true, force: true });
