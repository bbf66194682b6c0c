import t, { type Test } from 'tap';
import { execa } from 'execa';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { prepareGuest } from '../../src/pool/guests.js';
import { judgeAllocation, reconcile } from '../../src/pool/reconcile.js';
import { judgePort, ownerEnv } from '../../src/pool/owners.js';
import { processStartTicks } from '../../src/util/process.js';
import { spawnSleeper } from '../helpers/processes.js';
import type { Allocation, VfpoolState } from '../../src/state/schema.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, POOLS } from '../helpers/guest-world.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

async function deadPid(): Promise<number> {
  const p = execa('true');
  const pid = p.pid!;
  await p;
  return pid;
}

const NOW = Date.parse('2026-01-01T12:00:00Z');
const alloc = (o: Partial<Omit<Allocation, 'owner'>> & { owner?: Partial<Allocation['owner']> } = {}): Allocation =>
  ({
    pool: 'p',
    pf: 'eth1',
    vfIndex: 0,
    vfAddr: '0000:3b:02.0',
    netdev: null,
    mac: null,
    vlan: null,
    alias: 'vfpool-vf0',
    phase: 'ready',
    worker: null,
    saved: null,
    guestSlot: 0,
    requestedNetdev: null,
    requested: null,
    createdAt: new Date(NOW - 600_000).toISOString(),
    ...o,
    owner: { domain: 'vm1', uuid: null, pid: null, via: 'libvirt', ...o.owner },
  }) as Allocation;

