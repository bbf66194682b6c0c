import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { scratchDir } from './scratch.js';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.js';
import { createContext, type Context } from '../../src/pool/context.js';
import { parsePoolXml } from '../../src/config/pool-xml.js';
import { startPool } from '../../src/pool/pools.js';
import { SimHost } from '../../src/host/sim-host.js';
import type { SimSeed } from '../../src/host/sim-kernel.js';

/** A private vfpool world on a simulated host: config, state and the sim file in a testdir. */
export interface SimEnv {
  dir: string;
  hostFile: string;
  settings: Settings;
  /** The environment an entry point spawned as a process needs to see the same world. */
  env: Record<string, string>;
  ctx: Context;
  sim: SimHost;
  /** Writes `$VFPOOL_CONFIG_DIR/networks/NAME.xml`. */
  definePool(name: string, xml: string): void;
  /** Defines the pool and starts it (`net-define`, `net-start`): guests get VFs of started pools only. */
  addPool(name: string, xml: string): Promise<void>;
}

export function makeSimEnv(t: Test, seed: SimSeed = { pfs: [{ name: 'eth1', totalVfs: 8 }] }): SimEnv {
  const dir = scratchDir(t);
  const hostFile = join(dir, 'host.json');
  writeFileSync(hostFile, JSON.stringify(seed));
  const settings: Settings = {
    ...DEFAULT_SETTINGS,
    configDir: join(dir, 'etc'),
    stateDir: join(dir, 'run'),
    journalDir: join(dir, 'journal'),
    host: `sim:${hostFile}`,
  };
  mkdirSync(join(settings.configDir, 'networks'), { recursive: true });
  const ctx = createContext(settings, 'test');
  ctx.apply = { settleTimeoutMs: 2000, pollMs: 5 };
  return {
    dir,
    hostFile,
    settings,
    env: {
      VFPOOL_CONFIG_DIR: settings.configDir,
      VFPOOL_STATE_DIR: settings.stateDir,
      VFPOOL_HOST: settings.host,
      VFPOOL_JOURNAL_DIR: settings.journalDir,
    },
    ctx,
    sim: new SimHost(hostFile),
    definePool(name, xml) {
      writeFileSync(join(settings.configDir, 'networks', `${name}.xml`), xml);
    },
    async addPool(name, xml) {
      this.definePool(name, xml);
      await startPool(ctx, parsePoolXml(xml, name), xml);
    },
  };
}

export const SEED_000_POOL = `<network><name>sriov-pool</name>
  <forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>`;
