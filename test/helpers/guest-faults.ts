/**
 * The failure-injection suite for guest prepare and release, on the simulated host: a failure at
 * every host call, reads included (the Host suite holds LinuxHost to the same kernel behaviour).
 */
import { cpSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import type { Test } from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { prepareGuest, releaseGuest } from '../../src/pool/guests.js';
import { domainXml } from './libvirt-domains.js';
import { faultyHost, isMutator } from './faulty-host.js';
import { makeGuestWorld, POOLS, type GuestWorld } from './guest-world.js';

export interface FaultCase {
  name: string;
  vfpool: string;
}

async function world(t: Test): Promise<GuestWorld> {
  const w = makeGuestWorld(t, 'sim');
  for (const [n, x] of Object.entries(POOLS)) await w.addPool(n, x);
  return w;
}

/**
 * t.same, without its cost when the two are equal: tap formats both sides of every t.same, which
 * over a suite's hundreds of whole-host snapshots was more CPU than the comparisons. Strictly
 * deep-equal values are t.same too; anything else goes to t.same, which decides and shows the diff.
 */
function sameSnapshot(t: Test, found: unknown, wanted: unknown, message: string): void {
  if (isDeepStrictEqual(found, wanted)) t.pass(message);
  else t.same(found, wanted, message);
}

export function faultSuite(t: Test, c: FaultCase): void {
  const targets = (calls: string[]) => calls.map((_, i) => i + 1);
  // Parsed once: every run gets its own copy of the same spec (the XML does not change).
  const parsed = parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: c.vfpool }), 'vm1');
  const spec = () => structuredClone(parsed);

  t.test(`prepare (${c.name}) failing at each host call leaves everything as before`, async (t) => {
    const base = await world(t);
    const counting = faultyHost(base.host, 0);
    await prepareGuest({ ...base.ctx, host: counting.host }, spec(), base.opts);
    const calls = counting.calls;
    const lastMutation = calls.reduce((last, m, i) => (isMutator(m) ? i + 1 : last), 0);
    t.ok(lastMutation > 0, `${calls.length} host calls, the last change at call ${lastMutation}: ${calls.join(' ')}`);
    let failed = 0;
    for (const k of targets(calls)) {
      const w = await world(t);
      const before = await w.snapshot();
      const f = faultyHost(w.host, k);
      const err = await prepareGuest({ ...w.ctx, host: f.host }, spec(), w.opts).then(
        () => null,
        (e: { exitCode?: number; message?: string }) => e,
      );
      const what = `failure at call ${k} (${f.injected})`;
      if (err) {
        failed++;
        t.equal(err.exitCode, 1, `${what}: exit 1`);
        t.match(err.message, /^domain 'vm1'/, `${what}: the line names the domain`);
        t.match(err.message, /injected failure/, `${what}: and the cause`);
        t.notMatch(err.message, /\n/, `${what}: one line`);
        sameSnapshot(t, await w.snapshot(), before, `${what}: VFs and pool exactly as before`);
      } else {
        // Only a read after the last change may fail without failing the prepare (the final netdev lookup).
        t.ok(k > lastMutation && !isMutator(f.injected ?? ''), `${what}: absorbed, after every change was made`);
        await releaseGuest(w.ctx, 'vm1', { reason: 'test' });
        sameSnapshot(t, await w.snapshot(), before, `${what}: release puts everything back`);
      }
    }
    const mutations = calls.filter(isMutator).length;
    t.ok(failed >= mutations, `${failed} injected failures failed the prepare (${mutations} changes)`);
  });

  t.test(`release (${c.name}) failing at each host call keeps the record; the next release finishes`, async (t) => {
    const base = await world(t);
    const before0 = await base.snapshot();
    await prepareGuest(base.ctx, spec(), base.opts);
    const counting = faultyHost(base.host, 0);
    await releaseGuest({ ...base.ctx, host: counting.host }, 'vm1', { reason: 'count' });
    sameSnapshot(t, await base.snapshot(), before0, 'a release undoes the prepare');
    // Every run starts from the same prepared host: prepared once, its files copied for each
    // run (the prepare is not what these runs test; the prepare suite above is).
    const prepared = await world(t);
    const before = await prepared.snapshot();
    await prepareGuest(prepared.ctx, spec(), prepared.opts);
    for (const k of targets(counting.calls)) {
      const w = await world(t);
      cpSync(prepared.dir, w.dir, { recursive: true, force: true });
      const f = faultyHost(w.host, k);
      await t.rejects(
        releaseGuest({ ...w.ctx, host: f.host }, 'vm1', { reason: 'test' }),
        { exitCode: 1, message: /^domain 'vm1'.*injected failure.*stays allocated/ },
        `failure at call ${k} (${f.injected})`,
      );
      const kept = w.ctx.store.read().allocations;
      t.ok(kept.some((a) => a.phase === 'releasing' && a.lastError), 'the record stays, with its error');
      await releaseGuest(w.ctx, 'vm1', { reason: 'retry' });
      sameSnapshot(t, await w.snapshot(), before, `failure at call ${k}: the retry restores everything`);
    }
  });
}
