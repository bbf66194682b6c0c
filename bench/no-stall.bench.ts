/**
 * Guests never stall behind a pool (issue 10): a guest start (the qemu hook's `prepare begin`)
 * on one PF while a 64-VF pool starts on another PF, against the same guest start alone, in the
 * same run. The simulated host's settle knob makes eth1's VF creation take SETTLE ms (a real
 * igb/ixgbe PF probes 64 VFs for seconds); a start that held the state lock meanwhile would make
 * the guest wait that long, so the ratio would be ~SETTLE / (one guest start).
 *
 *   npm run bench                       (this file runs after hook-noop.bench)
 *   node dist/bench/no-stall.bench.js [--runs 10] [--settle 2000]
 */
import { spawn, spawnSync } from 'node:child_process';
import { benchHost, machine } from './bench-host.js';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const RUNS = arg('--runs', 10);
const SETTLE = arg('--settle', 2000);

const { dir, env } = benchHost('vfpool-bench-nostall-', { pfs: [{ name: 'eth1', totalVfs: 64, settleMs: SETTLE }, { name: 'eth2', totalVfs: 8 }] });
writeFileSync(join(dir, 'etc/networks/big.xml'), "<network><name>big</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='64'/></pf></forward></network>\n");
writeFileSync(join(dir, 'etc/networks/g.xml'), "<network><name>g</name><forward mode='hostdev' managed='yes'><pf dev='eth2'><vf num='4'/></pf></forward></network>\n");

const cli = join(REPO, 'dist/bin/cli.mjs');
const qemuHook = join(REPO, 'hooks/qemu');
const guestXml = `<domain type='kvm'><name>vm1</name><uuid>614dee8d-7799-4751-9066-5ae47f427da5</uuid>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='g' mac='52:54:00:00:00:01'/></vfpool:domain></metadata>
  <devices/></domain>`;

function run(cmd: string[], stdin = ''): void {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { input: stdin, env, stdio: ['pipe', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: exit ${r.status}: ${r.stderr}`);
}

/** One guest start, timed; its release afterwards, not timed. */
function guestStart(): number {
  const t0 = process.hrtime.bigint();
  run([qemuHook, 'vm1', 'prepare', 'begin', '-'], guestXml);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  run([qemuHook, 'vm1', 'release', 'end', '-'], guestXml);
  return ms;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function bigIsChanging(): boolean {
  try {
    return Boolean((JSON.parse(readFileSync(join(dir, 'run/state.json'), 'utf8')) as { pools: Record<string, { change?: unknown }> }).pools.big?.change);
  } catch {
    return false;
  }
}

async function guestStartDuringPoolStart(): Promise<number> {
  const start = spawn(process.execPath, [cli, 'net-start', 'big'], { env, stdio: 'ignore' });
  const done = new Promise<number | null>((r) => start.once('exit', (code) => r(code)));
  let exited = false;
  void done.then(() => (exited = true));
  while (!bigIsChanging() && !exited) await sleep(5);
  if (exited) throw new Error('net-start big ended before the guest start could overlap it: raise --settle');
  const ms = guestStart();
  const stillRunning = !exited;
  if ((await done) !== 0) throw new Error('net-start big failed');
  if (!stillRunning) console.warn('warning: the guest start outlasted the pool start; raise --settle for a meaningful ratio');
  run([process.execPath, cli, 'net-destroy', 'big']);
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

run([process.execPath, cli, 'net-start', 'g']);
guestStart(); // warm the page cache
const alone = median(Array.from({ length: RUNS }, guestStart));
const during: number[] = [];
for (let i = 0; i < RUNS; i++) during.push(await guestStartDuringPoolStart());
const busy = median(during);
console.log(`guest start on eth2 while a 64-VF pool starts on eth1 (VF creation ${SETTLE} ms), median of ${RUNS} runs each (${machine()})`);
console.log(`${'guest start alone'.padEnd(52)} ${alone.toFixed(2).padStart(8)} ms`);
console.log(`${'guest start while the 64-VF pool starts'.padEnd(52)} ${busy.toFixed(2).padStart(8)} ms  ${(busy / alone).toFixed(2).padStart(5)}x alone`);
rmSync(dir, { recursive: true, force: true });
