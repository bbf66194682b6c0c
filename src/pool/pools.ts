import { journal } from './journal-entries.js';
import { ConflictError, HostError } from '../errors.js';
import type { PoolSpec } from '../config/pool-xml.js';
import type { NetdevName, PciAddress } from '../types.js';
import { knownVfNetdevs, pfError } from './allocation.js';
import { activeDrawers, poolUse, refuseDriverClash, unionUse, usesVf, vfioKeepers } from './pool-use.js';
import { boundByPlan, emptyPfs, planPoolStart, planPoolStop, type PfFacts, type StopPlan } from './activation.js';
import type { Context } from './context.js';
import { findVfUses } from './in-use.js';
import { applyPlan, describeAction, type Action } from './plan.js';
import type { ActivePool, BoundVf, VfpoolState } from '../state/schema.js';
import { crashPoint } from '../util/crash-point.js';
import { selfStartTicks } from '../util/process.js';
import { changeUnderWay, interruptedChange, refuseChanging } from './pool-changes.js';
import { describeGonePort, ownerEnv, pruneGonePorts, type OwnerEnv } from './owners.js';
import { recordedPfsNow } from './pf-identity.js';

/**
 * Reads what the planners need about each PF; a missing PF is an error naming the pool, except
 * with `gone` (stopping), where a PF that no longer exists has no VFs left to remove: it is
 * listed there instead, so a pool whose NIC was unplugged can still be stopped.
 */
async function gatherFacts(ctx: Context, pool: PoolSpec, pfs: NetdevName[], state: VfpoolState, gone?: NetdevName[], env?: OwnerEnv): Promise<Map<NetdevName, PfFacts>> {
  const facts = new Map<NetdevName, PfFacts>();
  for (const pf of pfs) {
    let info;
    try {
      info = await ctx.host.getPf(pf);
    } catch (err) {
      if (err instanceof HostError && err.code === 'ENOENT' && gone) {
        gone.push(pf);
        continue;
      }
      throw pfError(pool, pf, err);
    }
    const vfs = await ctx.host.listVfs(pf);
    facts.set(pf, { info, vfs, uses: await findVfUses(ctx.host, state, vfs, undefined, env) });
  }
  return facts;
}

export interface StartResult {
  pool: PoolSpec;
  actions: Action[];
  applied: boolean;
  /**
   * Members that name nothing on this host (a typo, an unplugged NIC): not an error, the rest
   * of the pool works and the member counts once it exists, but said, so a typo is not found
   * only when a guest is refused.
   */
  unresolved: string[];
}

/** Decisions about VFs heal the records whose owner is gone (see owners.ts). */
function healPorts(ctx: Context, state: VfpoolState): OwnerEnv {
  const env = ownerEnv(ctx.settings);
  for (const { port } of pruneGonePorts(state, env)) ctx.log.info(describeGonePort(port));
  return env;
}

async function pfCounts(ctx: Context, pfs: NetdevName[]): Promise<Array<{ pf: NetdevName; numVfs: number }>> {
  const out: Array<{ pf: NetdevName; numVfs: number }> = [];
  for (const pf of pfs) {
    const n = await ctx.host.getPf(pf).then((i) => i.numVfs, () => null);
    if (n !== null) out.push({ pf, numVfs: n });
  }
  return out;
}

/**
 * Starts a pool: activates its VFs (seed 000) and records it as running. Already running is an
 * error for a person (`net-start`, like virsh) but not for libvirt's hook, which may call start
 * for a pool that vfpool itself started before (then the plan is usually empty: N -> N).
 *
 * The state lock is held only to check, plan and record the intent (`change`: these PFs are
 * changing, from these counts), never while VFs are created (up to the settle wait): guests
 * of other PFs proceed, guests of these PFs are told to try again. A process killed between
 * the intent and the end leaves the intent, which `vfpool reconcile` or the next start/stop
 * of the pool mends (crash points `net-start:*`).
 */
