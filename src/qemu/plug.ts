import { BadInputError, ConflictError, HostError } from '../errors.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { hotplugDevices } from './hotplug.js';
import { QmpClient } from './qmp.js';
import { generatedDevices } from './running-devices.js';

/**
 * `vfpool plug DOMAIN`: for a QEMU run without libvirt, what the `started` hook does for a
 * libvirt guest whose plan says `hotplug` (`vfpool prepare --delivery hotplug`): each VF is
 * device_add'ed over vfpool's QMP socket into the root port the wrapper reserved, and waited
 * for in query-pci. No vfio hand-over is needed: a QEMU a person runs as root already reaches
 * /dev/vfio and has no locked-memory limit; one that does not says so in device_add's answer,
 * which is passed on whole.
 */
export interface PlugDeps {
  /** The argv of the QEMU serving this QMP socket (the devices go where its wrapper reserved ports). */
  readArgv(socketPath: string): string[];
  /** How long each device may take to show in query-pci. */
  timeoutMs: number;
  log?: (line: string) => void;
  /** Everything but the device_add: `added` lists what would be added. */
  dryRun?: boolean;
}

export interface PlugResult {
  domain: string;
  /** Device ids device_add'ed now. */
  added: string[];
  /** Device ids that were on the guest's PCI bus already (a second plug adds nothing). */
  present: string[];
}

export async function plugPlannedVfs(stateDir: string, domainArg: string, deps: PlugDeps): Promise<PlugResult> {
  const domain = parseObjectName(domainArg, 'domain');
  const dom = `domain '${domain}'`;
  const plan = readDomainPlan(stateDir, domain);
  if (plan === null) throw new BadInputError(`${dom} has no vfpool plan on this host`, `prepare it first: \`vfpool prepare --xml FILE --delivery hotplug\``);
  if (plan.delivery !== 'hotplug') {
    throw new BadInputError(`${dom}: its plan puts its VFs on QEMU's command line (delivery ${plan.delivery}), so there is nothing to plug`, `to plug them into a running QEMU, release it and prepare it with \`--delivery hotplug\``);
  }
  const result: PlugResult = { domain, added: [], present: [] };
  if (plan.vfs.length === 0) return result;
  const socket = domainQmpSocketPath(stateDir, domain);
  const qmp = await QmpClient.connect(socket, { timeoutMs: 10_000 }).catch((err: unknown) => {
    throw new HostError(`${dom}: no QEMU answers on vfpool's QMP socket: ${(err as Error).message}`, { hint: 'start it through vfpool-qemu first' });
  });
  try {
    const status = ((await qmp.execute('query-status', undefined, { timeoutMs: 10_000 })) as { status?: string }).status;
    // An incoming QEMU loads the devices the stream carries; what it lacks is plugged once the
    // migration ended, by the migration's confirm, which also records it.
    if (status === 'inmigrate') {
      throw new ConflictError(`${dom}: its QEMU waits for an incoming migration (status inmigrate)`, `its VFs are plugged when it arrived: \`vfpool migrate confirm ${domain} --role destination --wait-incoming SECONDS\``);
    }
    // After a migration arrived, the running QEMU is an ordinary one: generatedDevices ignores -incoming.
    const devices = [...generatedDevices(plan, deps.readArgv(socket)).values()];
    result.added = await hotplugDevices(qmp, devices, { timeoutMs: deps.timeoutMs, log: deps.log, dryRun: deps.dryRun });
    result.present = devices.map((d) => d.id).filter((id) => !result.added.includes(id));
    return result;
  } finally {
    qmp.close();
  }
}
