import type { Context } from '../pool/context.js';
import { BadInputError, HostError } from '../errors.js';
import { dryRunPerform } from '../migrate/dry-run.js';
import { DEFAULT_TIMEOUTS, peripheralIds } from '../migrate/qmp-steps.js';
import { virshQmp } from '../migrate/qmp-port.js';
import { confirmStage, describeRelease, performStage, type StageDeps } from '../migrate/stages.js';
import { checkDestination, checkVirsh, runVirsh, virshFailure } from '../migrate/virsh.js';
import { parseObjectName } from '../types.js';
import { monotonicMs } from '../util/process.js';
import { printPlan, say, withDeps } from './migrate-deps.js';

// virsh migrate options vfpool passes on; anything else is refused (the list is the argv, never a shell line).
const VIRSH_OPT = /^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.:/@,+=-]*)?$|^[A-Za-z0-9_.:/@,+=-]+$/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * With libvirt: perform here (plain VFs unplugged over vfpool's QMP socket), `virsh migrate
 * --live`, then confirm: the source's VFs restored and freed (libvirt's `release end migrated`
 * does the same, idempotently), and the destination checked through its libvirt until its plain
 * VFs are plugged (its own vfpool plugs them once the incoming migration ends). On a failed
 * migration the source's VFs are plugged back. With `dryRun`, the same checks and the plan.
 */
export async function migrateWithLibvirt(ctx: Context, domainRaw: string, destUri: string | undefined, virshOpts: string[], timeout: number, opts: { dryRun: boolean; json: boolean }): Promise<number> {
  const domain = parseObjectName(domainRaw, 'domain');
  if (destUri === undefined || !/^[a-z0-9+]+:\/\/[A-Za-z0-9_.:@\[\]-]*\/[A-Za-z0-9_./?=&-]*$/.test(destUri)) {
    throw new BadInputError(`vfpool migrate ${domain}: '${destUri ?? ''}' is not a libvirt URI`, 'e.g. qemu+tcp://dest.example/system or qemu+ssh://dest/system');
  }
  for (const o of virshOpts) if (!VIRSH_OPT.test(o)) throw new BadInputError(`vfpool migrate: '${o}' is not a virsh migrate option vfpool passes on`, 'give options as --name or --name=value');
  const what = `vfpool migrate ${domain}`;
  // Before anything changes: a virsh that cannot be started, found only at `virsh migrate`, failed
  // the migration with the VFs already out of the guest, until someone confirmed it.
  await checkVirsh(what);
  await checkDestination(destUri, what);
  const virshArgs = ['migrate', '--live', ...virshOpts, domain, destUri];
  return withDeps(ctx, domain, async (deps) => {
    // Read before virsh runs: libvirt's `release end migrated` removes the plan meanwhile.
    const plain = (deps.plans.read(domain)?.vfs ?? []).filter((v) => v.failoverStandbyMac === null).map((v) => v.id);
    if (opts.dryRun) {
      const performed = await dryRunPerform(deps, domain);
      const steps = [
        ...performed.steps,
        `run virsh ${virshArgs.join(' ')} (up to ${timeout} s); if it fails, plug the VFs back`,
        describeRelease(domain, 'migrated'),
        ...(await deps.pool.planRelease(domain)),
        ...(plain.length ? [`check through ${destUri} (virsh qemu-monitor-command) that ${plain.join(', ')} ${plain.length === 1 ? 'is' : 'are'} plugged there, up to 60 s`] : []),
      ];
      printPlan(`migrate ${domain} ${destUri}`, { steps }, opts.json, '', { domain, to: destUri, virsh: ['virsh', ...virshArgs] });
      return 0;
    }
    const performed = await performStage(deps, domain);
    for (const s of performed.steps) say(ctx, `${domain}: ${s}`);
    const t0 = monotonicMs();
    let r;
    try {
      r = await runVirsh(virshArgs, what, timeout * 1000);
    } catch (err) {
      await plugBack(ctx, deps, domain); // virsh vanished since it was checked
      throw err;
    }
    if (r.exitCode !== 0) {
      await plugBack(ctx, deps, domain);
      throw new HostError(`virsh migrate --live ${domain} ${destUri} failed: ${virshFailure(r, timeout * 1000)}`, { hint: 'the domain stays on this host with its VFs plugged back' });
    }
    say(ctx, `${domain}: virsh migrate --live to ${destUri} took ${monotonicMs() - t0} ms`);
    const done = await confirmStage(deps, domain, 'source', 'success');
    for (const s of done.steps) say(ctx, `${domain}: ${s}`);
    if (plain.length === 0) return 0;
    // Destination: its own vfpool plugs the plain VFs once the incoming migration ends (it
    // alone knows which VFs it reserved); check through its libvirt, bounded.
    const dest = virshQmp(destUri, domain);
    const end = monotonicMs() + 60_000;
    for (;;) {
      const ids = await peripheralIds(dest, DEFAULT_TIMEOUTS);
      const missing = plain.filter((id) => !ids.has(id));
      if (missing.length === 0) break;
      if (monotonicMs() > end) {
        throw new HostError(`${domain} runs on ${destUri} but ${missing.join(', ')} did not appear in its QEMU within 60 s`, { hint: `on the destination, run \`vfpool migrate confirm ${domain} --role destination\`` });
      }
      await sleep(500);
    }
    say(ctx, `${domain}: ${plain.join(', ')} plugged on ${destUri}`);
    return 0;
  });
}

/** The source confirm of a failed migration: the VFs perform unplugged go back into the guest. */
async function plugBack(ctx: Context, deps: StageDeps, domain: string): Promise<void> {
  const undo = await confirmStage(deps, domain, 'source', 'failure');
  for (const s of undo.steps) say(ctx, `${domain}: ${s}`);
}