export async function startPool(
  ctx: Context,
  pool: PoolSpec,
  xml: string,
  opts: { dryRun?: boolean; allowActive?: boolean } = {},
): Promise<StartResult> {
  const activatedNow = pool.pfs.filter((p) => p.numVfs !== null).map((p) => ({ pf: p.dev, numVfs: p.numVfs! }));
  let pfs: NetdevName[] = pool.pfs.map((p) => p.dev);
  let bound: BoundVf[] = [];
  let pfAddresses: Array<{ pf: NetdevName; address: PciAddress }> = [];
  let unresolved: string[] = [];
  const plan = async (state: VfpoolState, env?: OwnerEnv): Promise<Action[]> => {
    const existing = state.pools[pool.name];
    const mendable = existing !== undefined && interruptedChange(existing) !== null;
    if (existing && !opts.allowActive && !mendable) {
      throw new ConflictError(`pool '${pool.name}' is already active`, `stop it with \`vfpool net-destroy ${pool.name}\` first`);
    }
    const known = knownVfNetdevs(state);
    unresolved = [];
    const use = await poolUse(ctx, pool, known, unresolved);
    pfs = [...new Set([...pfs, ...use.keys()])];
    refuseChanging(state, pfs);
    const facts = await gatherFacts(ctx, pool, pfs, state, undefined, env);
    unresolved.push(...emptyPfs(pool, facts));
    const actions = planPoolStart(pool, facts, use, await activeDrawers(ctx, state, pool.name, known));
    await refuseDriverClash(ctx, state, pool, use, known);
    bound = boundByPlan(actions, facts);
    pfAddresses = [...facts].map(([pf, f]) => ({ pf, address: f.info.address }));
    return actions;
  };
  if (opts.dryRun) return { pool, actions: await plan(ctx.store.read()), applied: false, unresolved };
  return startPoolNow().then((r) => (journal.pool(ctx, 'pool-start', pool.name, r.actions), r), (e) => Promise.reject((journal.poolRefused(ctx, pool.name, 'start', e), e)));

  async function startPoolNow(): Promise<StartResult> {
    const log = ctx.log.child(`pool '${pool.name}'`);
    const record = (state: VfpoolState, change: ActivePool['change']) => {
      const previous = state.pools[pool.name];
      state.pools[pool.name] = {
        xml,
        origin: pool.origin,
        startedAt: new Date().toISOString(),
        activated: [...(previous?.activated ?? []).filter((a) => !activatedNow.some((b) => b.pf === a.pf)), ...activatedNow],
        change,
        // A start of a running pool (libvirt's hook) keeps what the first start bound: those VFs are on vfio-pci now.
        bound: [...(previous?.bound ?? []).filter((b) => !bound.some((n) => n.vf === b.vf)), ...bound],
        pfAddresses: [...(previous?.pfAddresses ?? []).filter((a) => !pfAddresses.some((n) => n.pf === a.pf)), ...pfAddresses],
        libvirtStartRefused: null,
      };
    };
    // 1. Under the lock: check, plan, record the intent.
    let runningBefore: ActivePool | undefined;
    const actions = await ctx.store.update(async (state) => {
      const a = await plan(state, healPorts(ctx, state));
      runningBefore = structuredClone(state.pools[pool.name]);
      const changes = a.some((x) => x.kind === 'write-numvfs' || x.kind === 'bind-vfs');
      // Mending a start killed half-way: the counts from before that one are the ones to go back to.
      const earlier = state.pools[pool.name]?.change;
      const before = earlier?.kind === 'starting' ? earlier.from : [];
      const from = changes ? (await pfCounts(ctx, pfs)).map((c) => before.find((b) => b.pf === c.pf) ?? c) : [];
      record(state, changes ? { kind: 'starting', worker: process.pid, workerStart: selfStartTicks(), since: new Date().toISOString(), from } : null);
      return a;
    });
    crashPoint('net-start:intent');
    if (!actions.some((x) => x.kind === 'write-numvfs' || x.kind === 'bind-vfs')) {
      log.info('started (nothing to change)');
      for (const u of unresolved) log.warn(u);
      return { pool, actions, applied: true, unresolved };
    }
    // 2. Without the lock: change the PFs (undone in reverse on failure).
    log.info(`starting: ${actions.length} step(s)`);
    try {
      await applyPlan(ctx.host, actions, log, ctx.apply);
    } catch (err) {
      await ctx.store.update((state) => {
        if (state.pools[pool.name]?.change?.worker !== process.pid) return;
        // Undone: a pool that ran before this start (libvirt's start of a running pool) runs as it did.
        if (runningBefore) state.pools[pool.name] = runningBefore;
        else delete state.pools[pool.name];
      });
      throw err;
    }
    crashPoint('net-start:applied');
    // 3. Under the lock: settled.
    await ctx.store.update((state) => {
      const p = state.pools[pool.name];
      if (p) p.change = null;
      else record(state, null);
    });
    log.info('started');
    for (const u of unresolved) log.warn(u);
    return { pool, actions, applied: true, unresolved };
  }
}

