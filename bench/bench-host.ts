import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

/** tmpfs's statfs magic (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

/**
 * Where a host keeps what vfpool's state and the kernel's keep: memory. vfpool's state
 * directory is /run/vfpool, a tmpfs on any systemd host, and the simulated host's file stands
 * for sysfs; on a disk, each of their fsyncs, renames and lock directories would wait for the
 * disk's journal, which no real host pays for them. /dev/shm is a tmpfs wherever /run is; the
 * system's temporary directory otherwise (the header says which).
 */
export function memoryDir(): string {
  try {
    if (statfsSync('/dev/shm').type === TMPFS_MAGIC) return '/dev/shm';
  } catch {
    // No /dev/shm: the temporary directory.
  }
  return tmpdir();
}

/**
 * A simulated host in a fresh directory, with the environment libvirt gives a hook (LC_ALL,
 * HOME, its PATH and nothing else) plus vfpool's own paths pointing into that directory: its
 * state and the simulated kernel in memory (memoryDir), as on a real host, and the VF history
 * on disk, as /var/lib/vfpool is (removed when the benchmark exits).
 */
export function benchHost(prefix: string, seed: unknown): { dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(memoryDir(), prefix));
  const diskDir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => rmSync(diskDir, { recursive: true, force: true }));
  const env = {
    LC_ALL: 'C',
    HOME: '/root',
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    VFPOOL_CONFIG_DIR: join(dir, 'etc'),
    VFPOOL_STATE_DIR: join(dir, 'run'),
    // The VF history too: a benchmark must not write into the machine's /var/lib/vfpool.
    VFPOOL_JOURNAL_DIR: join(diskDir, 'journal'),
    VFPOOL_HOST: `sim:${join(dir, 'host.json')}`,
  };
  mkdirSync(join(dir, 'etc/networks'), { recursive: true });
  writeFileSync(join(dir, 'host.json'), JSON.stringify(seed));
  return { dir, env };
}

/**
 * The machine a benchmark ran on, for its header line (the README quotes it): architecture,
 * cores, CPU model, Node, and the load when it started (the ratios are what compare across
 * machines; the milliseconds are this machine's at that load).
 */
export function machine(): string {
  return `${process.arch}, ${availableParallelism()} cores, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}, load ${loadavg()[0]!.toFixed(1)}, state in ${memoryDir()}`;
}
