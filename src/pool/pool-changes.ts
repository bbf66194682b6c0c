import { ConflictError } from '../errors.js';
import type { ActivePool, PoolChange, VfpoolState } from '../state/schema.js';
import { isSameProcessAlive } from '../util/process.js';

// A pool's start or stop under way (its `change`, set while VF counts change outside the lock)
// or left half-way by a killed vfpool: who must wait, who is refused, what reconcile mends.

/**
 * The start or stop a killed vfpool left on a pool (its worker is gone, and is not this process),
 * or null: guests of the pool are refused, doctor says so, and reconcile (or the next start)
 * undoes such a start and finishes such a stop.
 */
export function interruptedChange(p: ActivePool): PoolChange | null {
  return p.change !== null && p.change.worker !== process.pid && !isSameProcessAlive(p.change.worker, p.change.workerStart) ? p.change : null;
}

/** The start or stop another vfpool process is making now (its worker lives), or null: wait for it. */
export function changeUnderWay(p: ActivePool): PoolChange | null {
  return p.change !== null && p.change.worker !== process.pid && isSameProcessAlive(p.change.worker, p.change.workerStart) ? p.change : null;
}

/**
 * The PFs a live vfpool process is changing right now (a start or stop between its intent and
 * its end), with who: a guest of such a PF gets a clear "try again" instead of a VF that is
 * about to vanish. Changes whose worker died are not listed: they are mended, not waited for.
 */
export function changingPfs(state: VfpoolState): Map<string, { pool: string; worker: number; kind: string }> {
  const out = new Map<string, { pool: string; worker: number; kind: string }>();
  for (const [name, p] of Object.entries(state.pools)) {
    const c = changeUnderWay(p);
    if (!c) continue;
    for (const f of c.from) out.set(f.pf, { pool: name, worker: c.worker, kind: c.kind });
  }
  return out;
}

export function pfChangingError(pf: string, c: { pool: string; worker: number }): ConflictError {
  return new ConflictError(`PF ${pf} is being reconfigured by pool '${c.pool}' (vfpool pid ${c.worker})`, 'try again in a few seconds');
}

export function refuseChanging(state: VfpoolState, pfs: string[]): void {
  const changing = changingPfs(state);
  for (const pf of pfs) {
    const c = changing.get(pf);
    if (c) throw pfChangingError(pf, c);
  }
}
