import t from 'tap';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertStateDirTrusted } from '../../src/util/state-dir-owner.js';
import { readDomainPlan } from '../../src/state/domain-plan.js';
import { fileRecordStore } from '../../src/state/migration-record.js';
import { cli } from '../helpers/cli-in-process.js';
import { checkStateDirs } from '../../src/ops/doctor-install.js';
import type { VfpoolError } from '../../src/errors.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { networkHookInProcess } from '../helpers/hook-world.js';

/**
 * Reproduced: as root, vfpool used a VFPOOL_STATE_DIR (or /run/vfpool) owned by another user,
 * who could then plant state records, plans and links that root's hooks act on; only doctor
 * mentioned the owner. Now every operation refuses such a directory as ssh refuses a foreign
 * home: one line naming what is open and the chown/chmod, exit 2, nothing written.
 */
const POOL = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'><vf num='2'/></pf></forward></network>`;
const OTHER = 4242;

if (process.getuid!() !== 0) {
  t.plan(0, 'needs root (chown to another uid)');
} else {
  t.test('a state directory owned by another user: refused in one line, nothing written there', async (t) => {
    const w = makeSimEnv(t);
    w.definePool('p', POOL);
    const state = w.settings.stateDir;
    chmodSync(w.dir, 0o755); // as /run: the QEMU user passes (doctor says so otherwise)
    mkdirSync(state, { mode: 0o700 });
    chownSync(state, OTHER, OTHER);
    const line = `vfpool: the state directory ${state} is open to other users, so vfpool would act as root on what they plant there: ${state} is owned by uid ${OTHER}, not root: chown 0:0 ${state} (check what is in it first), or point VFPOOL_STATE_DIR at a directory of root's\n`;
    t.same(await cli(['net-start', 'p'], { env: w.env }), { exitCode: 2, stdout: '', stderr: line }, 'the CLI');
    t.same(await cli(['status', '--json'], { env: w.env }).then((r) => [r.exitCode, r.stderr]), [2, line], 'a read as well: what is there may be planted');
    const hook = await networkHookInProcess(w.env, ['p', 'start', 'begin', '-'], POOL);
    t.same([hook.exitCode, hook.stderr], [2, line], 'the network hook');
    const prepare = await cli(['prepare', '--xml', '-'], { env: w.env, stdin: domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:00:00:01'/>` }) });
    t.same([prepare.exitCode, prepare.stderr], [2, line.replace('vfpool: ', "vfpool: domain 'vm1': ")], 'a guest prepare');
    t.same(readdirSync(state), [], 'nothing written: no state, no marker, no log line');
    t.throws(() => readDomainPlan(state, 'vm1'), { exitCode: 2, message: /is owned by uid 4242/ }, 'the wrapper run as root reads no plan from it');
    t.throws(() => fileRecordStore(state).list(), { exitCode: 2, message: /is owned by uid 4242/ }, 'nor a migration record');

    let stateError: VfpoolError | null = null;
    try {
      w.ctx.store.read();
    } catch (err) {
      stateError = err as VfpoolError;
    }
    const row = checkStateDirs(w.settings, stateError).find((c) => c.id === 'state-dir')!;
    t.same([row.ok, row.found.match(/owned by uid 4242/g)?.length, row.fix], [false, 1, `chown 0:0 ${state} (check what is in it first), or point VFPOOL_STATE_DIR at a directory of root's`], 'doctor says it once, with the fix');

    chownSync(state, 0, 0);
    t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0, 'root\'s again: the pool starts');
  });

  t.test('an entry root makes, or a directory above, that another user controls; what stays allowed', async (t) => {
    const w = makeSimEnv(t);
    const state = w.settings.stateDir;
    mkdirSync(join(state, 'qemu'), { recursive: true, mode: 0o711 });
    t.doesNotThrow(() => assertStateDirTrusted(state), 'root\'s, under a sticky /dev/shm or a 0755 directory');
    chownSync(join(state, 'qemu'), OTHER, OTHER);
    t.throws(() => assertStateDirTrusted(state), { exitCode: 2, message: `the state directory ${state} is open to other users, so vfpool would act as root on what they plant there: ${join(state, 'qemu')} is owned by uid ${OTHER}, not root` }, 'qemu/ of another user: plans and links planted there');
    t.doesNotThrow(() => assertStateDirTrusted(state, OTHER), 'a user checks a directory of its own (vfpool run without root)');
    chownSync(join(state, 'qemu'), 0, 0);
    mkdirSync(join(state, 'qemu/vm1'), { mode: 0o700 });
    chownSync(join(state, 'qemu/vm1'), OTHER, OTHER);
    t.doesNotThrow(() => assertStateDirTrusted(state), 'qemu/NAME/ is its QEMU user\'s by design');
    t.doesNotThrow(() => assertStateDirTrusted(state, 64055), 'the QEMU wrapper, as the QEMU user, passes on root\'s directory');

    chmodSync(w.dir, 0o777);
    t.throws(() => assertStateDirTrusted(state), { exitCode: 2, message: `the state directory ${state} is open to other users, so vfpool would act as root on what they plant there: ${w.dir} is writable by others (mode 777, not sticky)`, hint: `chmod go-w ${w.dir}, or point VFPOOL_STATE_DIR at a directory of root's` }, 'a directory above it anyone may write: the state directory can be swapped');
    chmodSync(w.dir, 0o1777);
    t.doesNotThrow(() => assertStateDirTrusted(state), 'sticky, as /tmp: nobody else may move root\'s entry');
    chmodSync(w.dir, 0o700);
  });

  t.test('the log: not one line is appended to a directory another user controls', async (t) => {
    const w = makeSimEnv(t);
    mkdirSync(w.settings.stateDir, { mode: 0o700 });
    chownSync(w.settings.stateDir, OTHER, OTHER);
    w.ctx.log.info('a step');
    t.notOk(existsSync(join(w.settings.stateDir, 'vfpool.log')), 'no log file made');
    chownSync(w.settings.stateDir, 0, 0);
    w.ctx.log.info('another step');
    t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), /another step/);
  });

  t.test('the history directory another user controls: no entry written there, and `vfpool history` refuses it', async (t) => {
    // Reproduced: a VFPOOL_JOURNAL_DIR of uid 4242 was appended to, rotated and chmodded by
    // root, and `vfpool history` showed what that user wrote there as root's record.
    const w = makeSimEnv(t);
    w.definePool('p', POOL);
    const journal = w.settings.journalDir;
    chmodSync(w.dir, 0o755);
    mkdirSync(journal, { mode: 0o700 });
    chownSync(journal, OTHER, OTHER);
    const problem = `the history directory ${journal} is open to other users, who could plant or rewrite the VF history root writes there: ${journal} is owned by uid ${OTHER}, not root`;
    const start = await cli(['net-start', 'p'], { env: w.env });
    t.same([start.exitCode, start.stderr], [0, ''], 'the operation goes on: a history write never fails one');
    t.same(readdirSync(journal), [], 'no entry written there');
    t.match(readFileSync(join(w.settings.stateDir, 'vfpool.log'), 'utf8'), `history journal ${join(journal, 'history.jsonl')} not written: ${problem} (chown 0:0 ${journal} (check what is in it first), or point VFPOOL_JOURNAL_DIR at a directory of root's)`);
    t.same(await cli(['history'], { env: w.env }), { exitCode: 2, stdout: '', stderr: `vfpool: ${problem}: chown 0:0 ${journal} (check what is in it first), or point VFPOOL_JOURNAL_DIR at a directory of root's\n` });
    chownSync(journal, 0, 0);
    await cli(['net-destroy', 'p'], { env: w.env });
    t.same(readdirSync(journal), ['history.jsonl'], 'root\'s again: written');
    const hist = await cli(['history'], { env: w.env });
    t.same([hist.exitCode, hist.stderr], [0, '']);
    t.match(hist.stdout, /pool-stop/);
  });
}
