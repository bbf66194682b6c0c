import t from 'tap';
import { execa } from 'execa';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sriovNicPlans, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { libvirtQ35Argv } from '../helpers/qemu-argv.js';
import { scratchDir } from '../helpers/scratch.js';
import { REPO, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';

/**
 * The wrapper killed (SIGKILL) at every crash point of its Node half (issue 10): the plan read,
 * QEMU's capabilities asked (the real QEMU 10, which `npm test` installs), the argv generated.
 * The wrapper changes nothing but its capability cache, so the invariants are: QEMU is not
 * started, the wrapper says so in one line and fails, the plan is untouched and nothing half-
 * written is left in the domain's directory, and the recovery libvirt does (start the domain
 * again, which runs the wrapper again) gives QEMU exactly the argv of an uninterrupted start.
 */
const SHIM = join(REPO, 'qemu-args/vfpool-qemu');
const REAL_QEMU = '/usr/bin/qemu-system-x86_64';
const MAC = '52:54:00:aa:bb:01' as MacAddress;

if (!existsSync(REAL_QEMU)) {
  if (process.env.CI) t.fail(`qemu-wrapper-crash needs ${REAL_QEMU} (npm test's pretest installs it)`);
  else t.plan(0, `needs ${REAL_QEMU}`);
} else {
  t.test('wrapper killed at every crash point: QEMU not started, one line, nothing changed, a second start as if none had failed', async (t) => {
    const dir = scratchDir(t);
    const state = join(dir, 'run');
    const record = join(dir, 'qemu-argv');
    // Answers the capability probe with the real QEMU 10.0's list plus the `sriov-pf` property of
    // QEMU >= 10.1 (the emulated SR-IOV NIC needs it; which QEMU has it is test/qemu's business);
    // records any other start.
    const qemu = join(dir, 'qemu');
    writeFileSync(qemu, `#!/bin/sh\ncase "$*" in *help*) ${REAL_QEMU} "$@"; echo '  sriov-pf=<str>'; exit 0 ;; esac\nfor a do printf '%s\\0' "$a"; done >'${record}'\nexit 7\n`, { mode: 0o755 });
    const plan: DomainPlanV1 = {
      version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline',
      vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: MAC, failoverStandbyMac: MAC, guestAddress: null }],
      sriovNics: sriovNicPlans('vm1', null, [{ vfs: 2, backend: 'user', backendOptions: null }]),
    };
    const planFile = await writeDomainPlan(state, plan, { uid: process.getuid!(), gid: process.getgid!() });
    const planText = readFileSync(planFile, 'utf8');
    const argv = libvirtQ35Argv('vm1', MAC);
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: state, VFPOOL_QEMU: qemu };
    const run = async (extra: Record<string, string> = {}) => {
      rmSync(record, { force: true });
      const [envBin, ...unset] = WITHOUT_TAP_LOADER;
      const r = await execa(envBin, [...unset, SHIM, ...argv], { env: { ...env, ...extra }, extendEnv: false, reject: false, stripFinalNewline: false });
      return { exitCode: r.exitCode, stderr: String(r.stderr), qemuArgv: existsSync(record) ? readFileSync(record, 'utf8').split('\0').slice(0, -1) : null };
    };
    const list = join(dir, 'points');
    const reference = await run({ VFPOOL_TEST_CRASH_LIST: list });
    t.equal(reference.exitCode, 7, reference.stderr);
    t.ok(reference.qemuArgv?.includes('vfpool-sriov0-pf') || reference.qemuArgv?.some((a) => a.includes('vfpool-sriov0-pf')), 'the uninterrupted start added the emulated SR-IOV NIC');
    const points = readFileSync(list, 'utf8').trim().split('\n');
    t.same(points, ['wrapper:read#1', 'wrapper:caps-probed#1', 'wrapper:generated#1'], 'the points the wrapper passes on a first start');
    for (const point of points) {
      rmSync(join(state, 'qemu/vm1/qemu-caps.json'), { force: true }); // each kill on a first start (no cache yet)
      const killed = await run({ VFPOOL_TEST_CRASH_AT: point });
      t.equal(killed.exitCode, 137, `${point}: the wrapper fails with Node's status`);
      t.equal(killed.qemuArgv, null, `${point}: QEMU not started`);
      t.equal(killed.stderr, "vfpool: the wrapper's Node half was killed by signal 9; QEMU not started: start the domain again\n", `${point}: one line`);
      t.equal(readFileSync(planFile, 'utf8'), planText, `${point}: the plan untouched`);
      t.same(readdirSync(join(state, 'qemu/vm1')).filter((f) => f !== 'plan.json' && f !== 'qemu-caps.json'), [], `${point}: no half-written file left`);
      const again = await run();
      t.same([again.exitCode, again.qemuArgv], [7, reference.qemuArgv], `${point}: the next start gives QEMU the argv of an uninterrupted one`);
    }
  });
}
