/**
 * Hostile input, fuzzed, through the entry points as libvirt and a person run them: the qemu
 * and network hooks, and the CLI. Each hostile call must exit 2 with exactly one line on
 * stderr, no stack trace, and change nothing: the whole test directory (config, state,
 * simulated host) is compared before and after.
 *
 * Every property runs its RUNS inputs through the entry's main in this process (runInProcess:
 * the same main, env, stdin and exit-code boundary as the bundle, at no Node start each), and
 * the first SPAWNED of the same inputs (same seed) through the real process: the hook shims
 * (hooks/qemu, hooks/network) and the CLI bundle, where a stack trace printed by Node itself, an
 * exit code lost on the way out or the shim's own reading of stdin would show.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { SEED_000_POOL, type SimEnv } from '../helpers/env.js';
import { seededWorlds } from '../helpers/file-tree.js';
import { checkProperty, invalidName } from '../helpers/fuzz.js';
import { domainXml, NS } from '../helpers/libvirt-domains.js';
import { networkHookInProcess, qemuHookInProcess } from '../helpers/hook-world.js';
import { runCliInProcess } from '../helpers/cli-in-process.js';
import { spawnEntry, vfpoolCli, type Spawned } from '../helpers/spawn.js';

const RUNS = 8;
/** Of each property's inputs, how many also run as a real process (a Node start each). */
const SPAWNED = 2;

/** How an entry point is run: a real process, or its main in this process (one at a time: process.env is global). */
interface Entries {
  how: 'process' | 'in-process';
  qemuHook(env: Record<string, string>, args: string[], stdin: string): Promise<Spawned>;
  networkHook(env: Record<string, string>, args: string[], stdin: string): Promise<Spawned>;
  cli(env: Record<string, string>, args: string[]): Promise<Spawned>;
}
const PROCESS: Entries = {
  how: 'process',
  qemuHook: (env, args, stdin) => spawnEntry('hooks/qemu', args, { env, stdin }),
  networkHook: (env, args, stdin) => spawnEntry('hooks/network', args, { env, stdin }),
  cli: (env, args) => vfpoolCli(args, { env }),
};
const IN_PROCESS: Entries = {
  how: 'in-process',
  qemuHook: qemuHookInProcess,
  networkHook: networkHookInProcess,
  cli: (env, args) => runCliInProcess(args, env),
};
/** Every input in-process, the first SPAWNED of them (same seed: the same values) as processes too. */
const BOTH: Array<[Entries, number]> = [[IN_PROCESS, RUNS], [PROCESS, SPAWNED]];

/** Every file under `dir` with its content and mode; the log is not state (it may grow). */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (/^vfpool\.log(\.\d+)?$/.test(e.name)) continue;
      const mode = (statSync(p).mode & 0o7777).toString(8);
      if (e.isDirectory()) {
        out.set(`${relative(dir, p)}/`, mode);
        walk(p);
      } else out.set(relative(dir, p), `${mode} ${readFileSync(p, 'base64')}`);
    }
  };
  walk(dir);
  return out;
}

function assertRefused(r: Spawned, before: Map<string, string>, w: SimEnv, what: string): void {
  const problems: string[] = [];
  if (r.exitCode !== 2) problems.push(`exit ${r.exitCode}, expected 2`);
  if (!/^vfpool: [^\n]+\n$/.test(r.stderr)) problems.push(`stderr is not one 'vfpool: …' line: ${JSON.stringify(r.stderr.slice(0, 400))}`);
  if (/\n\s+at /.test(r.stderr) || /this is a vfpool bug/.test(r.stderr)) problems.push(`a bug report: ${JSON.stringify(r.stderr.slice(0, 400))}`);
  const after = snapshot(w.dir);
  for (const k of new Set([...before.keys(), ...after.keys()])) {
    if (before.get(k) !== after.get(k)) problems.push(`${k} changed`);
  }
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
}

/**
 * A world with an active pool and a guest holding one of its VFs: there is state to damage.
 * Set up in-process once, by the first test, and laid out again for each test (seededWorlds):
 * the setup is not what these tests are about (cli.test.ts runs it spawned).
 */
