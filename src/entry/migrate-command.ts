import type { Context } from '../pool/context.js';
import { asVfpoolError, BadInputError, ConflictError, HostError } from '../errors.js';
import { describeForMigration, migrateBeginXml, validateDescription } from '../migrate/begin.js';
import { checkMigrationUri, migrateOverQmp } from '../migrate/failover.js';
import type { MigrationQmp } from '../migrate/ports.js';
import { DEFAULT_TIMEOUTS, runState } from '../migrate/qmp-steps.js';
import { connectQmp } from '../migrate/qmp-port.js';
import { QmpClosedError } from '../qemu/qmp.js';
import { fileRecordStore, unpluggedByVfpool } from '../state/migration-record.js';
import { confirmStage, performStage, prepareStage, type StageDeps, type StageResult } from '../migrate/stages.js';
import { domainQmpSocketPath, readDomainPlan } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { crashPoint } from '../util/crash-point.js';
import { requestLookup } from '../migrate/pool-port.js';
import { journal } from '../pool/journal-entries.js';
import { probeQmpSocket } from '../qemu/qmp-probe.js';
import { readInputFile } from './run.js';
import { writeStdout } from '../util/stdio.js';
import { print, withDeps, type ClosableQmp } from './migrate-deps.js';
import { migrateWithLibvirt } from './migrate-libvirt.js';

const STAGES = new Set(['begin', 'prepare', 'perform', 'confirm']);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// libvirt keeps the destination paused until its Finish phase resumes it ('cont'). A device_add
// of a hidden failover primary sent in that window wedged QEMU 10.0 under TCG (qmp_device_add
// never came back from drain_call_rcu, and libvirt's monitor with it: 2 of 4 libvirt-pair runs
// once the CLI started fast enough to land there). So the plug waits for the guest to run; a
// destination left paused on purpose (`virsh migrate --suspend`, -S by hand) is confirmed once it
// has stayed paused this long.
const PAUSED_SETTLE_MS = 5000;

/**
 * PAUSED_SETTLE_MS, or what `VFPOOL_TEST_PAUSED_SETTLE_MS` (tests only: whole milliseconds)
 * says: the in-process test of this rule need not spend 5 s of `npm test` waiting. Unset or not
 * a number of milliseconds (production), 5 s.
 */
export function pausedSettleMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.VFPOOL_TEST_PAUSED_SETTLE_MS;
  return raw !== undefined && /^[0-9]{1,9}$/.test(raw) ? Number(raw) : PAUSED_SETTLE_MS;
}

/** Destination, after the incoming QEMU started: waits (bounded) until the migration ended and the guest runs, then confirms. */
async function waitIncoming(qmp: MigrationQmp, seconds: number): Promise<'success' | 'failure'> {
  const end = Date.now() + seconds * 1000;
  let pausedSince: number | null = null;
  const settleMs = pausedSettleMs();
  for (;;) {
    let status: string;
    try {
      status = ((await qmp.execute('query-status', {}, 5000)) as { status: string }).status;
    } catch {
      // A failed incoming migration ends QEMU (its QMP socket closes).
      return 'failure';
    }
    if (['internal-error', 'shutdown', 'guest-panicked'].includes(status)) return 'failure';
    if (status === 'running') return 'success';
    if (status !== 'inmigrate' && status !== 'prelaunch') {
      pausedSince ??= Date.now();
      if (Date.now() - pausedSince >= settleMs) return 'success';
    }
    if (Date.now() > end) {
      if (pausedSince !== null) return 'success';
      throw new HostError(`the incoming migration did not finish within ${seconds} s`, { hint: 'run `vfpool migrate confirm DOMAIN --role destination` once it has' });
    }
    await sleep(200);
  }
}

/**
 * `confirm DOMAIN --role destination --wait-incoming S`, started detached by the `started` hook
 * (its stderr goes nowhere: what it did and why it failed go to vfpool.log). QEMU removes its
 * sockets when it exits, and an incoming QEMU whose stream does not load exits at once: a QEMU
 * gone before this could connect is a failed migration, whose reservation is freed here.
 */
