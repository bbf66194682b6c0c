import t from 'tap';
import { execa } from 'execa';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeDomainPlan } from '../../src/state/domain-plan.js';
import { REPO, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';

/**
 * The wrapper runs as the domain's QEMU user. A plan that user cannot read (a directory or file
 * left with root's owner, a state directory made 0700 again) cannot be applied; the wrapper
 * then starts QEMU untouched (it cannot know what the guest should get, and a refusal would
 * stop every guest of a misconfigured host) but says so in one line on stderr, which libvirt
 * copies into the domain's log. Needs root (setpriv to another uid); CI runs as root.
 */
const SHIM = join(REPO, 'qemu-args/vfpool-qemu');
const NOBODY = 65534;

if (process.getuid!() !== 0) {
  if (process.env.CI) t.fail('qemu-wrapper-unreadable needs root (setpriv); CI runs as root');
  else t.plan(0, 'needs root (setpriv to another uid)');
} else {
  t.test('a plan the QEMU user cannot read: one line on stderr, QEMU started with the argv untouched', async (t) => {
    const dir = mkdtempSync('/dev/shm/vfpool-unreadable-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o755);
    const qemu = join(dir, 'fake-qemu');
    writeFileSync(qemu, `#!/bin/sh\nfor a do printf '%s\\0' "$a"; done\nexit 7\n`, { mode: 0o755 });
    const state = join(dir, 'run');
    const plan = (domain: string, owner: number) => writeDomainPlan(state, { version: 1, domain, uuid: null, delivery: 'hotplug', vfs: [], sriovNics: [] }, { uid: owner, gid: owner });
    await plan('rootdir', 0); // qemu/rootdir/ 0700 root: the QEMU user cannot enter it
    await plan('rootfile', NOBODY);
    chownSync(join(state, 'qemu/rootfile/plan.json'), 0, 0); // the directory is the QEMU user's, the file root's 0600
    const run = (argv: string[]) =>
      execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', SHIM, ...argv], {
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: state, VFPOOL_QEMU: qemu },
        extendEnv: false, reject: false, stripFinalNewline: false,
      });
    for (const [domain, unreadable] of [['rootdir', join(state, 'qemu/rootdir')], ['rootfile', join(state, 'qemu/rootfile/plan.json')]] as const) {
      const argv = ['-name', `guest=${domain},debug-threads=on`, '-machine', 'q35', '-S'];
      const r = await run(argv);
      t.equal(r.exitCode, 7, `${domain}: QEMU ran (its exit status)`);
      t.same(String(r.stdout).split('\0').slice(0, -1), argv, `${domain}: argv untouched`);
      t.equal(r.stderr, `vfpool: ${unreadable} is not readable by uid ${NOBODY}, so domain '${domain}' starts without vfpool's devices: it must belong to the domain's QEMU user (run \`vfpool prepare\` again, or check VFPOOL_STATE_DIR's modes)\n`, `${domain}: one line naming what cannot be read`);
    }
    const plain = await run(['-name', 'guest=other', '-machine', 'q35']);
    t.same([plain.exitCode, plain.stderr], [7, ''], 'a guest without a plan: silent, as before');
    chmodSync(state, 0o700); // what the lab saw: a state write resetting the 0711 hides every plan
    const hidden = await run(['-name', 'guest=rootfile', '-machine', 'q35']);
    t.same([hidden.exitCode, hidden.stderr], [7, ''], 'a state directory the QEMU user cannot enter looks like one without plans (nothing to tell them apart)');
  });

  t.test('a vfpool.conf the QEMU user cannot read: its settings do not apply, and one line says so', async (t) => {
    // Reproduced: vfpool.conf chmod 0600 (or /etc/vfpool 0700, install.sh under umask 077)
    // naming VFPOOL_QEMU and VFPOOL_STATE_DIR: the wrapper silently ran /usr/bin's QEMU and
    // looked for plans under /run/vfpool.
    const dir = mkdtempSync('/dev/shm/vfpool-unreadable-conf-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o755);
    const qemu = join(dir, 'fake-qemu');
    writeFileSync(qemu, `#!/bin/sh\nfor a do printf '%s\\0' "$a"; done\nexit 7\n`, { mode: 0o755 });
    const etc = join(dir, 'etc');
    mkdirSync(etc, { mode: 0o755 });
    writeFileSync(join(etc, 'vfpool.conf'), `VFPOOL_QEMU=${qemu}\nVFPOOL_STATE_DIR=${join(dir, 'run')}\n`, { mode: 0o600 });
    chmodSync(join(etc, 'vfpool.conf'), 0o600);
    // VFPOOL_QEMU in the environment only so that this test never starts a real QEMU: the
    // line is about the file, whatever the environment says.
    const run = () =>
      execa(WITHOUT_TAP_LOADER[0], [...WITHOUT_TAP_LOADER.slice(1), 'setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', SHIM, '-name', 'guest=vm1', '-S'], {
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', VFPOOL_CONFIG_DIR: etc, VFPOOL_QEMU: qemu },
        extendEnv: false, reject: false, stripFinalNewline: false,
      });
    const line = `vfpool: ${etc}/vfpool.conf is not readable by uid ${NOBODY}, so vfpool-qemu ignores its settings (VFPOOL_STATE_DIR, VFPOOL_QEMU): make it readable by the domain's QEMU user (chmod 0644, and o+x on ${etc})\n`;
    const unreadable = await run();
    t.same([unreadable.exitCode, unreadable.stderr], [7, line], 'the file 0600');
    chmodSync(join(etc, 'vfpool.conf'), 0o644);
    chmodSync(etc, 0o700);
    const hiddenDir = await run();
    t.same([hiddenDir.exitCode, hiddenDir.stderr], [7, line], 'its directory 0700');
    chmodSync(etc, 0o755);
    const readable = await run();
    t.same([readable.exitCode, readable.stderr], [7, ''], 'readable: silent');
  });
}
