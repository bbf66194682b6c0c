import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDomainPlan } from '../../src/state/plan-removal.js';

/**
 * Release removes qemu/NAME/, which the domain's QEMU user may still write (any QEMU of that
 * uid). While root removes it, that user swaps a subdirectory with a link to a directory of
 * root's, atomically and over and over (renameat2 RENAME_EXCHANGE). Node's rmSync, which
 * lstats an entry and then lists it by path, went through the link in about one removal in ten
 * and unlinked root's files; vfpool's removal makes each directory root's before listing it, so
 * the swap fails. Needs root (setpriv). The swapper is Perl, which every Debian has (perl-base is
 * Essential) and which, unlike Node, can call renameat2 (by its syscall number).
 */
const NOBODY = 65534;
const PERL = '/usr/bin/perl';
const RENAMEAT2: Partial<Record<string, number>> = { x64: 316, arm64: 276 };

if (process.getuid!() !== 0 || RENAMEAT2[process.arch] === undefined) {
  const why = process.getuid!() !== 0 ? 'needs root (setpriv to another uid)' : `no renameat2 syscall number known for ${process.arch}`;
  if (process.env.CI) t.fail(`plan-removal-race ${why}; CI runs as root on x86_64`);
  else t.plan(0, why);
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
    // renameat2(AT_FDCWD, d, AT_FDCWD, l, RENAME_EXCHANGE), over and over, for at most 20 s.
    const swapper = `my $end = time + 20; while (time < $end) { syscall(${RENAMEAT2[process.arch]}, -100, $ARGV[0], -100, $ARGV[1], 2); }`;
    plant();
    const racer = spawn('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', PERL, '-e', swapper, join(vm, 'd'), join(vm, 'l')], { stdio: 'ignore' });
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
