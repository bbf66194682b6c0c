import { spawn } from 'node:child_process';

/** A real process to stand in for QEMU: the sim counts a vfio holder only while its pid lives. */
export function spawnSleeper(): { pid: number; kill: () => Promise<void> } {
  const p = spawn('sleep', ['600'], { stdio: 'ignore' });
  // Once it exited (by a signal too: then exitCode stays null), killing again is a no-op.
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  return {
    pid: p.pid!,
    kill: () => {
      if (p.exitCode === null && p.signalCode === null) p.kill();
      return exited;
    },
  };
}