export interface StopResult extends StopPlan {
  pool: string;
  wasActive: boolean;
  applied: boolean;
  /** Activated PFs that no longer exist (nothing to remove on them). */
  gone: NetdevName[];
  /** VFs the start bound to vfio-pci that another active pool keeps there: recorded as bound by that pool now. */
  handedOver: Array<{ pool: string; vf: BoundVf; pfAddr: PciAddress }>;
  /** PFs whose count the start set and that another active pool draws from: that pool removes their VFs at its stop now. */
  countsHandedOver: Array<{ pool: string; pf: NetdevName; numVfs: number; pfAddr: PciAddress }>;
  /** The VFs the start bound (`ActivePool.bound`), under their PFs' names now. */
  bound: BoundVf[];
  /** The PCI address of each PF the stop looked at, by its name now. */
  pfAddrs: Map<NetdevName, PciAddress>;
}

/**
 * Stops a pool: removes the VFs vfpool created for it unless one is in use. `refuse` makes a VF
 * in use an error (a person's `net-destroy`); libvirt's `stopped end` cannot fail, so there the
 * PF is kept, the pool is marked stopped, and the caller reports what was kept. Like the start,
 * the lock is held to decide and record the intent, not while the VFs are removed. A pool whose
 * start was killed half-way (its intent left behind) has that start undone: its PFs go back to
 * their counts from before it (what reconcile does for it too).
 */