async function confirmIncoming(ctx: Context, domain: string, seconds: number, json: boolean): Promise<number> {
  try {
    let qmp: ClosableQmp | undefined;
    try {
      qmp = await connectQmp(domainQmpSocketPath(ctx.settings.stateDir, domain));
    } catch (err) {
      if (!(err instanceof QmpClosedError)) throw err;
      ctx.log.info(`migrate ${domain}: the incoming QEMU is gone (${err.message}): the migration failed`);
    }
    return await withDeps(ctx, null, async (deps) => {
      const outcome = deps.qmp === undefined ? 'failure' : await waitIncoming(deps.qmp, seconds);
      print(ctx, await confirmStage(deps, domain, 'destination', outcome), json);
      return 0;
    }, qmp);
  } catch (err) {
    ctx.log.warn(`migrate confirm ${domain} --role destination --wait-incoming failed: ${asVfpoolError(err).toLine()}`);
    throw err;
  }
}

/**
 * `vfpool plug` refuses an incoming QEMU the same way: what the stream carries is not loaded yet,
 * so a VF plugged now would be a device the migration's state does not know, and "arrived" untrue.
 */
async function refuseBeforeArrival(qmp: MigrationQmp, domain: string): Promise<void> {
  const status = await runState(qmp, DEFAULT_TIMEOUTS);
  if (status === 'inmigrate') {
    throw new ConflictError(
      `domain '${domain}': the migration has not arrived yet (its QEMU is in status inmigrate)`,
      `run \`vfpool migrate confirm ${domain} --role destination\` once it completed, or add --wait-incoming SECONDS to wait for it`,
    );
  }
}

/**
 * `perform --to`: QEMU's migration once the VFs are out. A failure plugs them back here (the
 * source confirm of a failed migration); the destination's reservation is its own to free.
 * With --json everything goes in one document, the migration's outcome in `migration`.
 */
async function migratePerformed(ctx: Context, deps: StageDeps, r: StageResult & { failoverPrimaries: string[] }, to: string, timeout: number, json: boolean): Promise<number> {
  const d = r.domain;
  try {
    const m = await migrateOverQmp(deps.qmp!, d, to, r.failoverPrimaries, timeout * 1000);
    const line = `migrated to ${to} in ${m.ms} ms${m.unplugPrimary.length ? ` (QEMU unplugged failover primaries ${m.unplugPrimary.join(', ')})` : ''}`;
    if (json) print(ctx, r, true, { migration: { to, ms: m.ms, unplugPrimary: m.unplugPrimary } });
    else writeStdout(`${d}: ${line}\n`);
    ctx.log.info(`migrate ${d}: ${line}`);
    return 0;
  } catch (err) {
    const failure = asVfpoolError(err);
    const migration = { to, error: failure.message };
    let undo: StageResult;
    try {
      undo = await confirmStage(deps, d, 'source', 'failure');
    } catch (undoErr) {
      if (json) print(ctx, r, true, { migration });
      throw undoErr;
    }
    if (json) print(ctx, { ...undo, steps: [...r.steps, ...undo.steps] }, true, { migration });
    else print(ctx, undo, false);
    if (!(failure instanceof HostError)) throw failure;
    throw new HostError(failure.message, {
      code: failure.code, cause: failure,
      hint: `${d} stays on this host with its VFs plugged back; on the destination, run \`vfpool migrate confirm ${d} --role destination --failed\``,
    });
  }
}

export interface MigrateArgs {
  first: string;
  second?: string;
  xml?: string;
  description?: string;
  to?: string;
  role?: 'source' | 'destination';
  failed: boolean;
  waitIncoming?: number;
  timeout: number;
  json: boolean;
  '--'?: string[];
}

