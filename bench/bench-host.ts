import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A simulated host in a fresh directory, with the environment libvirt gives a hook (LC_ALL,
 * HOME, its PATH and nothing else) plus vfpool's own paths pointing into that directory.
 */
export function benchHost(prefix: string, seed: unknown): { dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const env = {
    LC_ALL: 'C',
    HOME: '/root',
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    VFPOOL_CONFIG_DIR: join(dir, 'etc'),
    VFPOOL_STATE_DIR: join(dir, 'run'),
    // The VF history too: a benchmark must not write into the machine's /var/lib/vfpool.
    VFPOOL_JOURNAL_DIR: join(dir, 'journal'),
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
  return `${process.arch}, ${availableParallelism()} cores, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}, load ${loadavg()[0]!.toFixed(1)}`;
}
