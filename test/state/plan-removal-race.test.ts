import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDomainPlan } from '../../src/state/domain-plan.js';

/**
 * Release removes qemu/NAME/, which the domain's QEMU user may still write (any QEMU of that
 * uid). While root removes it, that user swaps a subdirectory with a link to a directory of
 * root's, atomically and over and over (renameat2 RENAME_EXCHANGE, from Python: Node has no
 * binding for it). Node's rmSync, which lstats an entry and then lists it by path, went through
 * the link in about one removal in ten and unlinked root's files; vfpool's removal makes each
 * directory root's before listing it, so the swap fails. Needs root (setpriv) and python3.
 */
const NOBODY = 65534;
const PYTHON = '/usr/bin/python3';

if (process.getuid!() !== 0 || !existsSync(PYTHON)) {
  t.plan(0, 'needs root (setpriv to another uid) and /usr/bin/python3 (renameat2)');
} else {
  t.test("the QEMU user swapping a link into its directory during release never has root remove another directory's files", async (t) => {
    const dir = mkdtempSync('/dev/shm/vfpool-race-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o711);
    const precious = join(dir, 'precious');
    const names = Array.from({ length: 20 }, (_, i) => `f${i}`);
    mkdirSync(precious);
    for (const n of names) writeFileSync(join(precious, n), 'root\'s\n');
    const state = join(dir, 'run');
    const vm = join(state, 'qemu/vm1');
    mkdirSync(join(state, 'qemu'), { recursive: true, mode: 0o711 });
    chmodSync(state, 0o711);
    const plant = () => {
      // As the QEMU user leaves it: its directory, a subdirectory with files, and the link.
      mkdirSync(join(vm, 'd'), { recursive: true });
      for (const n of names) writeFileSync(join(vm, 'd', n), 'x');
      symlinkSync(precious, join(vm, 'l'));
      for (const p of [vm, join(vm, 'd'), ...names.map((n) => join(vm, 'd', n))]) chownSync(p, NOBODY, NOBODY);
      lchownSync(join(vm, 'l'), NOBODY, NOBODY);
    };
    const swapper = [
      'import ctypes, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'end = time.time() + 20',
      'while time.time() < end:',
      `  libc.renameat2(-100, ${JSON.stringify(join(vm, 'd'))}.encode(), -100, ${JSON.stringify(join(vm, 'l'))}.encode(), 2)`,
    ].join('\n');
    plant();
    const racer = spawn('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', PYTHON, '-c', swapper], { stdio: 'ignore' });
    t.teardown(() => racer.kill());
    await new Promise<void>((resolve) => setTimeout(resolve, 300));
    t.equal(racer.exitCode, null, 'the swapper runs');
    let lost = 0;
    let failed = 0;
    for (let i = 0; i < 100; i++) {
      try {
        removeDomainPlan(state, 'vm1');
      } catch {
        failed++;
      }
      lost += names.length - readdirSync(precious).length;
      for (const n of names) writeFileSync(join(precious, n), 'root\'s\n');
      rmSync(vm, { recursive: true, force: true });
      plant();
    }
    t.same({ lost, failed }, { lost: 0, failed: 0 }, 'no file of root\'s removed, every removal done');
  });
}
