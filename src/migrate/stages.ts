import { BadInputError, ConflictError, RollbackError } from '../errors.js';
import type { DomainPlanV1 } from '../state/domain-plan.js';
import type { MigrationDescriptionV1 } from './begin.js';
import { requestsOf } from './begin.js';
import { deviceOf } from './devices.js';
import { generatedDevices } from '../qemu/running-devices.js';
import type { MigrationPool, MigrationQmp, MigrationRecordStore, MigrationVfRequest, PlanStore, QemuArgvReader, ReservedVf } from './ports.js';
import { DEFAULT_TIMEOUTS, peripheralIds, plugDevice, unplugDevice, type QmpTimeouts } from './qmp-steps.js';
import { newRecord, unpluggedByVfpool, type MigrationRecordV1, type VfMigrationRecord } from '../state/migration-record.js';
import { applySteps, type MigrationStep } from './steps.js';
import { failoverState } from './failover.js';
import { crashPoint } from '../util/crash-point.js';

/** What every stage gets injected (the CLI builds it from the settings; tests from fakes). */
export interface StageDeps {
  plans: PlanStore;
  records: MigrationRecordStore;
  pool: MigrationPool;
  /** The QEMU of the domain on this host; only perform and confirm talk to it. */
  qmp?: MigrationQmp;
  readArgv?: QemuArgvReader;
  timeouts?: QmpTimeouts;
  /**
   * The domain's QEMU no longer runs on this host (its QMP socket is gone or refuses): a failed
   * migration's source confirm then has no guest to plug the VFs back into, and frees them.
   */
  qemuGone?: boolean;
}

export interface StageResult {
  domain: string;
  stage: MigrationRecordV1['stage'] | 'nothing-to-do';
  steps: string[];
}

function need<T>(v: T | undefined, what: string, domain: string): T {
  if (v === undefined) throw new BadInputError(`domain '${domain}': this stage needs ${what}`, 'run it on the host where the domain\'s QEMU runs');
  return v;
}

function vfRecords(plan: DomainPlanV1): VfMigrationRecord[] {
  return plan.vfs.map((v) => ({ id: v.id, kind: v.failoverStandbyMac !== null ? 'failover' : 'plain', mac: v.mac, unplugged: false, unplugMode: null, plugged: false }));
}

/** A record of another, unfinished migration of the same domain blocks a new one. */
function startRecord(deps: StageDeps, domain: string, role: 'source' | 'destination', plan: DomainPlanV1): MigrationRecordV1 {
  const prev = deps.records.read(domain);
  if (prev && prev.role !== role) {
    throw new ConflictError(`domain '${domain}': a migration record says this host is the ${prev.role} of an unfinished migration (stage ${prev.stage})`, `finish it: \`vfpool migrate confirm ${domain} --role ${prev.role} --failed\``);
  }
  return prev ?? newRecord(domain, role, vfRecords(plan));
}

/**
 * Prepare (destination): replacement VFs with the same ids and MACs reserved and configured,
 * and the domain's plan written, so the wrapper of the incoming QEMU (-incoming) finds it:
 * failover primaries go on its command line (hidden until the guest acks), plain VFs wait for
 * confirm. Idempotent: `reserve` returns an existing reservation; the plan is rewritten.
 */
export interface PrepareChecked {
  /** The plan the stage writes, each VF's device still to be picked. */
  skeleton: DomainPlanV1;
  record: MigrationRecordV1;
  requests: MigrationVfRequest[];
}

/**
 * What prepare checks before it reserves anything (its dry run makes the same checks): no
 * unfinished migration of the domain in the other role, no domain of that name already here.
 */
export function checkPrepare(deps: StageDeps, desc: MigrationDescriptionV1): PrepareChecked {
  const domain = desc.domain;
  const skeleton: DomainPlanV1 = {
    version: 1, domain, uuid: desc.uuid, delivery: desc.delivery, sriovNics: desc.sriovNics,
    vfs: desc.vfs.map((v) => ({ id: v.id, host: null, emulatedModel: 'pending', mac: v.mac, failoverStandbyMac: v.failoverStandbyMac, guestAddress: v.guestAddress })),
  };
  const existing = deps.plans.read(domain);
  const record = startRecord(deps, domain, 'destination', skeleton);
  if (existing && !record.reserved) {
    throw new ConflictError(`domain '${domain}' already has a vfpool plan on this host, and no migration put it there`, 'a domain of that name runs here: migrate to another host, or release it first');
  }
  return { skeleton, record, requests: requestsOf(desc) };
}

