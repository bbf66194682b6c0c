import type { Context } from '../pool/context.js';
import { asVfpoolError, BadInputError, ConflictError, HostError } from '../errors.js';
import { describeForMigration, migrateBeginXml, validateDescription, type MigrationDescriptionV1 } from '../migrate/begin.js';
import { dryRunConfirm, dryRunPerform, dryRunPrepare, type DryRunResult } from '../migrate/dry-run.js';
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
import { readLibvirtPid } from '../pool/libvirt-runtime.js';
import { readInputFile } from './run.js';
import { writeStdout } from '../util/stdio.js';
import { monotonicMs } from '../util/process.js';
import { print, printPlan, withDeps, type ClosableQmp } from './migrate-deps.js';
import { migrateWithLibvirt } from './migrate-libvirt.js';

const STAGES = new Set(['begin', 'prepare', 'perform', 'confirm']);

// QEMU run states an incoming migration does not come back from.
const FAILED_STATUSES = ['internal-error', 'shutdown', 'guest-panicked'];

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
  const end = monotonicMs() + seconds * 1000;
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
    if (FAILED_STATUSES.includes(status)) return 'failure';
    if (status === 'running') return 'success';
    if (status !== 'inmigrate' && status !== 'prelaunch') {
      pausedSince ??= monotonicMs();
      if (monotonicMs() - pausedSince >= settleMs) return 'success';
    }
    if (monotonicMs() > end) {
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
      // No socket is a failed incoming QEMU (gone), but also one that runs without vfpool-qemu
      // (its <emulator> QEMU itself, after `virsh restore`): that guest runs, so it keeps its VFs
      // until libvirt releases it, and as nothing can be plugged into it the record goes.
      const pid = readLibvirtPid(ctx.settings, domain);
      if (pid !== null) {
        await fileRecordStore(ctx.settings.stateDir).remove(domain);
        throw new HostError(`domain '${domain}': its QEMU (pid ${pid}) runs but does not answer on vfpool's QMP socket (${err.message}), so its VFs cannot be plugged`, {
          hint: 'start the domain through vfpool-qemu (its <emulator>); its VFs stay held until libvirt releases it',
        });
      }
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
  dryRun: boolean;
  '--'?: string[];
}

/** `vfpool migrate begin|prepare|perform|confirm …` and `vfpool migrate DOMAIN DEST_URI [-- virsh options]`. */
export async function runMigrate(ctx: Context, a: MigrateArgs): Promise<number> {
  if (!STAGES.has(a.first)) return migrateWithLibvirt(ctx, a.first, a.second, (a['--'] ?? []).map(String), a.timeout, { dryRun: a.dryRun, json: a.json });
  const second = a.second === '' ? undefined : a.second;
  const domain = second === undefined ? null : parseObjectName(second, 'domain');
  const needDomain = () => { if (domain === null) throw new BadInputError(`vfpool migrate ${a.first}: name the domain`); return domain; };
  switch (a.first) {
    case 'begin':
      return begin(ctx, a, needDomain);
    case 'prepare':
      return prepare(ctx, a, domain);
    case 'perform':
      return perform(ctx, a, needDomain());
    default: // confirm, the last of STAGES
      return confirm(ctx, a, needDomain());
  }
}

