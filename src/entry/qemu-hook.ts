#!/usr/bin/env node
import { BadInputError, asVfpoolError } from '../errors.js';
import { loadSettings } from '../config/settings.js';
import { parseDomainXml, type DomainSpec } from '../config/domain-xml.js';
import { createContext } from '../pool/context.js';
import { guestOptions, adoptGuest, defaultDeliverGuestDeps, deliverGuestVfs, prepareGuest, releaseGuest, startGuest } from '../pool/guests.js';
import { parseObjectName } from '../types.js';
import { readStdin, runEntry } from './run.js';

/**
 * libvirt's qemu hook: `qemu.d/vfpool DOMAIN OP SUBOP EXTRA`, the domain XML on stdin. The shell
 * shim in hooks/qemu already let through only operations vfpool acts on, for domains that can
 * concern it; this re-checks, because a person can call it directly too.
 *
 * | call                         | does                                                        |
 * |------------------------------|-------------------------------------------------------------|
 * | prepare begin -              | allocate and configure the VFs; any failure undoes all, exit 1 |
 * | start begin -                | hand /dev/vfio/GROUP to QEMU's user (DAC label)              |
 * | started begin                | record QEMU's pid; with hotplug delivery, hand QEMU the vfio groups and device_add the VFs (a failure: exit 1, libvirt stops the guest and calls release) |
 * | reconnect/attach begin       | keep the VFs, record QEMU's pid; never fails (a failing reconnect kills the guest) |
 * | release end REASON           | restore and free, idempotent (REASON may be `failed`)       |
 * | anything else (migrate, restore…) | exit 0, print nothing (empty stdout = XML unchanged)   |
 *
 * stdout stays empty: libvirt reads it as replacement XML at migrate/restore.
 */
const OPS: Record<string, string> = {
  prepare: 'begin',
  start: 'begin',
  started: 'begin',
  reconnect: 'begin',
  attach: 'begin',
  release: 'end',
};

async function main(argv: string[]): Promise<number> {
  const [name, op, sub, extra] = argv;
  if (name === undefined || op === undefined || sub === undefined) {
    throw new BadInputError('usage: qemu DOMAIN OP SUBOP EXTRA (as libvirt calls it), with the domain XML on stdin');
  }
  if (OPS[op] !== sub) return 0;
  parseObjectName(name, 'domain name argument');
  const ctx = createContext(loadSettings(), `qemu-hook ${name} ${op} ${sub}${extra && extra !== '-' ? ` ${extra}` : ''}`);
  const opts = guestOptions('libvirt', ctx.settings);
  const stdin = await readStdin();

  if (op === 'release') {
    // By name alone: freeing must not depend on XML that might not parse any more.
    await releaseGuest(ctx, name, { reason: `libvirt release end ${extra ?? '-'}` });
    return 0;
  }
  const where = `domain '${name}' (${op} ${sub})`;
  const sameDomain = (spec: DomainSpec) => {
    if (spec.name !== name) throw new BadInputError(`${where}: argv names domain '${name}' but stdin describes '${spec.name}'`);
  };
  if (op === 'started' || op === 'reconnect' || op === 'attach') {
    let spec: DomainSpec | null = null;
    try {
      spec = parseDomainXml(stdin, where);
      sameDomain(spec);
      await adoptGuest(ctx, spec, opts, op);
    } catch (err) {
      ctx.log.warn(`${op}: ${asVfpoolError(err).toLine()} (ignored: failing here would make libvirt kill the guest)`);
    }
    // The VFs of a hotplug plan reach QEMU now; without them the guest must not run (exit 1:
    // libvirt stops it and calls release, which restores the VFs).
    if (op === 'started' && spec !== null) await deliverGuestVfs(ctx, spec, opts, defaultDeliverGuestDeps(ctx.settings.procRoot, ctx.settings.devRoot));
    return 0;
  }
  const spec = parseDomainXml(stdin, where);
  sameDomain(spec);
  if (op === 'prepare') await prepareGuest(ctx, spec, opts);
  else await startGuest(ctx, spec, opts);
  return 0;
}

void runEntry(() => main(process.argv.slice(2)));