/** The plan for the incoming QEMU, once the pool named each VF's device; refused if the pool answered another VF or MAC. */
export function planWithReserved(skeleton: DomainPlanV1, vfs: ReservedVf[]): DomainPlanV1 {
  const domain = skeleton.domain;
  const byId = new Map(vfs.map((v) => [v.id, v]));
  return {
    ...skeleton,
    vfs: skeleton.vfs.map((v) => {
      const got = byId.get(v.id);
      if (!got) throw new BadInputError(`domain '${domain}': the pool reserved nothing for ${v.id}`);
      if (v.mac !== null && got.mac !== null && got.mac !== v.mac) throw new BadInputError(`domain '${domain}': ${v.id} reserved with MAC ${got.mac}, the source's is ${v.mac}`);
      return { ...v, host: got.host, emulatedModel: got.emulatedModel, mac: v.mac ?? got.mac };
    }),
  };
}

export const describePlanWrite = (domain: string) => `write the plan of '${domain}' for the incoming QEMU's wrapper`;

export async function prepareStage(deps: StageDeps, desc: MigrationDescriptionV1): Promise<StageResult> {
  const domain = desc.domain;
  const { skeleton, record, requests } = checkPrepare(deps, desc);
  let plan: DomainPlanV1 | null = null;
  const reserveAndConfigure = async () => {
    const vfs = await deps.pool.reserve(domain, requests, desc.uuid);
    plan = planWithReserved(skeleton, vfs);
    await deps.pool.configure(domain, vfs);
  };
  const steps: MigrationStep[] = [
    {
      describe: `reserve ${requests.length} VF(s) for incoming domain '${domain}' (${requests.map((r) => `${r.id}: pool ${r.pool}, mac ${r.mac ?? '-'}`).join('; ')})`,
      run: async () => {
        // Intent first: a stage killed between the pool's commit and the record's `done` must
        // not leave a record that says nothing is reserved while VFs are (found by the crash suite).
        const intended = !record.reserved;
        if (intended) {
          record.reserved = true;
          await deps.records.write(record);
          crashPoint('migrate-prepare:intent');
        }
        try {
          await reserveAndConfigure();
        } catch (err) {
          // The pool rolled its own reservation back; a reservation of an earlier run stays recorded.
          if (intended) {
            record.reserved = false;
            await deps.records.write(record);
          }
          throw err;
        }
      },
      done: (r) => { r.reserved = true; },
      undo: async (r) => { await deps.pool.release(domain, 'migration-failed'); r.reserved = false; },
    },
    {
      describe: describePlanWrite(domain),
      run: async () => { await deps.plans.write(plan!); },
      done: (r) => { r.stage = 'prepared'; },
      undo: async () => { deps.plans.remove(domain); },
    },
  ];
  await deps.records.write(record);
  crashPoint('migrate-prepare:begun');
  try {
    const res = await applySteps(steps, record, deps.records, 'migrate-prepare');
    return { domain, stage: record.stage, steps: res.applied };
  } catch (err) {
    // Rolled back, nothing is held: a record left behind would outlive the refusal and block
    // or mislead the domain's later migrations. After a failed rollback it is what recovers.
    if (!(err instanceof RollbackError)) {
      await deps.records.update(domain, (cur) => (cur !== null && cur.role === 'destination' && !cur.reserved ? null : undefined));
    }
    throw err;
  }
}

/**
 * Perform (source): every VF leaves the guest before its state moves (QEMU refuses to migrate
 * a vfio device). A plain VF: device_del, DEVICE_DELETED, bounded. A failover primary: QEMU
 * unplugs it itself when the migration starts (UNPLUG_PRIMARY, see `migrateWithFailover`) —
 * unless the guest never negotiated failover, then it is unplugged here like a plain VF; a
 * primary the guest never saw (still hidden) has nothing to unplug. Idempotent: a device already
 * gone counts as unplugged.
 */
export async function performStage(deps: StageDeps, domain: string): Promise<StageResult & { failoverPrimaries: string[] }> {
  const { record, steps, failoverPrimaries } = await planPerform(deps, domain);
  await deps.records.write(record);
  crashPoint('migrate-perform:begun');
  const res = await applySteps(steps, record, deps.records, 'migrate-perform');
  return { domain, stage: record.stage, steps: res.applied, failoverPrimaries };
}