t.test('the policy, case by case', async (t) => {
  const alive = new Set([100, 200]);
  const env = { alive: (p: number) => alive.has(p), libvirtPid: (d: string) => (d === 'haspid' ? 200 : null), now: NOW, graceMs: 120_000, self: 1 };
  const cases: Array<[string, Allocation, boolean, RegExp, number?]> = [
    ['QEMU pid alive', alloc({ owner: { pid: 100 } }), true, /QEMU pid 100 runs/],
    ['QEMU pid dead', alloc({ owner: { pid: 300 } }), false, /QEMU pid 300 is gone/],
    ['no pid, libvirt pid file names a live process', alloc({ owner: { domain: 'haspid' } }), true, /pid 200 \(libvirt's pid file\)/, 200],
    ['no pid, no pid file, old', alloc(), false, /no QEMU pid was ever recorded/],
    ['no pid, no pid file, young', alloc({ createdAt: new Date(NOW - 5_000).toISOString() }), true, /prepared 5 s ago/],
    ['no pid, no pid file, young, its libvirt daemon runs', alloc({ createdAt: new Date(NOW - 5_000).toISOString(), owner: { daemon: 100 } }), true, /prepared 5 s ago/],
    ['no pid, no pid file, young, its libvirt daemon is gone', alloc({ createdAt: new Date(NOW - 5_000).toISOString(), owner: { daemon: 300 } }), false, /libvirt daemon that prepared it \(pid 300\) is gone/],
    ['its libvirt daemon is gone, libvirt\'s pid file (a new daemon) names QEMU', alloc({ owner: { domain: 'haspid', daemon: 300 } }), true, /pid 200 \(libvirt's pid file\)/, 200],
    ['vfpool prepare without --pid', alloc({ owner: { via: 'cli' } }), true, /vfpool release vm1/],
    ['a live vfpool process works on it', alloc({ phase: 'preparing', worker: 100 }), true, /pid 100\) is working on it/],
    ['an interrupted prepare', alloc({ phase: 'preparing', worker: 300, owner: { pid: 100 } }), false, /prepare was interrupted \(vfpool pid 300 is gone\)/],
    ['an unfinished release', alloc({ phase: 'releasing', lastError: 'EIO', owner: { pid: 100 } }), false, /release did not finish \(EIO\)/],
  ];
  for (const [what, a, keep, re, adopt] of cases) {
    const v = judgeAllocation(a, env);
    t.equal(v.keep, keep, what);
    t.match(v.reason, re, what);
    t.equal(v.adoptPid, adopt, `${what}: adopt`);
  }
});

t.test('a libvirt daemon that is gone is gone though another process holds its pid now (pid and start time)', async (t) => {
  // libvirtd killed between prepare and QEMU; its pid given to another process since (`sleep`
  // here, started at another tick): the record of the interrupted start waited out the grace.
  const other = spawnSleeper();
  t.teardown(other.kill);
  const start = processStartTicks(other.pid)!;
  const env = ownerEnv({ libvirtRunDir: join(t.testdir(), 'libvirt') });
  const young = { createdAt: new Date(env.now - 5_000).toISOString() };
  const v = judgeAllocation(alloc({ ...young, owner: { daemon: other.pid, daemonStart: start - 1 } }), env);
  t.match(v, { keep: false, reason: new RegExp(`libvirt daemon that prepared it \\(pid ${other.pid}\\) is gone`) });
  t.match(judgeAllocation(alloc({ ...young, owner: { daemon: other.pid, daemonStart: start } }), env), { keep: true, reason: /prepared 5 s ago/ }, 'that daemon itself: its start may be going on');
  t.match(judgeAllocation(alloc({ ...young, owner: { daemon: other.pid } }), env), { keep: true, reason: /prepared 5 s ago/ }, 'a record without the start time: the pid alone');
});

t.test('the grace measures a record\'s age by the monotonic clock: a step of the wall clock moves neither way', async (t) => {
  // chrony/ntpd step the clock at boot, just when libvirt autostarts guests: a guest between its
  // prepare and its pid file must not lose its VF to a step forward past the grace.
  const env = { alive: () => false, libvirtPid: () => null, now: NOW, mono: 1_000_000, graceMs: 120_000, self: 1 };
  const stepped = alloc({ createdAt: new Date(NOW - 3600_000).toISOString(), createdMonoMs: 1_000_000 - 5_000 });
  t.same(judgeAllocation(stepped, env), { keep: true, reason: 'prepared 5 s ago and libvirt may still be starting it (grace 120 s)' }, 'written 5 s ago, the wall clock stepped an hour forward since');
  const steppedBack = alloc({ createdAt: new Date(NOW + 3600_000).toISOString(), createdMonoMs: 1_000_000 - 600_000 });
  t.equal(judgeAllocation(steppedBack, env).keep, false, 'written 10 min ago, the wall clock stepped an hour back since: past the grace');
  const earlierBoot = alloc({ createdAt: new Date(NOW - 600_000).toISOString(), createdMonoMs: 5_000_000 });
  t.equal(judgeAllocation(earlierBoot, env).keep, false, 'a stamp from an earlier boot (ahead of this boot\'s clock): the wall clock decides');
  const port = { network: 'n', portUuid: 'u', domain: 'vm1', domainUuid: null, vfAddr: null, netdev: null, plug: 'direct' as const, mac: null, pid: null };
  t.equal(judgePort({ ...port, createdAt: new Date(NOW - 3600_000).toISOString(), createdMonoMs: 1_000_000 - 5_000 }, env).keep, true, 'a libvirt port record the same way');
  t.equal(judgePort({ ...port, createdAt: new Date(NOW + 3600_000).toISOString(), createdMonoMs: 1_000_000 - 600_000 }, env).keep, false);
});

t.test('reconcile frees and restores what is gone, keeps what runs, drops dead ports, rebuilds markers', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  const before = (await w.snapshot()) as { vfs: Array<{ address: string; link: unknown; driver: string }> };
  const prep = (name: string, i: number, via: 'libvirt' | 'cli' = 'libvirt') =>
    prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name, vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:0${i}' vlan='${i}'/>` }), name), { ...w.opts, via });
  await prep('live', 1);
  await prep('dead', 2);
  await prep('pidfile', 3);
  await prep('cli', 4, 'cli');
  const dead = await deadPid();
  await w.ctx.store.update((s) => {
    for (const a of s.allocations) {
      if (a.owner.domain === 'live') a.owner.pid = process.pid;
      if (a.owner.domain === 'dead') a.owner.pid = dead;
      if (a.owner.domain === 'pidfile') Object.assign(a, { createdAt: new Date(Date.now() - 3600_000).toISOString(), createdMonoMs: null });
    }
    s.ports.push(
      { network: 'n', portUuid: 'u1', domain: 'gone', domainUuid: null, vfAddr: null, netdev: 'x' as never, plug: 'direct', mac: null, createdAt: new Date(Date.now() - 3600_000).toISOString(), createdMonoMs: null, pid: null },
      { network: 'n', portUuid: 'u2', domain: 'pidfile', domainUuid: null, vfAddr: null, netdev: 'y' as never, plug: 'direct', mac: null, createdAt: new Date(Date.now() - 3600_000).toISOString(), createdMonoMs: null, pid: null },
    );
  });
  fakeLibvirtQemu({ libvirtRunDir: w.opts.libvirtRunDir, procRoot: w.settings.procRoot }, 'pidfile');
  writeFileSync(join(w.settings.stateDir, 'index/domain.stray'), '');

  const dry = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 120_000, dryRun: true });
  t.same(dry.freed.map((e) => e.domain), ['dead']);
  t.equal(w.ctx.store.read().allocations.length, 4, 'dry run changes nothing');

  const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 120_000 });
  t.same(r.freed.map((e) => [e.domain, e.vfAddr]), [['dead', before.vfs[1]!.address]]);
  t.same(r.kept.map((e) => e.domain).sort(), ['cli', 'live', 'pidfile']);
  t.same(r.failed, []);
  t.same(r.portsDropped.map((p) => p.domain), ['gone']);
  const state = w.ctx.store.read();
  t.same(state.ports.map((p) => p.domain), ['pidfile']);
  t.equal(state.allocations.find((a) => a.owner.domain === 'pidfile')!.owner.pid, process.pid, 'the pid from libvirt\'s pid file is recorded');
  const after = (await w.snapshot()) as typeof before;
  t.same(after.vfs[1], before.vfs[1], 'the dead guest\'s VF is restored');
  t.notOk(existsSync(join(w.settings.stateDir, 'index/domain.stray')), 'stray marker removed');
  t.notOk(existsSync(join(w.settings.stateDir, 'index/domain.dead')), 'freed domain\'s marker removed');
  t.ok(existsSync(join(w.settings.stateDir, 'index/domain.live')));
});

