/**
 * What vfpool costs at scale, on the simulated host, through the qemu hook as libvirt runs it
 * (a process per call). Ratios against baselines measured in the same run:
 * - prepare + release of one VF, against `node -e 0`;
 * - one prepare on a pool of 512 VFs (4 PFs x 128) against the same on a pool of 8
 *   (DESIGN.md: at most 1.2x);
 * - 64 guests prepared at once on a 64-VF pool against the same 64 one after another (every
 *   guest gets a distinct VF; both counted from the first start to the last exit).
 *
 *   npm run bench [-- --runs 10]
 */
import { spawn, spawnSync } from 'node:child_process';
import { benchHost, machine } from './bench-host.js';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');
const HOOK = join(REPO, 'hooks/qemu');
const NS = 'https://vfpool.dev/xmlns/1';
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 10;

interface World {
  dir: string;
  env: Record<string, string>;
}

/** A simulated host with `pfs` PFs of `vfsPerPf` VFs each, all in one started pool 'p'. */
function makeWorld(pfs: number, vfsPerPf: number): World {
  const names = Array.from({ length: pfs }, (_, i) => `eth${i + 1}`);
  const { dir, env } = benchHost('vfpool-scale-', { pfs: names.map((name) => ({ name, totalVfs: vfsPerPf })) });
  const members = names.map((n) => `<pf dev='${n}'><vf num='${vfsPerPf}'/></pf>`).join('');
  writeFileSync(join(dir, 'etc/networks/p.xml'), `<network><name>p</name><forward mode='hostdev'>${members}</forward></network>\n`);
  const r = spawnSync(process.execPath, [join(REPO, 'dist/bin/cli.mjs'), 'net-start', 'p'], { env });
  if (r.status !== 0) throw new Error(`net-start: ${r.stderr}`);
  return { dir, env };
}

function guestXml(i: number): string {
  const mac = `52:54:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
  return `<domain type='kvm'><name>vm${i}</name><metadata><vfpool:domain xmlns:vfpool='${NS}'><vfpool:hostdev pool='p' mac='${mac}'/></vfpool:domain></metadata><devices/></domain>\n`;
}

function hookSync(w: World, args: string[], stdin: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(HOOK, args, { input: stdin, env: w.env, stdio: ['pipe', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`qemu hook ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return ms;
}

function hookAsync(w: World, args: string[], stdin: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(HOOK, args, { env: w.env, stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d) => (err += d));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`qemu hook ${args.join(' ')}: exit ${code}: ${err}`))));
    c.stdin.end(stdin);
  });
}

const prepare = (w: World, i: number) => hookSync(w, [`vm${i}`, 'prepare', 'begin', '-'], guestXml(i));
const release = (w: World, i: number) => hookSync(w, [`vm${i}`, 'release', 'end', '-'], guestXml(i));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function allocations(w: World): number {
  return (JSON.parse(readFileSync(join(w.dir, 'run/state.json'), 'utf8')) as { allocations: unknown[] }).allocations.length;
}

const rows: Array<{ name: string; ms: number; against?: string }> = [];
// In the environment the hooks get: Node's own start-up reads some of it (NODE_OPTIONS,
// NODE_EXTRA_CA_CERTS: a CA bundle loaded at every start), and a baseline started in the
// shell's environment would not be the same start as the hooks'.
const nodeStart = (env: Record<string, string>) => {
  const t0 = process.hrtime.bigint();
  spawnSync(process.execPath, ['-e', '0'], { env });
  return Number(process.hrtime.bigint() - t0) / 1e6;
};

// Interleaved, so a busy moment of the machine hits every row alike.
const small = makeWorld(1, 8);
const large = makeWorld(4, 128);
const node: number[] = [];
const cycle: number[] = [];
const on8: number[] = [];
const on512: number[] = [];
for (let r = 0; r < RUNS + 1; r++) {
  node.push(nodeStart(small.env));
  const t0 = process.hrtime.bigint();
  prepare(small, 1);
  release(small, 1);
  cycle.push(Number(process.hrtime.bigint() - t0) / 1e6);
  on8.push(prepare(small, 2));
  release(small, 2);
  on512.push(prepare(large, 2));
  release(large, 2);
}
// The first round warmed the page cache; it is not counted.
for (const xs of [node, cycle, on8, on512]) xs.shift();
rows.push({ name: 'baseline: node -e 0', ms: median(node) });
rows.push({ name: 'prepare + release of one VF (two hook calls)', ms: median(cycle), against: 'baseline: node -e 0' });
rows.push({ name: 'prepare of one VF, pool of 8 VFs (1 PF)', ms: median(on8), against: 'baseline: node -e 0' });
rows.push({ name: 'prepare of one VF, pool of 512 VFs (4 PFs x 128)', ms: median(on512), against: 'prepare of one VF, pool of 8 VFs (1 PF)' });

const many = makeWorld(1, 64);
const GUESTS = Array.from({ length: 64 }, (_, i) => i + 1);
let t0 = process.hrtime.bigint();
for (const i of GUESTS) prepare(many, i);
const serial = Number(process.hrtime.bigint() - t0) / 1e6;
if (allocations(many) !== 64) throw new Error(`serial: ${allocations(many)} allocations, expected 64`);
for (const i of GUESTS) release(many, i);
t0 = process.hrtime.bigint();
await Promise.all(GUESTS.map((i) => hookAsync(many, [`vm${i}`, 'prepare', 'begin', '-'], guestXml(i))));
const parallel = Number(process.hrtime.bigint() - t0) / 1e6;
const state = JSON.parse(readFileSync(join(many.dir, 'run/state.json'), 'utf8')) as { allocations: Array<{ vfAddr?: string; pf?: string; vfIndex?: number }> };
const distinct = new Set(state.allocations.map((a) => a.vfAddr ?? `${a.pf}/${a.vfIndex}`)).size;
if (state.allocations.length !== 64 || distinct !== 64) throw new Error(`at once: ${state.allocations.length} allocations on ${distinct} VFs, expected 64 on 64`);
rows.push({ name: '64 prepares one after another, 64-VF pool', ms: serial });
rows.push({ name: '64 prepares at once, 64-VF pool (64 distinct VFs)', ms: parallel, against: '64 prepares one after another, 64-VF pool' });

console.log(`vfpool at scale, simulated host, qemu hook as a process; median of ${RUNS} runs (64-guest rows: one run each) (${machine()})`);
for (const r of rows) {
  const base = r.against ? rows.find((x) => x.name === r.against)!.ms : undefined;
  const ratio = base ? `${(r.ms / base).toFixed(2)}x ${r.against}` : '';
  console.log(`${r.name.padEnd(52)} ${r.ms.toFixed(1).padStart(9)} ms  ${ratio}`);
}
for (const w of [small, large, many]) rmSync(w.dir, { recursive: true, force: true });
