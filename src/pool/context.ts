import type { Settings } from '../config/settings.js';
import { createHost } from '../host/index.js';
import type { Host } from '../host/host.js';
import { Logger } from '../util/log.js';
import { DEFAULT_APPLY, type ApplyOptions } from './plan.js';
import { PoolRegistry } from './pool-registry.js';
import { StateStore } from '../state/store.js';

/** Everything a core operation needs, built once by an entry point. */
export interface Context {
  settings: Settings;
  host: Host;
  store: StateStore;
  registry: PoolRegistry;
  log: Logger;
  apply: ApplyOptions;
}

export function createContext(settings: Settings, logContext: string, echo: ((line: string) => void) | null = null): Context {
  const host = createHost(settings);
  const store = new StateStore(settings.stateDir, undefined, () => host.bootId());
  return {
    settings,
    host,
    store,
    registry: new PoolRegistry(settings.configDir, store, settings.libvirtConfDir),
    log: Logger.forStateDir(settings.stateDir, logContext, echo),
    apply: DEFAULT_APPLY,
  };
}