t.test('an interrupted prepare (killed half-way) is restored by reconcile', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  const before = await w.snapshot();
  await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' trust='on'/>` }), 'vm1'), w.opts);
  const dead = await deadPid();
  await w.ctx.store.update((s) => Object.assign(s.allocations[0]!, { phase: 'preparing', worker: dead }));
  const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 120_000 });
  t.match(r.freed, [{ domain: 'vm1', reason: /prepare was interrupted/ }]);
  t.same(await w.snapshot(), before);
});

type GuestWorld = ReturnType<typeof makeGuestWorld>;

/**
 * Writes state.json through `change` (as another vfpool process would, in between) right after
 * the first read of the state that `caller` (a function of src/, the frame that calls read())
 * makes. Returns what that read saw (`seen.state`, once it happened).
 */
function changeAfterReadBy(t: Test, w: GuestWorld, caller: string, change: (onDisk: VfpoolState) => void): { state?: VfpoolState } {
  const read = w.ctx.store.read.bind(w.ctx.store);
  const seen: { state?: VfpoolState } = {};
  w.ctx.store.read = () => {
    const s = read();
    if (seen.state === undefined && new Error().stack?.split('\n')[2]?.includes(`at ${caller} `)) {
      seen.state = s;
      const onDisk = stateOnDisk(w);
      change(onDisk);
      writeFileSync(join(w.settings.stateDir, 'state.json'), JSON.stringify(onDisk));
    }
    return s;
  };
  t.teardown(() => {
    w.ctx.store.read = read;
  });
  return seen;
}

/**
 * vm1 prepared, its record put back to 'preparing' by a worker that has exited; then vm1's
 * prepare "ends" (its last write: 'ready', no worker) right after the first read of the state
 * that `caller` makes (changeAfterReadBy). Returns what that read saw.
 */
async function vm1EndsAfterReadBy(t: Test, caller: string) {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' trust='on'/>` }), 'vm1'), w.opts);
  const prepared = await w.snapshot();
  const ready = w.ctx.store.read().allocations[0]!;
  const dead = await deadPid();
  await w.ctx.store.update((s) => Object.assign(s.allocations[0]!, { phase: 'preparing', worker: dead }));
  const seen = changeAfterReadBy(t, w, caller, (onDisk) => Object.assign(onDisk.allocations[0]!, { phase: ready.phase, worker: ready.worker }));
  return { w, prepared, ready, seen };
}

