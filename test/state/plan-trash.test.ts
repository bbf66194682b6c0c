import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { reconcile } from '../../src/pool/reconcile.js';
import { releaseGuest } from '../../src/pool/guest-release.js';
import { writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import { PURGE, purgePlanTrash, retireDomainPlan } from '../../src/state/plan-removal.js';
import { processStartTicks, selfStartTicks } from '../../src/util/process.js';
import { cli } from '../helpers/cli-in-process.js';
import { makeSimEnv, type SimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';

/**
 * Reproduced: a QEMU user owns its qemu/NAME/ and can fill it with any number of files.
 * reconcile removed stale plan directories under the state lock: 200 000 files held it ~6 s
 * (a guest's release waited as long; past 30 s every start and release fails with exit 3).
 * Now a plan directory is renamed away under the lock (qemu/.trash-PID-RANDOM) and emptied
 * after it, at most PURGE.budget entries per removal, the rest by the next one.
 */
const QEMU_USER = 64055;
const PLAN = (domain: string): DomainPlanV1 => ({ version: 1, domain, uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] });

/** A plan directory of `domain` its QEMU user filled with `files` files in two subdirectories. */
async function floodedPlan(w: SimEnv, domain: string, files: number): Promise<string> {
  await writeDomainPlan(w.settings.stateDir, PLAN(domain), { uid: QEMU_USER, gid: QEMU_USER });
  const dir = join(w.settings.stateDir, 'qemu', domain);
  for (const sub of ['a', 'b']) {
    mkdirSync(join(dir, sub));
    for (let i = 0; i < files / 2; i++) writeFileSync(join(dir, sub, `f${i}`), '');
    chownSync(join(dir, sub), QEMU_USER, QEMU_USER);
  }
  // As a dead QEMU leaves it: a socket nobody accepts on makes an emulated-only plan stale.
  spawnSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(join(dir, 'qmp.sock'))})`]);
  return dir;
}

const trash = (w: SimEnv) => readdirSync(join(w.settings.stateDir, 'qemu')).filter((n) => n.startsWith('.trash-'));
const countFiles = (dir: string): number => readdirSync(dir, { recursive: true }).length;

if (process.getuid!() !== 0) {
  t.plan(0, 'needs root (chown to the QEMU user)');
} else {
  /** The behaviour past the budget, not the budget's size, is what these tests are about. */
  const smallBudget = (tt: Test) => {
    const budget = PURGE.budget;
    PURGE.budget = 300;
    tt.teardown(() => {
      PURGE.budget = budget;
    });
  };

  t.test('reconcile: a flooded plan directory is renamed away under the lock and emptied after it, within a budget', async (t) => {
    smallBudget(t);
    const w = makeSimEnv(t);
    const files = PURGE.budget + 200;
    const dir = await floodedPlan(w, 'vm2', files);
    t.ok(existsSync(join(dir, 'qmp.sock')), 'a dead QEMU\'s socket');
    const entries = countFiles(dir);
    // What the lock covered: the qemu/ directory as the locked update leaves it.
    const update = w.ctx.store.update.bind(w.ctx.store);
    const afterLock: string[][] = [];
    w.ctx.store.update = async (fn) => {
      const r = await update(fn);
      const qemu = join(w.settings.stateDir, 'qemu');
      afterLock.push(readdirSync(qemu).map((n) => (n.startsWith('.trash-') ? `trash of ${countFiles(join(qemu, n))}` : n)));
      return r;
    };
    const r = await reconcile(w.ctx, { libvirtRunDir: join(w.dir, 'libvirt'), graceMs: 0 });
    t.same(r.plansRemoved, ['vm2']);
    t.same(afterLock.find((names) => !names.includes('vm2')), [`trash of ${entries}`], 'under the lock only the rename: every file is still there when it is released');
    t.same(trash(w).length, 1, 'the budget left some');
    t.ok(countFiles(join(w.settings.stateDir, 'qemu', trash(w)[0]!)) === entries - PURGE.budget, `${PURGE.budget} entries removed after the lock`);
    t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), `holds more than ${PURGE.budget} files (its QEMU user put them there): ${PURGE.budget} removed now, the rest by the next release or reconcile`);
    w.ctx.store.update = update;
    await reconcile(w.ctx, { libvirtRunDir: join(w.dir, 'libvirt'), graceMs: 0 });
    t.same(readdirSync(join(w.settings.stateDir, 'qemu')), [], 'the next reconcile empties the rest');
  });

  t.test('release: a flooded directory costs a release at most the budget; the next removal finishes it', async (t) => {
    smallBudget(t);
    const w = makeSimEnv(t);
    w.definePool('p', `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf></forward></network>`);
    t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
    const xml = (name: string) => domainXml('prepare', { name, vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:0${name.at(-1)}'/>` });
    t.equal((await cli(['prepare', '--xml', '-'], { env: w.env, stdin: xml('vm1') })).exitCode, 0);
    const dir = join(w.settings.stateDir, 'qemu/vm1');
    mkdirSync(join(dir, 'junk'));
    for (let i = 0; i < PURGE.budget + 50; i++) writeFileSync(join(dir, 'junk', `f${i}`), '');
    chownSync(dir, QEMU_USER, QEMU_USER);
    await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
    t.same(w.ctx.store.read().allocations, [], 'released');
    t.notOk(existsSync(dir), 'the plan is gone at once');
    t.equal(trash(w).length, 1, 'part of the flood waits');
    t.equal((await cli(['prepare', '--xml', '-'], { env: w.env, stdin: xml('vm2') })).exitCode, 0);
    t.equal((await cli(['release', 'vm2'], { env: w.env })).exitCode, 0);
    t.same(readdirSync(join(w.settings.stateDir, 'qemu')), [], 'the next release empties it');
  });

  t.test('trash of a killed vfpool is taken over; one a live vfpool empties is left to it', async (t) => {
    const w = makeSimEnv(t);
    const qemu = join(w.settings.stateDir, 'qemu');
    await floodedPlan(w, 'vm3', 10);
    await floodedPlan(w, 'vm4', 10);
    const dead = spawnSync('true').pid!;
    const live = process.ppid;
    renameSync(join(qemu, 'vm3'), join(qemu, `.trash-${dead}-abc`));
    renameSync(join(qemu, 'vm4'), join(qemu, `.trash-${live}-def`));
    t.same(purgePlanTrash(w.settings.stateDir), { left: false });
    t.same(readdirSync(qemu), [`.trash-${live}-def`], 'the dead one\'s removed, the live one\'s untouched');
  });

  t.test('trash of a killed vfpool whose pid another process holds now is taken over (pid and start time)', async (t) => {
    const w = makeSimEnv(t);
    const qemu = join(w.settings.stateDir, 'qemu');
    const other = spawn('sleep', ['30']);
    t.teardown(() => other.kill());
    const start = processStartTicks(other.pid!)!;
    await floodedPlan(w, 'vm5', 10);
    await floodedPlan(w, 'vm6', 10);
    // vm5's: a vfpool killed mid-way, its pid given to `sleep` since (started at another tick).
    renameSync(join(qemu, 'vm5'), join(qemu, `.trash-${other.pid}-s${start - 1}-abc`));
    renameSync(join(qemu, 'vm6'), join(qemu, `.trash-${other.pid}-s${start}-def`));
    t.same(purgePlanTrash(w.settings.stateDir), { left: false });
    t.same(readdirSync(qemu), [`.trash-${other.pid}-s${start}-def`], 'the killed one\'s removed; the one of the process that lives is left to it');
  });

  t.test('a removal names its trash by its pid and start time, and empties its own', async (t) => {
    const w = makeSimEnv(t);
    await floodedPlan(w, 'vm7', 10);
    retireDomainPlan(w.settings.stateDir, 'vm7');
    t.match(trash(w), [new RegExp(`^\\.trash-${process.pid}-s${selfStartTicks()}-[0-9a-z]+$`)]);
    t.same(purgePlanTrash(w.settings.stateDir), { left: false });
    t.same(trash(w), []);
  });
}
