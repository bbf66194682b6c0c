import { spawn } from 'node:child_process';

/** A real process to stand in for QEMU: the sim counts a vfio holder only while its pid lives. */
export function spawnSleeper(): { pid: number; kill: () => Promise<void> } {
  const p = spawn('sleep', ['600'], { stdio: 'ignore' });
  return {
    pid: p.pid!,
    kill: () => new Promise<void>((r) => (p.exitCode !== null ? r() : (p.once('exit', () => r()), p.kill()))),
  };
}