/** `vfpool migrate begin|prepare|perform|confirm …` and `vfpool migrate DOMAIN DEST_URI [-- virsh options]`. */
export async function runMigrate(ctx: Context, a: MigrateArgs): Promise<number> {
      if (!STAGES.has(a.first)) return migrateWithLibvirt(ctx, a.first, a.second, (a['--'] ?? []).map(String), a.timeout);
      // yargs reads `--xml -` (stdin, as the libvirt hook passes it) as --xml '' and an empty positional.
      const xml = a.xml === '' ? '-' : a.xml;
      const second = a.second === '' ? undefined : a.second;
      const domain = second === undefined ? null : parseObjectName(second, 'domain');
      const needDomain = () => { if (domain === null) throw new BadInputError(`vfpool migrate ${a.first}: name the domain`); return domain; };
      switch (a.first) {
        case 'begin': {
          if (xml !== undefined) {
            const r = migrateBeginXml(await readInputFile(xml, 'give the path of a domain XML, or - for stdin'), () => null, xml === '-' ? 'migrate begin (stdin)' : xml);
            for (const m of r.mapped) ctx.log.info(m);
            writeStdout(r.xml);
            return 0;
          }
          const d = needDomain();
          const plan = readDomainPlan(ctx.settings.stateDir, d);
          if (!plan) throw new BadInputError(`domain '${d}' has no vfpool plan on this host`, 'run begin on the source host, where the domain was prepared');
          const desc = describeForMigration(plan, requestLookup(ctx));
          crashPoint('migrate-begin:described');
          writeStdout(JSON.stringify(desc, null, 2) + '\n');
          return 0;
        }
        case 'prepare': {
          if (a.description === '') a.description = '-';
          if (a.description === undefined) throw new BadInputError('vfpool migrate prepare: give --description FILE (the output of `vfpool migrate begin DOMAIN` on the source)');
          let value: unknown;
          try { value = JSON.parse(await readInputFile(a.description, 'give the path of a migration description, or - for stdin')); } catch (err) {
            if (err instanceof SyntaxError) throw new BadInputError(`${a.description}: is not JSON: ${err.message}`, 'give the output of `vfpool migrate begin DOMAIN`');
            throw err;
          }
          const desc = validateDescription(value, a.description);
          if (domain !== null && domain !== desc.domain) throw new BadInputError(`${a.description} describes domain '${desc.domain}', not '${domain}'`);
          let prepared: StageResult;
          try {
            prepared = await withDeps(ctx, null, (deps) => prepareStage(deps, desc));
          } catch (err) {
            // In the history as a plain prepare's refusal is: the destination's side of a refused migration.
            journal.prepareFailed(ctx, desc.domain, err);
            throw err;
          }
          print(ctx, prepared, a.json);
          return 0;
        }
        case 'perform': {
          const d = needDomain();
          // Checked before anything changes: QEMU would run an exec: URI as a shell command.
          if (a.to !== undefined) checkMigrationUri(a.to, `vfpool migrate perform ${d}`);
          return withDeps(ctx, d, async (deps) => {
            const r = await performStage(deps, d);
            if (a.to === undefined) {
              print(ctx, r, a.json);
              return 0;
            }
            // Without --json the steps are shown as they are done, before the migration's wait.
            if (!a.json) print(ctx, r, false);
            return migratePerformed(ctx, deps, r, a.to, a.timeout, a.json);
          });
        }
        case 'confirm': {
          const d = needDomain();
          if (a.role === undefined) throw new BadInputError('vfpool migrate confirm: give --role source or --role destination');
          if (a.waitIncoming !== undefined) {
            if (a.role !== 'destination') throw new BadInputError(`vfpool migrate confirm ${d}: --wait-incoming waits for an incoming QEMU, so it goes with --role destination`);
            return confirmIncoming(ctx, d, a.waitIncoming, a.json);
          }
          const role = a.role;
          const record = fileRecordStore(ctx.settings.stateDir).read(d);
          // A source whose QEMU is gone has no guest to plug its VFs back into: --failed frees
          // them, without QMP (reconcile points here when no QEMU runs but VFs are held).
          const qemuGone = role === 'source' && a.failed && record !== null
            && ['dead', 'absent'].includes(await probeQmpSocket(domainQmpSocketPath(ctx.settings.stateDir, d)));
          const needsQemu = record !== null && !qemuGone
            && ((role === 'destination' && !a.failed && record.reserved) || (role === 'source' && a.failed && unpluggedByVfpool(record).length > 0));
          return withDeps(ctx, needsQemu ? d : null, async (deps) => {
            if (needsQemu && role === 'destination') await refuseBeforeArrival(deps.qmp!, d);
            print(ctx, await confirmStage({ ...deps, qemuGone }, d, role, a.failed ? 'failure' : 'success'), a.json);
            return 0;
          });
        }
      }
      return 2;
}
