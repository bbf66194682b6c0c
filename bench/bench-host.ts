import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