export async function stopPool(ctx: Context, name: string, opts: { refuse: boolean; dryRun?: boolean; onlyInterrupted?: boolean }): Promise<StopResult> {
  let undoStart = false;
  const decide = async (state: VfpoolState, env?: OwnerEnv): Promise<StopResult> => {
    const found = state.pools[name];
    // reconcile judged the pool on a read without the lock: a net-start that mended it since is not undone.
    const active = opts.onlyInterrupted && found && !interruptedChange(found) ? undefined : found;
    if (active && active.change?.kind === 'starting' && interruptedChange(active)) undoStart = true;
    if (!active) {
      // A pool neither defined nor running is a typo, not a pool that happens to be stopped.
      if (opts.refuse && ctx.registry.readDefinition(name) === undefined) ctx.registry.unknown(name);
      if (opts.refuse) throw new ConflictError(`pool '${name}' is not active`, `it is stopped already (\`vfpool net-undefine ${name}\` removes its definition)`);
      return { pool: name, wasActive: false, applied: false, actions: [], kept: [], shared: [], gone: [], handedOver: [], countsHandedOver: [], bound: [], pfAddrs: new Map() };
    }
    const underWay = changeUnderWay(active);
    if (underWay) {
      throw new ConflictError(`pool '${name}' is being ${underWay.kind === 'starting' ? 'started' : 'stopped'} by vfpool pid ${underWay.worker}`, 'try again once it is done');
    }
    const pool = ctx.registry.get(name, state);
    // The record names PFs as they were called at the start; each is stopped as the device it was then.
    const { now, gone } = await recordedPfsNow(ctx, name, active);
    const activated = now(active.activated).map((a) => a.pf);
    const bound = now(active.bound);
    const pfs = [...new Set([...activated, ...bound.map((b) => b.pf)])];
    const facts = await gatherFacts(ctx, pool, pfs, state, gone, env);
    const sharers = await activeDrawers(ctx, state, name);
    const keepers = await vfioKeepers(ctx, state, name);
    const vfioKept = unionUse(keepers.map((k) => k.use));
    // Undoing a start puts each PF it counts back to its count from before; one there already
    // (the start had not changed it, or an undo killed before its last write had) is left alone.
    const before = undoStart && active.change?.kind === 'starting' ? now(active.change.from).filter((f) => activated.includes(f.pf) && facts.has(f.pf)) : [];
    const atBefore = (pf: NetdevName) => before.some((f) => f.pf === pf && f.numVfs !== 0 && facts.get(pf)!.info.numVfs === f.numVfs);
    const plan = planPoolStop(pool, activated.filter((pf) => facts.has(pf) && !atBefore(pf)), facts, { refuse: opts.refuse, bound, sharers, vfioKept });
    for (const f of before) {
      if (f.numVfs === 0 || atBefore(f.pf) || plan.kept.some((k) => k.pf === f.pf) || plan.shared.some((k) => k.pf === f.pf)) continue;
      plan.actions.push({ kind: 'write-numvfs', pf: f.pf, from: 0, to: f.numVfs }, { kind: 'await-vfs', pf: f.pf, count: f.numVfs, probed: facts.get(f.pf)!.info.autoprobe });
    }
    const emptied = (pf: NetdevName) => plan.actions.some((a) => a.kind === 'write-numvfs' && a.pf === pf && a.to === 0);
    // What this start bound and another active pool keeps on vfio-pci is that pool's to give back at its stop.
    const handedOver = bound.flatMap((vf) => {
      const to = facts.has(vf.pf) && !emptied(vf.pf) ? keepers.find((k) => usesVf(k.use, vf.pf, vf.vf)) : undefined;
      return to ? [{ pool: to.pool, vf, pfAddr: facts.get(vf.pf)!.info.address }] : [];
    });
    // The VFs its count made that another active pool draws from are that pool's to remove at its stop.
    const countsHandedOver = now(active.activated).flatMap((a) => {
      const to = plan.shared.some((x) => x.pf === a.pf) ? sharers.get(a.pf)?.[0] : undefined;
      return to ? [{ pool: to, pf: a.pf, numVfs: a.numVfs, pfAddr: facts.get(a.pf)!.info.address }] : [];
    });
    const pfAddrs = new Map([...facts].map(([pf, f]) => [pf, f.info.address]));
    const stopped = new Set([...active.activated.map((a) => a.pf), ...activated]);
    return { pool: name, wasActive: true, applied: false, gone: gone.filter((pf) => stopped.has(pf)), handedOver, countsHandedOver, bound, pfAddrs, ...plan };
  };
  if (opts.dryRun) return decide(ctx.store.read());
  return stopPoolNow().then((r) => (r.wasActive && journal.pool(ctx, 'pool-stop', name, r.actions), r), (e) => Promise.reject((journal.poolRefused(ctx, name, 'stop', e), e)));

  async function stopPoolNow(): Promise<StopResult> {
    const log = ctx.log.child(`pool '${name}'`);
    const r = await ctx.store.update(async (state) => {
      const d = await decide(state, healPorts(ctx, state));
      if (!d.wasActive) return d;
      // libvirt's stop kept these (a VF in use): `vfpool reconcile` removes them once none is.
      for (const { pf } of d.kept) {
        const pfAddr = d.pfAddrs.get(pf);
        state.leftovers = [...state.leftovers.filter((l) => l.pf !== pf), { pool: name, pf, ...(pfAddr ? { pfAddr } : {}), since: new Date().toISOString() }];
      }
      const p = state.pools[name]!;
      for (const { pool, vf, pfAddr } of d.handedOver) {
        const keeper = state.pools[pool];
        if (!keeper || keeper.bound.some((b) => b.vf === vf.vf)) continue;
        keeper.bound.push(vf);
        knowPf(keeper, vf.pf, pfAddr);
      }
      for (const { pool, pf, numVfs, pfAddr } of d.countsHandedOver) {
        const keeper = state.pools[pool];
        if (!keeper || keeper.activated.some((a) => a.pf === pf)) continue;
        keeper.activated.push({ pf, numVfs });
        knowPf(keeper, pf, pfAddr);
      }
      handBackOnRelease(state, d.bound.filter((b) => !d.handedOver.some((h) => h.vf.vf === b.vf)), d);
      const since = new Date().toISOString();
      if (d.actions.length === 0) delete state.pools[name];
      // An undo killed half-way is still an interrupted start: the next reconcile undoes it to the same counts.
      else if (undoStart && p.change?.kind === 'starting') p.change = { ...p.change, worker: process.pid, workerStart: selfStartTicks(), since };
      else p.change = { kind: 'stopping', worker: process.pid, workerStart: selfStartTicks(), since, from: await pfCounts(ctx, d.actions.flatMap((a) => (a.kind === 'write-numvfs' ? [a.pf] : []))) };
      return d;
    });
    if (!r.wasActive) return r;
    crashPoint('net-destroy:intent');
    if (r.actions.length) {
      log.info(`stopping: ${r.actions.length} step(s)`);
      try {
        await applyPlan(ctx.host, r.actions, log, ctx.apply);
      } catch (err) {
        // A failed stop leaves the pool active; a failed undo of a start, still an interrupted start.
        if (!undoStart) {
          await ctx.store.update((state) => {
            const p = state.pools[name];
            if (p?.change?.worker === process.pid) p.change = null;
          });
        }
        throw err;
      }
      crashPoint('net-destroy:applied');
      await ctx.store.update((state) => {
        if (state.pools[name]?.change?.worker === process.pid) delete state.pools[name];
      });
    }
    for (const k of r.kept) log.warn(k.reason);
    for (const k of r.shared) log.info(k.reason);
    for (const h of r.countsHandedOver) log.info(`${h.pf}'s ${h.numVfs} VFs are left to active pool '${h.pool}', whose stop removes them`);
    for (const h of r.handedOver) log.info(`${h.vf.vf} stays on vfio-pci for active pool '${h.pool}', whose stop gives it back its driver (${h.vf.driver ?? 'none'})`);
    for (const pf of r.gone) log.warn(`PF ${pf} no longer exists: nothing to remove on it`);
    log.info('stopped');
    return { ...r, applied: true };
  }
}

