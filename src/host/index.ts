import { BadInputError } from '../errors.js';
import type { Host } from './host.js';
import { LinuxHost } from './linux-host.js';
import { SimHost } from './sim-host.js';

/** The settings a Host is built from (a subset of config/settings.ts' Settings, kept here so host/ needs nothing above it). */
export interface HostSettings {
  /** `linux` or `sim:FILE`. */
  host: string;
  sysfsRoot: string;
  procRoot: string;
  devRoot: string;
  ipPath: string;
}

export function createHost(settings: HostSettings): Host {
  if (settings.host === 'linux') {
    return new LinuxHost({ sysfsRoot: settings.sysfsRoot, procRoot: settings.procRoot, devRoot: settings.devRoot, ipPath: settings.ipPath });
  }
  if (settings.host.startsWith('sim:') && settings.host.length > 4) return new SimHost(settings.host.slice(4));
  throw new BadInputError(`VFPOOL_HOST '${settings.host}' is not 'linux' or 'sim:FILE'`, 'set it in the environment or in vfpool.conf');
}