/** begin reads the plan and the state and prints; it changes nothing, so it has no dry run. */
async function begin(ctx: Context, a: MigrateArgs, needDomain: () => string): Promise<number> {
  if (a.dryRun) throw new BadInputError('vfpool migrate begin: --dry-run: begin changes nothing (it prints what it read), so it has no dry run', 'run it without');
  // yargs reads `--xml -` (stdin, as the libvirt hook passes it) as --xml '' and an empty positional.
  const xml = a.xml === '' ? '-' : a.xml;
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

async function readDescription(a: MigrateArgs, domain: string | null): Promise<MigrationDescriptionV1> {
  const file = a.description === '' ? '-' : a.description;
  if (file === undefined) throw new BadInputError('vfpool migrate prepare: give --description FILE (the output of `vfpool migrate begin DOMAIN` on the source)');
  let value: unknown;
  try { value = JSON.parse(await readInputFile(file, 'give the path of a migration description, or - for stdin')); } catch (err) {
    if (err instanceof SyntaxError) throw new BadInputError(`${file}: is not JSON: ${err.message}`, 'give the output of `vfpool migrate begin DOMAIN`');
    throw err;
  }
  const desc = validateDescription(value, file);
  if (domain !== null && domain !== desc.domain) throw new BadInputError(`${file} describes domain '${desc.domain}', not '${domain}'`);
  return desc;
}

async function prepare(ctx: Context, a: MigrateArgs, domain: string | null): Promise<number> {
  const desc = await readDescription(a, domain);
  if (a.dryRun) {
    // Refused as the real run refuses, but not journaled: a dry run leaves no trace.
    printPlan(`migrate prepare ${desc.domain}`, await withDeps(ctx, null, (deps) => dryRunPrepare(deps, desc)), a.json, 'the domain asks for no VF');
    return 0;
  }
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

async function perform(ctx: Context, a: MigrateArgs, d: string): Promise<number> {
  // Checked before anything changes: QEMU would run an exec: URI as a shell command.
  if (a.to !== undefined) checkMigrationUri(a.to, `vfpool migrate perform ${d}`);
  const to = a.to;
  return withDeps(ctx, d, async (deps) => {
    if (a.dryRun) {
      const r = await dryRunPerform(deps, d);
      if (to !== undefined) r.steps.push(`migrate to ${to} over QMP and wait until it completed (up to ${a.timeout} s); if it fails, plug the VFs back`);
      printPlan(`migrate perform ${d}`, r, a.json, 'nothing to unplug', to !== undefined ? { migration: { to, timeoutSeconds: a.timeout } } : {});
      return 0;
    }
    const r = await performStage(deps, d);
    if (to === undefined) {
      print(ctx, r, a.json);
      return 0;
    }
    // Without --json the steps are shown as they are done, before the migration's wait.
    if (!a.json) print(ctx, r, false);
    return migratePerformed(ctx, deps, r, to, a.timeout, a.json);
  });
}

const nothingRecorded = (d: string) => `no migration of '${d}' is recorded on this host (its VFs, if any, are left as they are)`;

async function confirm(ctx: Context, a: MigrateArgs, d: string): Promise<number> {
  if (a.role === undefined) throw new BadInputError('vfpool migrate confirm: give --role source or --role destination');
  const role = a.role;
  const what = `migrate confirm ${d} --role ${role}${a.failed ? ' --failed' : ''}`;
  if (a.waitIncoming !== undefined) {
    if (role !== 'destination') throw new BadInputError(`vfpool migrate confirm ${d}: --wait-incoming waits for an incoming QEMU, so it goes with --role destination`);
    if (a.dryRun) {
      printPlan(what, await planIncoming(ctx, d, a.waitIncoming), a.json, nothingRecorded(d));
      return 0;
    }
    return confirmIncoming(ctx, d, a.waitIncoming, a.json);
  }
  const record = fileRecordStore(ctx.settings.stateDir).read(d);
  // A source whose QEMU is gone has no guest to plug its VFs back into: --failed frees
  // them, without QMP (reconcile points here when no QEMU runs but VFs are held).
  const qemuGone = role === 'source' && a.failed && record !== null
    && ['dead', 'absent'].includes(await probeQmpSocket(domainQmpSocketPath(ctx.settings.stateDir, d)));
  const needsQemu = record !== null && !qemuGone
    && ((role === 'destination' && !a.failed && record.reserved) || (role === 'source' && a.failed && unpluggedByVfpool(record).length > 0));
  const outcome = a.failed ? 'failure' : 'success';
  return withDeps(ctx, needsQemu ? d : null, async (deps) => {
    if (needsQemu && role === 'destination') await refuseBeforeArrival(deps.qmp!, d);
    if (a.dryRun) printPlan(what, await dryRunConfirm({ ...deps, qemuGone }, d, role, outcome), a.json, nothingRecorded(d));
    else print(ctx, await confirmStage({ ...deps, qemuGone }, d, role, outcome), a.json);
    return 0;
  });
}

/**
 * `confirm --role destination --wait-incoming S --dry-run`: what the confirm would do, said at
 * once from QEMU's status now, without waiting. Its outcome is the migration's, still to come:
 * the plug if it arrives, and the release if it fails.
 */
async function planIncoming(ctx: Context, domain: string, seconds: number): Promise<DryRunResult> {
  let qmp: ClosableQmp | undefined;
  try {
    qmp = await connectQmp(domainQmpSocketPath(ctx.settings.stateDir, domain));
  } catch (err) {
    if (!(err instanceof QmpClosedError)) throw err;
  }
  return withDeps(ctx, null, async (deps) => {
    const status = deps.qmp === undefined ? null : await runState(deps.qmp, DEFAULT_TIMEOUTS);
    if (status === null || FAILED_STATUSES.includes(status)) {
      const failed = await dryRunConfirm(deps, domain, 'destination', 'failure');
      const why = status === null ? 'the incoming QEMU is gone' : `its QEMU is in status ${status}`;
      return failed.steps.length ? { ...failed, steps: [`${why}: the migration failed`, ...failed.steps] } : failed;
    }
    const arrived = await dryRunConfirm(deps, domain, 'destination', 'success');
    if (arrived.stage === 'nothing-to-do') return arrived;
    const failed = await dryRunConfirm(deps, domain, 'destination', 'failure', false);
    return {
      ...arrived,
      steps: [
        ...(status === 'running' ? [] : [`wait up to ${seconds} s for the incoming migration to end (its QEMU is in status ${status} now), then, once it arrived:`]),
        ...arrived.steps,
        ...failed.steps.map((l, i) => (i === 0 ? `if it fails instead: ${l}` : l)),
      ],
    };
  }, qmp);
}