/** Records a PF another pool's stop left to `keeper`, with its PCI address, under its name now. */
function knowPf(keeper: ActivePool, pf: NetdevName, address: PciAddress): void {
  if (!keeper.pfAddresses?.some((a) => a.pf === pf)) keeper.pfAddresses = [...(keeper.pfAddresses ?? []), { pf, address }];
}

/**
 * A VF the start bound to vfio-pci that the stop cannot give its driver back now, because a
 * guest of vfpool's holds it: its record takes the driver (and netdev) from before the start as
 * the one to restore, so the guest's release gives it back instead of leaving it on vfio-pci
 * once the pool, and what it bound, is forgotten.
 */
function handBackOnRelease(state: VfpoolState, bound: BoundVf[], stop: StopPlan): void {
  const handled = (b: BoundVf) =>
    stop.shared.some((x) => x.pf === b.pf) ||
    stop.actions.some((a) => (a.kind === 'write-numvfs' && a.pf === b.pf && a.to === 0) || (a.kind === 'bind-vfs' && Array.isArray(a.vfs) && a.vfs.includes(b.vf)));
  for (const b of bound) {
    const held = state.allocations.find((a) => a.vfAddr === b.vf && a.saved?.driver === 'vfio-pci');
    if (!held || handled(b)) continue;
    held.saved = { ...held.saved!, driver: b.driver, netdev: b.netdev ?? held.saved!.netdev };
  }
}

/** A pool whose start or stop was killed half-way, and what `vfpool reconcile` did (or would do) about it. */
export interface MendedPool {
  pool: string;
  /** The interrupted change. */
  interrupted: 'start' | 'stop';
  what: string;
}

/**
 * Mends the pools whose start or stop was killed half-way (their `change` left by a dead
 * process): a start is undone (each PF back to the count it had, when none of its VFs is in
 * use), a stop is finished. For `vfpool reconcile`, which reports them; with `dryRun`, only
 * says what it would do.
 */
export async function mendPools(ctx: Context, opts: { dryRun?: boolean } = {}): Promise<MendedPool[]> {
  const done: MendedPool[] = [];
  const state = ctx.store.read();
  for (const [name, p] of Object.entries(state.pools)) {
    const change = interruptedChange(p);
    if (!change) continue;
    const interrupted = change.kind === 'stopping' ? 'stop' : 'start';
    const keptOf = (r: StopResult) => (r.kept.length ? ` (${r.kept.map((k) => k.reason).join('; ')})` : '');
    if (opts.dryRun) {
      const r = await stopPool(ctx, name, { refuse: false, dryRun: true });
      const verb = interrupted === 'stop' ? 'would finish its interrupted stop' : 'would undo its interrupted start';
      done.push({ pool: name, interrupted, what: `${verb} (vfpool pid ${change.worker} is gone)${keptOf(r)}` });
      continue;
    }
    if (interrupted === 'stop') {
      const r = await stopPool(ctx, name, { refuse: false, onlyInterrupted: true });
      if (r.wasActive) done.push({ pool: name, interrupted, what: `finished its interrupted stop${keptOf(r)}` });
      continue;
    }
    // The start had replaced other VFs on a PF it counts: the undo puts that count back.
    const r = await stopPool(ctx, name, { refuse: false, onlyInterrupted: true });
    if (r.wasActive) done.push({ pool: name, interrupted, what: `undid its interrupted start${keptOf(r)}` });
  }
  return done;
}

export function formatPlan(actions: Action[]): string[] {
  return actions.length ? actions.map((a, i) => `${i + 1}. ${describeAction(a)}`) : ['nothing to do'];
}
