import { BadInputError, asVfpoolError } from '../../errors.js';
import { loadSettings } from '../../config/settings.js';
import { parseDomainXml, type DomainSpec } from '../../config/domain-xml.js';
import { createContext } from '../../pool/context.js';
import { guestOptions, adoptGuest, defaultDeliverGuestDeps, deliverGuestVfs, prepareGuest, releaseGuest, startGuest } from '../../pool/guests.js';
import { dropPortsOfDomain } from '../../pool/allocation-ports.js';
import { parseObjectName } from '../../types.js';
import { migrateBeginXml } from '../../migrate/begin.js';
import { incomingConfirmArgv, isIncomingQemu, recordIncoming, spawnDetached } from '../../migrate/incoming.js';
import { readDomainPlan } from '../../state/domain-plan.js';
import { fileRecordStore } from '../../state/migration-record.js';
import { readLibvirtPid } from '../../pool/guests.js';
import type { Context } from '../../pool/context.js';
import type { GuestOptions } from '../../pool/guests.js';
import { readStdin } from '../run.js';
import { writeStdout } from '../../util/stdio.js';

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
 * | reconnect/attach begin       | keep the VFs, record QEMU's pid; reconnect plugs a hotplug plan's VFs QEMU lacks (a start cut short before started); never fails (a failing reconnect kills the guest) |
 * | started begin (incoming)     | a domain arriving by migration: record it, spawn a detached `vfpool migrate confirm DOMAIN --role destination --wait-incoming S` (plugs the VFs left off once the migration ended) |
 * | migrate begin -              | destination: map a request naming a source-only device to its pool, or refuse (exit 2 cancels the migration); the mapped XML on stdout, nothing when unchanged |
 * | release end REASON           | restore and free, idempotent (REASON may be `failed`, `migrated`) |
 * | anything else (restore…)     | exit 0, print nothing (empty stdout = XML unchanged)        |
 *
 * stdout stays empty: libvirt reads it as replacement XML at migrate/restore. restore begin
 * only offers a saved image's XML for rewriting; libvirt then runs prepare, start and started
 * as for any start. The shim's list of operations (hooks/vfpool-hook) is these keys.
 */
export const QEMU_HOOK_OPS: Record<string, string> = {
  prepare: 'begin',
  start: 'begin',
  started: 'begin',
  reconnect: 'begin',
  attach: 'begin',
  release: 'end',
  migrate: 'begin',
};

/** How long the detached destination confirm waits for the incoming migration to end. */
const INCOMING_WAIT_S = 600;

/**
 * `started` of a QEMU started with -incoming: record the migration and hand over to a detached
 * confirm (libvirt calls no hook once the migration ends). Never throws: a failing `started`
 * would make libvirt kill the incoming guest; the confirm's own failures go to vfpool.log.
 */
async function armIncomingConfirm(ctx: Context, name: string, opts: GuestOptions, cliPath: string): Promise<void> {
  try {
    const pid = readLibvirtPid(opts, name);
    if (pid === null || !isIncomingQemu(ctx.settings.procRoot, pid)) return;
    const plan = readDomainPlan(ctx.settings.stateDir, name);
    if (plan === null) return;
    const record = await recordIncoming(fileRecordStore(ctx.settings.stateDir), plan);
    if (record === null) return;
    // Settings travel in the env.
    const argv = incomingConfirmArgv(cliPath, name, INCOMING_WAIT_S);
    const child = spawnDetached(process.execPath, argv, process.env);
    ctx.log.info(`started (incoming migration): ${record.vfs.filter((v) => v.kind === 'plain').map((v) => v.id).join(', ')} left off; confirm --wait-incoming runs as pid ${child}`);
  } catch (err) {
    ctx.log.warn(`started (incoming migration): ${asVfpoolError(err).toLine()} (ignored: run \`vfpool migrate confirm ${name} --role destination\` once it arrived)`);
  }
}

/**
 * A libvirtd killed after QEMU started and before vfpool's `started` ran leaves a hotplug guest
 * running without its VFs: the daemon after it runs only `reconnect`. So reconnect plugs what
 * is missing. Never throws (a failing reconnect makes libvirt kill the guest): a failure is a
 * warning with the command that plugs them.
 */
async function plugMissingAtReconnect(ctx: Context, spec: DomainSpec, opts: GuestOptions): Promise<void> {
  try {
    const r = await deliverGuestVfs(ctx, spec, opts, defaultDeliverGuestDeps(ctx.settings.procRoot, ctx.settings.devRoot), { onlyIfMissing: true });
    if (r.added.length) ctx.log.warn(`reconnect: ${r.added.join(', ')} had not reached QEMU (its start was cut short before 'started'): plugged now`);
  } catch (err) {
    ctx.log.warn(`reconnect: ${asVfpoolError(err).toLine()} (ignored: failing here would make libvirt kill the guest; run \`vfpool plug ${spec.name}\`)`);
  }
}

/**
 * The hook's main; its entry point is src/entry/qemu-hook.ts (bundled as dist/bin/qemu-hook.cjs),
 * the tests run it in-process too. `cliPath`: the CLI a `started` of an incoming migration
 * spawns the destination's confirm with.
 */
export async function qemuHook(argv: string[], cliPath: string): Promise<number> {
  const [name, op, sub, extra] = argv;
  if (name === undefined || op === undefined || sub === undefined) {
    throw new BadInputError('usage: qemu DOMAIN OP SUBOP EXTRA (as libvirt calls it), with the domain XML on stdin');
  }
  if (!Object.hasOwn(QEMU_HOOK_OPS, op) || QEMU_HOOK_OPS[op] !== sub) return 0;
  parseObjectName(name, 'domain name argument');
  const ctx = createContext(loadSettings(), `qemu-hook ${name} ${op} ${sub}${extra && extra !== '-' ? ` ${extra}` : ''}`);
  const opts = guestOptions('libvirt', ctx.settings);
  const stdin = await readStdin();

  if (op === 'migrate') {
    // libvirt reads stdout as the XML to use; empty keeps its own. A refusal exits non-zero,
    // which cancels the migration before the destination reserves anything.
    const r = migrateBeginXml(stdin, () => null, `domain '${name}' (migrate begin)`);
    for (const m of r.mapped) ctx.log.info(m);
    if (r.mapped.length > 0) writeStdout(r.xml);
    return 0;
  }
  if (op === 'release') {
    // By name alone: freeing must not depend on XML that might not parse any more. Only what
    // libvirt's hook prepared: libvirt ends every start it began with this release, one refused
    // because a QEMU run by hand under that name holds VFs (`vfpool prepare --pid`) included,
    // and those are that QEMU's until `vfpool release` (or reconcile, once it is gone).
    await releaseGuest(ctx, name, { reason: `libvirt release end ${extra ?? '-'}`, preparedBy: 'libvirt' });
    await dropPortsOfDomain(ctx, name);
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
    if (op === 'started' && spec !== null) {
      await deliverGuestVfs(ctx, spec, opts, defaultDeliverGuestDeps(ctx.settings.procRoot, ctx.settings.devRoot));
      await armIncomingConfirm(ctx, name, opts, cliPath);
    }
    if (op === 'reconnect' && spec !== null) await plugMissingAtReconnect(ctx, spec, opts);
    return 0;
  }
  const spec = parseDomainXml(stdin, where);
  sameDomain(spec);
  if (op === 'prepare') await prepareGuest(ctx, spec, opts);
  else await startGuest(ctx, spec, opts);
  return 0;
}
