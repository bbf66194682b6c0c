import { statSync } from 'node:fs';
import { errnoOf, HostError } from '../errors.js';
import { readJsonFile, writeJsonFileAtomic } from '../util/json-file.js';
import { crashPoint } from '../util/crash-point.js';
import type { QemuCaps } from './args.js';

interface CachedCaps extends QemuCaps {
  mtimeMs: number;
  size: number;
}

/**
 * Asks the QEMU in use what it supports, instead of trusting a version number (distributions
 * backport): `-device virtio-net-pci,help` lists `sriov-pf` from QEMU 10.1 on. One probe is a
 * QEMU start (~40 ms here); the answer is cached in `cacheFile` per binary path, mtime and size,
 * so a replaced QEMU is asked again. The cache is best effort: an unwritable one costs a probe.
 */
export async function probeQemuCaps(qemu: string, cacheFile: string | null): Promise<QemuCaps> {
  let st;
  try {
    st = statSync(qemu);
  } catch (err) {
    throw new HostError(`QEMU '${qemu}' cannot be run: ${errnoOf(err) ?? (err as Error).message}`, { code: errnoOf(err), hint: 'set VFPOOL_QEMU to the QEMU binary', cause: err });
  }
  if (cacheFile !== null) {
    try {
      const c = readJsonFile<CachedCaps>(cacheFile);
      if (c && c.qemu === qemu && c.mtimeMs === st.mtimeMs && c.size === st.size && typeof c.sriovPf === 'boolean') return { qemu, sriovPf: c.sriovPf };
    } catch {
      // A damaged cache is asked again and rewritten.
    }
  }
  // node:child_process, not execa: the wrapper's bundle stays small (it runs at every guest start);
  // loaded here, when QEMU is asked, not at the start of every CLI command.
  const { execFile } = await import('node:child_process');
  const r = await new Promise<{ code: number | string | null; stdout: string; stderr: string }>((resolve) => {
    execFile(qemu, ['-nodefaults', '-machine', 'none', '-device', 'virtio-net-pci,help'], { env: { ...process.env, LC_ALL: 'C' }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number | string }).code ?? err.signal ?? 'error') : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
  if (r.code !== 0 && !/failover/.test(r.stdout)) {
    throw new HostError(`QEMU '${qemu}' did not list virtio-net-pci's properties (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`, { hint: 'check VFPOOL_QEMU' });
  }
  const caps: QemuCaps = { qemu, sriovPf: /^\s*sriov-pf=/m.test(r.stdout) };
  crashPoint('wrapper:caps-probed');
  if (cacheFile !== null) {
    await writeJsonFileAtomic(cacheFile, { ...caps, mtimeMs: st.mtimeMs, size: st.size } satisfies CachedCaps).catch(() => undefined);
  }
  return caps;
}