t.test('a prepare that ends while reconcile judges it is not freed: the verdict is taken again under the lock', async (t) => {
  // reconcile reads the state, then judges each record, then frees: a prepare (libvirt's hooks
  // run in parallel) can finish in between. Judged on the state it read, the record was
  // 'preparing' by a worker that has since exited ("interrupted"); freed on that verdict, the
  // guest would lose the VF its prepare was just told it has.
  const { w, prepared, seen } = await vm1EndsAfterReadBy(t, 'reconcile');
  const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 120_000 });
  t.equal(seen.state?.allocations[0]?.phase, 'preparing', 'reconcile judged the record as it was before the prepare ended');
  t.same(r.freed, [], 'nothing freed');
  t.match(r.kept, [{ domain: 'vm1', reason: /no longer to free/ }], 'reported kept, with the verdict taken again');
  t.match(allocationsOnDisk(w), [{ owner: { domain: 'vm1' }, phase: 'ready', worker: null }], 'vm1 still holds its VF');
  t.same(await w.snapshot(), prepared, 'its VF keeps the MAC and settings its prepare gave it');
});

t.test('the same at another guest\'s prepare, which frees what owners that are gone hold', async (t) => {
  const { w, ready, seen } = await vm1EndsAfterReadBy(t, 'freeGoneOwners');
  await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm2', vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:02'/>` }), 'vm2'), w.opts);
  t.equal(seen.state?.allocations[0]?.phase, 'preparing', 'vm2\'s prepare judged vm1 as it was before vm1\'s prepare ended');
  t.same(allocationsOnDisk(w).map((a) => [a.owner.domain, a.vfAddr, a.phase]), [['vm1', ready.vfAddr, 'ready'], ['vm2', '0000:3b:02.1', 'ready']], 'vm1 keeps its VF; vm2 gets another');
});

t.test('a libvirt port recorded again while reconcile judges it is not dropped: the verdict is taken again under the lock', async (t) => {
  // An old record of a port whose domain does not run is one to drop. libvirt's network hook
  // (port-created, in parallel with reconcile) may record the same port again meanwhile, for a
  // domain that is starting: the new record, in its grace, must survive.
  const w = makeGuestWorld(t, 'sim');
  const old = new Date(Date.now() - 3600_000).toISOString();
  await w.ctx.store.update((s) => {
    s.ports.push({ network: 'n', portUuid: 'u1', domain: 'vm9', domainUuid: null, vfAddr: null, netdev: 'x' as never, plug: 'direct', mac: null, createdAt: old, createdMonoMs: null, pid: null });
  });
  const seen = changeAfterReadBy(t, w, 'reconcile', (onDisk) => {
    onDisk.ports[0]!.createdAt = new Date().toISOString();
  });
  const r = await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 120_000 });
  t.equal(seen.state?.ports[0]?.createdAt, old, 'reconcile judged the record as it was before the port was recorded again');
  t.same(r.portsDropped, [], 'no port reported dropped');
  t.equal(r.portsKept, 1);
  t.same(stateOnDisk(w).ports.map((p) => p.domain), ['vm9'], 'the port record is still there');
});

/** The state as the state file holds it. */
function stateOnDisk(w: { settings: { stateDir: string } }): VfpoolState {
  return JSON.parse(readFileSync(join(w.settings.stateDir, 'state.json'), 'utf8')) as VfpoolState;
}

/** The allocations as the state file holds them. */
function allocationsOnDisk(w: { settings: { stateDir: string } }): Allocation[] {
  return stateOnDisk(w).allocations;
}

t.test('vfpool reconcile and vfpool release through the CLI', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  const env = { VFPOOL_CONFIG_DIR: w.settings.configDir, VFPOOL_STATE_DIR: w.settings.stateDir, VFPOOL_HOST: w.settings.host, VFPOOL_LIBVIRT_RUN_DIR: w.opts.libvirtRunDir, VFPOOL_JOURNAL_DIR: w.settings.journalDir };
  await prepareGuest(w.ctx, parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>` }), 'vm1'), w.opts);
  const dead = await deadPid();
  await w.ctx.store.update((s) => {
    s.allocations[0]!.owner.pid = dead;
  });
  const dry = await vfpoolCli(['reconcile', '--dry-run'], { env });
  t.equal(dry.exitCode, 0, dry.stderr);
  t.match(dry.stdout, new RegExp(`would free 0000:3b:02.0 of domain vm1: QEMU pid ${dead} is gone\n0 kept, 1 would free, 0 failed \\(--dry-run, nothing changed\\)`));
  const r = await vfpoolCli(['reconcile', '--json'], { env });
  t.equal(r.exitCode, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { dryRun: false, freed: [{ domain: 'vm1', vfAddr: '0000:3b:02.0' }], kept: [], failed: [] });
  t.same(w.ctx.store.read().allocations, []);
});