const seeded = seededWorlds(async (s) => {
  s.definePool('sriov-pool', SEED_000_POOL);
  const started = await runCliInProcess(['net-start', 'sriov-pool'], s.env);
  if (started.exitCode !== 0) throw new Error(`net-start: ${started.stderr}`);
  const xml = join(s.dir, 'vm1.xml');
  writeFileSync(xml, domainXml('prepare', { name: 'vm1', vfpool: "<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33'/>" }));
  const prepared = await runCliInProcess(['prepare', '--xml', xml], s.env);
  if (prepared.exitCode !== 0) throw new Error(`prepare: ${prepared.stderr}`);
  return {};
});
async function world(t: Test): Promise<SimEnv> {
  const w = await seeded(t);
  t.same(w.ctx.store.read().allocations.map((a) => [a.owner.domain, a.mac]), [['vm1', '52:54:00:11:22:33']], 'vm1 holds a VF of the active pool');
  return w;
}

// Never a kernel interface name vfpool accepts: a separator, a blank, too long, '.' or '..'.
const badNetdev = fc.oneof(
  fc.constantFrom('.', '..', '../eth1', 'eth1/x', 'a'.repeat(16), 'eth 1', 'eth1:0', '$(id)', 'a\nb', ''),
  fc.string({ minLength: 16, maxLength: 40 }),
);
const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;').replace(/\0/g, '');
// One attribute of <vfpool:hostdev> made invalid; the rest is a request that would succeed.
const badHostdev = fc.oneof(
  invalidName.map((v) => ({ attr: 'pool', v })),
  fc.constantFrom('52:54:00:11:22', 'zz:54:00:11:22:33', '01:00:5e:00:00:01', '00:00:00:00:00:00', '52:54:00:11:22:33:44', "$(reboot)").map((v) => ({ attr: 'mac', v })),
  fc.oneof(fc.integer({ min: 4096, max: 1e9 }), fc.integer({ min: -1e6, max: -1 })).map((n) => ({ attr: 'vlan', v: String(n) })),
  fc.integer({ min: 1_000_001, max: 2e9 }).map((n) => ({ attr: 'max-tx-rate', v: String(n) })),
  fc.constantFrom('0000:00:00.8', '0000:100:00.0', '../../../../etc', '0000:06:02.0/../../x', '10000:06:02.0', '0000:06:20.0').map((v) => ({ attr: 'address', v })),
  badNetdev.filter((v) => !v.includes('\0')).map((v) => ({ attr: 'netdev', v })),
);

