/**
 * A world for the hooks as libvirt runs them (test/entry): the seed-000 pool started on a
 * simulated eth1, libvirt's run directory, and the environment a spawned hook sees.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool } from '../../src/pool/pools.js';
import { readStatus } from '../../src/pool/status.js';
import { makeSimEnv, SEED_000_POOL, type SimEnv } from './env.js';
import { REPO, spawnEntry, type Spawned } from './spawn.js';
import { networkHook } from '../../src/entry/main/network-hook.js';
import { qemuHook as qemuHookMain } from '../../src/entry/main/qemu-hook.js';
import { runEntry, runInProcess } from '../../src/entry/run.js';

export const META = `<vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='100'/>`;

export interface HookEnv extends SimEnv {
  hookEnv: Record<string, string>;
  runDir: string;
  /** The hooks' VFPOOL_PROC, where fakeLibvirtQemu writes a QEMU's command line. */
  procRoot: string;
}

export async function setupHookWorld(t: Test): Promise<HookEnv> {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8 }] });
  w.definePool('sriov-pool', SEED_000_POOL);
  // In-process: the hooks are what these tests run as libvirt does (net-start's CLI: cli.test.ts).
  await startPool(w.ctx, parsePoolXml(SEED_000_POOL, 'sriov-pool'), SEED_000_POOL);
  const runDir = join(w.dir, 'libvirt-run');
  mkdirSync(runDir, { recursive: true });
  // The simulated VFs reach the (absent) QEMU as emulated NICs on its command line: `started`
  // then has nothing to hotplug. A test of the hotplug path deletes the setting.
  const procRoot = join(w.dir, 'proc');
  return { ...w, runDir, procRoot, hookEnv: { ...w.env, VFPOOL_LIBVIRT_RUN_DIR: runDir, VFPOOL_PROC: procRoot, VFPOOL_SIM_VF_DEVICE: 'e1000e' } };
}

/** hooks/qemu with libvirt's argv and the domain XML on stdin. */
export const qemuHook = (w: HookEnv, args: string[], stdin: string): Promise<Spawned> => spawnEntry('hooks/qemu', args, { env: w.hookEnv, stdin });

/**
 * The hooks' Node half run in-process (tap's coverage sees it), after the shim's decision:
 * for a call the shim hands to Node (vfpool's domain, pool or XML), this is what the bundle
 * does, without a Node start. The shim's filtering itself is tested through qemuHook/spawnEntry.
 */
export function qemuHookInProcess(env: Record<string, string>, args: string[], stdin: string): Promise<Spawned> {
  return runInProcess(() => runEntry(() => qemuHookMain(args, join(REPO, 'dist/bin/cli.cjs'))), { env, stdin });
}
export function networkHookInProcess(env: Record<string, string>, args: string[], stdin: string): Promise<Spawned> {
  return runInProcess(() => runEntry(() => networkHook(args)), { env, stdin });
}

/** What `vfpool status --json` prints, read in-process (the hooks' effects, from disk). */
export async function hookStatus(w: HookEnv) {
  return JSON.parse(JSON.stringify(await readStatus(w.ctx))) as {
    pfs: Array<{ vfs: Array<{ address: string; mac: string; vlan: number; driver: string; owner: null | { domain: string; pool: string; via: string; pid?: number | null } }> }>;
  };
}