export interface PerformPlan {
  record: MigrationRecordV1;
  steps: MigrationStep[];
  /** Negotiated failover primaries: QEMU unplugs them itself when the migration starts. */
  failoverPrimaries: string[];
  /** What the steps device_del. */
  unplug: string[];
}

/**
 * Perform's checks and steps, before anything is recorded or sent (its dry run stops here):
 * QEMU is only asked what it runs (qom-list, and for a failover primary its standby's
 * negotiated features).
 */
export async function planPerform(deps: StageDeps, domain: string): Promise<PerformPlan> {
  const qmp = need(deps.qmp, "a QMP connection to the domain's QEMU", domain);
  const t = deps.timeouts ?? DEFAULT_TIMEOUTS;
  const plan = deps.plans.read(domain);
  if (!plan) throw new BadInputError(`domain '${domain}' has no vfpool plan on this host`, 'run perform on the source host, where the domain was prepared');
  const record = startRecord(deps, domain, 'source', plan);
  const devices = generatedDevices(plan, need(deps.readArgv, "the QEMU's command line", domain)(domain));
  const present = await peripheralIds(qmp, t);
  const failoverPrimaries: string[] = [];
  const unplug: string[] = [];
  const steps: MigrationStep[] = [];
  for (const vf of record.vfs) {
    if (vf.unplugged) continue;
    const where = `domain '${domain}': ${vf.id}`;
    let mode: 'device_del' | 'failover' | 'hidden' = 'device_del';
    if (vf.kind === 'failover') {
      const pv = plan.vfs.find((p) => p.id === vf.id)!;
      const state = await failoverState(qmp, pv, devices, present, t);
      if (state === 'hidden') mode = 'hidden';
      else if (state === 'negotiated') { failoverPrimaries.push(vf.id); continue; }
    }
    const device = deviceOf(devices, vf.id, where);
    if (mode === 'device_del') unplug.push(vf.id);
    steps.push({
      describe: mode === 'hidden' ? `${vf.id}: failover primary still hidden (the guest never acked failover): nothing to unplug` : `device_del ${vf.id} on the source QEMU, wait for DEVICE_DELETED (${t.unplug} ms)`,
      run: async () => {
        if (mode !== 'device_del') return;
        // Intent first: a perform killed between device_del and its record must not leave a
        // record that says the VF is in the guest while it is gone, or a failed migration's
        // confirm would not plug it back (found by the crash suite).
        if (vf.unplugMode !== 'device_del') {
          vf.unplugMode = 'device_del';
          await deps.records.write(record);
          crashPoint('migrate-perform:intent');
        }
        await unplugDevice(qmp, vf.id, where, t);
      },
      done: (r) => { const x = r.vfs.find((y) => y.id === vf.id)!; x.unplugged = true; x.unplugMode = mode; },
      undo: mode === 'hidden' ? null : async (r) => {
        await plugDevice(qmp, device, where, t);
        const x = r.vfs.find((y) => y.id === vf.id)!;
        x.unplugged = false; x.unplugMode = null;
      },
    });
  }
  steps.push({ describe: `source of '${domain}' ready to migrate`, run: async () => {}, done: (r) => { r.stage = 'performed'; }, undo: null });
  return { record, steps, failoverPrimaries, unplug };
}

/**
 * Confirm. Success on the source: its VFs restored and freed, plan and record gone. Success on
 * the destination: the plain VFs plugged with the generated devices (failover primaries QEMU
 * already re-plugs when the guest acks). Failure on the source: the VFs perform unplugged are
 * plugged back (QEMU re-plugs failover primaries itself when a migration fails), or, if its
 * QEMU is gone, restored and freed. Failure on the destination: its reservation restored and
 * freed, plan gone. Re-runnable: each step checks QEMU and the record first, and the record goes
 * last, so a record gone means the confirm finished (or reconcile found nothing left to confirm).
 */
export async function confirmStage(deps: StageDeps, domain: string, role: 'source' | 'destination', outcome: 'success' | 'failure'): Promise<StageResult> {
  const planned = planConfirm(deps, domain, role, outcome);
  if (!planned) return { domain, stage: 'nothing-to-do', steps: [] };
  const { record, steps } = planned;
  const res = await applySteps(steps, record, deps.records, `migrate-confirm-${role}`);
  crashPoint(`migrate-confirm-${role}:applied`);
  await deps.records.remove(domain);
  return { domain, stage: record.stage, steps: res.applied };
}