t.test('qemu hook: hostile domain XML is refused in one line, changing nothing', async (t) => {
  const w = await world(t);
  const before = snapshot(w.dir);
  for (const [entry, runs] of BOTH) {
    await checkProperty(t, `qemu hook prepare with one bad attribute (${entry.how})`, fc.asyncProperty(badHostdev, async ({ attr, v }) => {
      const base = attr === 'pool' ? '' : " pool='sriov-pool'";
      const extra = attr === 'mac' ? '' : " mac='52:54:00:aa:bb:cc'";
      const xml = domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:hostdev${base}${extra} ${attr}='${xmlEscape(v)}'/>` });
      assertRefused(await entry.qemuHook(w.env, ['vm2', 'prepare', 'begin', '-'], xml), before, w, `${attr}=${JSON.stringify(v)}`);
      return true;
    }), runs);
    await checkProperty(t, `qemu hook prepare with a hostile domain name (${entry.how})`, fc.asyncProperty(invalidName.filter((n) => !n.includes('\0')), async (name) => {
      const xml = domainXml('prepare', { name: xmlEscape(name), vfpool: "<vfpool:hostdev pool='sriov-pool' mac='52:54:00:aa:bb:cc'/>" });
      assertRefused(await entry.qemuHook(w.env, [name, 'prepare', 'begin', '-'], xml), before, w, JSON.stringify(name));
      return true;
    }), runs);
  }
  const entity = `<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/shadow">]><domain xmlns:vfpool='${NS}'><name>vm2</name>&x;</domain>`;
  const deep = `<domain><name>vm2</name><metadata><vfpool:domain xmlns:vfpool='${NS}'>${'<a>'.repeat(150)}`;
  const huge = `<domain><name>vm2</name><metadata><vfpool:domain xmlns:vfpool='${NS}'>${'<d>x</d>'.repeat(600_000)}</vfpool:domain></metadata></domain>`;
  for (const xml of [entity, deep, huge]) {
    assertRefused(await qemuHookInProcess(w.env, ['vm2', 'prepare', 'begin', '-'], xml), before, w, xml.slice(0, 80));
  }
  t.pass('malformed, entity-laden, too deep and 10 MB documents refused (in-process)');
  // As processes: the entity-laden document through the shim, as libvirt runs the hook. The
  // 10 MB one straight into the hook's Node entry point, the bundle the shim execs
  // (dist/bin/qemu-hook.cjs; the unbundled dist/src one took three times its CPU to load): it
  // is one line of 4.8 MB, which the shim's `read` takes a byte at a time (~3.5 s of CPU, most
  // of this file's); what is tested here is Node's refusal at the process boundary (a 4.6 MiB
  // stdin pipe, one line, exit 2).
  assertRefused(await spawnEntry('hooks/qemu', ['vm2', 'prepare', 'begin', '-'], { env: w.env, stdin: entity }), before, w, 'entity, through the shim');
  assertRefused(await spawnEntry('dist/bin/qemu-hook.cjs', ['vm2', 'prepare', 'begin', '-'], { env: w.env, stdin: huge }), before, w, '10 MB, into the Node entry point');
  t.pass('the entity-laden document (through the shim) and the 10 MB one (the Node entry point) refused by a process');
  // A NUL cannot come from libvirt (it hands hooks a C string), and the shim's `read` drops
  // it; through the CLI it reaches the parser, which must refuse it.
  const nul = join(w.dir, 'nul.xml');
  writeFileSync(nul, `<domain><name>vm2</name><metadata><vfpool:domain xmlns:vfpool='${NS}'><vfpool:hostdev pool='sriov-pool' mac='52:54:00:aa:bb:cc'/>\0</vfpool:domain></metadata></domain>`);
  const withNul = snapshot(w.dir);
  assertRefused(await vfpoolCli(['prepare', '--xml', nul], { env: w.env }), withNul, w, 'XML with a NUL');
});

t.test('network hook: a hostile pool in a libvirt network is refused in one line, changing nothing', async (t) => {
  const w = await world(t);
  const before = snapshot(w.dir);
  const member = fc.oneof(
    badNetdev.map((v) => `<v:pf dev='${xmlEscape(v)}'/>`),
    fc.integer({ min: 4097, max: 1e9 }).map((n) => `<v:pf dev='eth1'><v:vf num='${n}'/></v:pf>`),
    fc.constantFrom('0x100', '0x20', '0x10000', '-1', '../x').map((b) => `<v:address type='pci' domain='0x0000' bus='${b}' slot='0x1f' function='0x0'/>`),
    fc.constantFrom('0x0', '0x8', 'x').map((f) => `<v:address type='pci' domain='0x0000' bus='0x06' slot='0x02' function='${f}'/>`),
  );
  for (const [entry, runs] of BOTH) {
    await checkProperty(t, `network hook start with a bad member (${entry.how})`, fc.asyncProperty(member, async (m) => {
      const xml = `<hookData><network><name>meta-pool</name><forward mode='hostdev'/><metadata><v:pool xmlns:v='${NS}'>${m}</v:pool></metadata></network></hookData>`;
      assertRefused(await entry.networkHook(w.env, ['meta-pool', 'start', 'begin', '-'], xml), before, w, m);
      return true;
    }), runs);
  }
});

t.test('CLI: hostile names and pool files are refused in one line, changing nothing', async (t) => {
  const w = await world(t);
  const before = snapshot(w.dir);
  const argvName = invalidName.filter((n) => !n.includes('\0'));
  const file = join(w.dir, 'hostile.xml');
  for (const [entry, runs] of BOTH) {
    await checkProperty(t, `CLI commands naming a hostile pool or domain (${entry.how})`, fc.asyncProperty(fc.constantFrom('net-start', 'net-destroy', 'net-undefine', 'net-dumpxml', 'release'), argvName, async (cmd, name) => {
      // `--` so a name starting with '-' reaches vfpool as a name, as a careful script would pass it.
      assertRefused(await entry.cli(w.env, [cmd, '--', name]), before, w, `${cmd} ${JSON.stringify(name)}`);
      return true;
    }), runs);
  }
  for (const [entry, runs] of BOTH) {
    await checkProperty(t, `net-define of a pool with a hostile name (${entry.how})`, fc.asyncProperty(argvName, async (name) => {
      writeFileSync(file, `<network><name>${xmlEscape(name)}</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`);
      const snap = snapshot(w.dir);
      assertRefused(await entry.cli(w.env, ['net-define', file]), snap, w, JSON.stringify(name));
      return true;
    }), runs);
  }
});
