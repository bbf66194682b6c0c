import { asVfpoolError, BadInputError } from '../../errors.js';
import { loadSettings } from '../../config/settings.js';
import { networkElement, networkName } from '../../config/pool-xml.js';
import { createContext } from '../../pool/context.js';
import { startPool, stopPool } from '../../pool/pools.js';
import { parseObjectName } from '../../types.js';
import { child, parseXml, text } from '../../util/xml.js';
import { quoteInput } from '../../util/quote.js';
import { parseNetworkPort } from '../../config/network-port.js';
import { recordPort, refuseHybridHotplug, removePort } from '../../pool/allocation-ports.js';
import { markLibvirtStartRefused, refuseLibvirtPassthroughOfPf, takeLibvirtStartRefused } from '../../pool/libvirt-forward.js';
import { journal } from '../../pool/journal-entries.js';
import { readStdin } from '../run.js';
import { writeStderr } from '../../util/stdio.js';

/**
 * libvirt's network hook: `network.d/vfpool NAME OP SUBOP -`, `<hookData><network>` on stdin.
 * The shell shim in hooks/network already filtered out networks and operations vfpool has
 * nothing to do with; this re-checks, because a person can call it directly too.
 * Its entry point is src/entry/network-hook.ts (bundled as dist/bin/network-hook.cjs); the
 * tests run this in-process too.
 */
export async function networkHook(argv: string[]): Promise<number> {
  const [name, op, sub] = argv;
  if (name === undefined || op === undefined || sub === undefined) {
    throw new BadInputError('usage: network NAME OP SUBOP EXTRA (as libvirt calls it), with <hookData> on stdin');
  }
  const isPort = (op === 'port-created' || op === 'port-deleted') && sub === 'begin';
  const wanted = (op === 'start' && sub === 'begin') || (op === 'stopped' && sub === 'end') || isPort;
  if (!wanted) return 0;
  // A port may be on any libvirt network, of any guest: their names are libvirt's (anything but
  // '/'), and a macvtap or bridge port that involves no VF must not fail because vfpool could
  // not use them. recordPort checks them once a VF is to be recorded under them.
  if (!isPort) parseObjectName(name, 'network name argument');
  const settings = loadSettings();
  const ctx = createContext(settings, `network-hook ${name} ${op} ${sub}`);
  const where = `libvirt network '${name}' (${op} ${sub})`;
  const stdin = await readStdin();
  const doc = parseXml(stdin, where);
  const net = networkElement(doc, where);
  const xmlName = isPort ? text(net, 'name') : networkName(net, where);
  if (xmlName !== name) throw new BadInputError(`${where}: argv names network ${quoteInput(name)} but stdin describes ${quoteInput(xmlName ?? '')}`);

  if (isPort) {
    // A VF libvirt's own hostdev/passthrough network hands to a guest: record (or veto) it.
    const port = parseNetworkPort(child(doc, 'hookData') ?? doc, where);
    if (op === 'port-created') {
      refuseHybridHotplug(ctx, name, port);
      await recordPort(ctx, name, port);
    } else await removePort(ctx, name, port.uuid);
    return 0;
  }

  if (op === 'start') {
    const runningSince = ctx.store.read().pools[name]?.startedAt;
    try {
      const source = ctx.registry.startSource(name, { el: net, xml: stdin, where });
      if (source === undefined) return 0; // not ours
      try {
        await refuseLibvirtPassthroughOfPf(ctx, net, name, where);
      } catch (err) {
        journal.poolRefused(ctx, name, 'start', err);
        throw err;
      }
      const r = await startPool(ctx, source.spec, source.xml, { allowActive: true });
      ctx.log.info(`pool '${name}' started by libvirt (${r.actions.length} step(s))`);
      return 0;
    } catch (err) {
      await markLibvirtStartRefused(ctx, name, runningSince).catch((e: unknown) =>
        ctx.log.warn(`could not mark libvirt's refused start of running pool '${name}' (its stopped end will stop it): ${asVfpoolError(e).message}`));
      throw err;
    }
  }

  // stopped end: libvirt cannot be refused here; VFs in use stay and we say so.
  if (await takeLibvirtStartRefused(ctx, name)) {
    ctx.log.info(`pool '${name}': libvirt's stop after its refused start leaves the pool running, as it was before that start`);
    return 0;
  }
  const r = await stopPool(ctx, name, { refuse: false });
  for (const k of r.kept) writeStderr(`vfpool: warning: pool '${name}': ${k.reason}; \`vfpool reconcile\` removes them once none is in use\n`);
  for (const pf of r.gone) writeStderr(`vfpool: warning: pool '${name}': PF ${pf} no longer exists: nothing to remove on it\n`);
  return 0;
}