export const describeRelease = (domain: string, reason: 'migrated' | 'migration-failed') => `restore and free the VFs of '${domain}' on this host (${reason})`;

/**
 * Confirm's checks and steps, before anything is done (its dry run stops here); null: no
 * migration is recorded, nothing to do.
 */
export function planConfirm(deps: StageDeps, domain: string, role: 'source' | 'destination', outcome: 'success' | 'failure'): { record: MigrationRecordV1; steps: MigrationStep[] } | null {
  const t = deps.timeouts ?? DEFAULT_TIMEOUTS;
  const record = deps.records.read(domain);
  if (record && record.role !== role) {
    throw new ConflictError(`domain '${domain}': this host is the ${record.role} of the migration, not the ${role}`, `run \`vfpool migrate confirm ${domain} --role ${record.role}\``);
  }
  const steps: MigrationStep[] = [];
  const releaseHere = (reason: 'migrated' | 'migration-failed'): MigrationStep => ({
    describe: describeRelease(domain, reason),
    run: async () => { await deps.pool.release(domain, reason); deps.plans.remove(domain); },
    explain: () => deps.pool.planRelease(domain),
    done: (r) => { r.reserved = false; r.stage = outcome === 'success' ? 'confirmed-success' : 'confirmed-failure'; },
    undo: null,
  });
  const plugAll = (ids: string[]): MigrationStep[] => {
    if (ids.length === 0) return [];
    const qmp = need(deps.qmp, "a QMP connection to the domain's QEMU", domain);
    const plan = deps.plans.read(domain);
    if (!plan) throw new BadInputError(`domain '${domain}' has no vfpool plan on this host`, `confirm ${role} runs where the domain's QEMU runs`);
    const devices = generatedDevices(plan, need(deps.readArgv, "the QEMU's command line", domain)(domain));
    return ids.map((id) => {
      const device = deviceOf(devices, id, `domain '${domain}': ${id}`);
      return {
        describe: `device_add ${id} (${device.driver}${device.mac ? `, mac ${device.mac}` : ''}) on bus ${device.bus}`,
        run: async () => { await plugDevice(qmp, device, `domain '${domain}': ${id}`, t); },
        done: (r) => { const x = r.vfs.find((y) => y.id === id); if (x) { x.plugged = true; x.unplugged = false; } },
        undo: async (r) => { await unplugDevice(qmp, id, `domain '${domain}': ${id}`, t); const x = r.vfs.find((y) => y.id === id); if (x) x.plugged = false; },
      };
    });
  };

  if (!record) {
    // A confirm that finished, run again, or a domain that never migrated: nothing says its VFs
    // belong to a migration, and freeing them would pull them from under a running guest.
    return null;
  }
  if (role === 'source' && outcome === 'success') steps.push(releaseHere('migrated'));
  if (role === 'destination' && !record.reserved) {
    // A prepare that reserved nothing (refused: an older vfpool kept such records), or a failed
    // migration's confirm run again after its release was recorded: whatever the domain holds
    // here now, this migration does not, and a guest of that name may run on it.
    steps.push({
      describe: `nothing is reserved on this host for the migration of '${domain}': its VFs, if any, are left as they are`,
      run: async () => {},
      done: (r) => { r.stage = outcome === 'success' ? 'confirmed-success' : 'confirmed-failure'; },
      undo: null,
    });
  } else if (role === 'destination' && outcome === 'failure') steps.push(releaseHere('migration-failed'));
  else if (role === 'destination' && outcome === 'success') {
    steps.push(...plugAll(record.vfs.filter((v) => v.kind === 'plain' && !v.plugged).map((v) => v.id)));
    steps.push({ describe: `'${domain}' arrived`, run: async () => {}, done: (r) => { r.stage = 'confirmed-success'; }, undo: null });
  }
  if (role === 'source' && outcome === 'failure' && deps.qemuGone) {
    steps.push({ describe: `no QEMU of '${domain}' runs on this host: nothing to plug its VFs back into`, run: async () => {}, done: () => {}, undo: null });
    steps.push(releaseHere('migration-failed'));
  } else if (role === 'source' && outcome === 'failure') {
    steps.push(...plugAll(unpluggedByVfpool(record).map((v) => v.id)));
    steps.push({ describe: `'${domain}' stays on the source`, run: async () => {}, done: (r) => { r.stage = 'confirmed-failure'; }, undo: null });
  }
  return { record, steps };
}
