import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { prepareGuest } from '../../src/pool/guests.js';
import { reconcile } from '../../src/pool/reconcile.js';
import { migrationPool } from '../../src/migrate/pool-port.js';
import type { MacAddress } from '../../src/types.js';
import { noVfSettings } from '../../src/vf-settings.js';
import type { StateStore } from '../../src/state/store.js';
import { fsError } from '../../src/util/fs-errors.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, POOLS, type GuestWorld } from '../helpers/guest-world.js';

/**
 * The state directory's file system full (or read-only) in the middle of a prepare: the state
 * write that fails leaves the file as it was, and whatever the prepare had changed on the VFs
 * is put back on the host, with one line naming the domain and the file.
 */
const spec = () => parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33' vlan='100' trust='on'/><vfpool:hostdev pool='hd' mac='52:54:00:11:22:34'/>` }), 'vm1');

/**
 * The store, with its state writes failing from write number `from` on (1-based; 0: never): the
 * update runs, then the write fails as a full file system makes it fail (nothing written).
 */
function fullFrom(store: StateStore, from: number): { store: StateStore; writes: () => number } {
  let n = 0;
  const full = new Proxy(store, {
    get(target, prop) {
      if (prop !== 'update') {
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      }
      return <R>(fn: Parameters<StateStore['update']>[0]) =>
        target.update(async (s) => {
          const r = (await fn(s)) as R;
          if (++n >= from && from > 0) throw fsError(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), target.file, 'writing');
          return r;
        });
    },
  });
  return { store: full, writes: () => n };
}

async function world(t: Parameters<typeof makeGuestWorld>[0]): Promise<GuestWorld> {
  const w = makeGuestWorld(t, 'sim');
  await w.addPool('hd', POOLS.hd);
  return w;
}

const vfsOf = async (w: GuestWorld) => ((await w.snapshot()) as { vfs: unknown }).vfs;

t.test('a prepare whose state write fails (full file system) leaves the VFs as they were, in one line; reconcile drops what the file kept', async (t) => {
  const counting = await world(t);
  const c = fullFrom(counting.ctx.store, 0);
  await prepareGuest({ ...counting.ctx, store: c.store }, spec(), counting.opts);
  t.ok(c.writes() >= 2, `a prepare writes the state ${c.writes()} times`);
  for (let k = 1; k <= c.writes(); k++) {
    const w = await world(t);
    const before = await w.snapshot();
    const f = fullFrom(w.ctx.store, k);
    await t.rejects(prepareGuest({ ...w.ctx, store: f.store }, spec(), w.opts), {
      exitCode: 1,
      message: /^domain 'vm1': writing .*state\.json: its file system is full \(ENOSPC\)$/,
      hint: 'free space on it',
    }, `state write ${k} fails: one line naming the domain and the file`);
    t.same(await vfsOf(w), (before as { vfs: unknown }).vfs, `state write ${k} fails: every VF as before`);
    await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0 });
    t.same(await w.snapshot(), before, `state write ${k} fails: after reconcile, the host and the state as before`);
  }
});

t.test('a prepare whose QEMU plan cannot be written, and whose undoing release cannot write the state, still puts the VFs back', async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  // Where the plan's directory goes, a file: the plan write fails (after the state's Step 3 write).
  mkdirSync(join(w.settings.stateDir, 'qemu'), { recursive: true, mode: 0o711 });
  writeFileSync(join(w.settings.stateDir, 'qemu', 'vm1'), '');
  const counting = fullFrom(w.ctx.store, 0);
  await t.rejects(prepareGuest({ ...w.ctx, store: counting.store }, spec(), w.opts), { exitCode: 1, message: /^domain 'vm1': cannot write the QEMU plan of domain 'vm1'/ });
  t.same(await w.snapshot(), before, 'with the state writable: the release undid the prepare');
  t.equal(counting.writes(), 4, 'reserve, commit, and the release (claim, free)');

  const full = fullFrom(w.ctx.store, counting.writes() - 1); // the writes of reserve and commit succeed, the release's fail
  writeFileSync(join(w.settings.stateDir, 'qemu', 'vm1'), ''); // (the release removed it with the plan)
  await t.rejects(prepareGuest({ ...w.ctx, store: full.store }, spec(), w.opts), { exitCode: 1, message: /^domain 'vm1': cannot write the QEMU plan of domain 'vm1'/ });
  t.same(await vfsOf(w), (before as { vfs: unknown }).vfs, 'with the state full: the VFs restored all the same');
  t.equal(w.ctx.store.read().allocations.length, 2, 'their records stay, as the state file could not change');
  await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0 });
  t.same(await w.snapshot(), before, 'reconcile drops them, nothing left to restore');
});

t.test("a migration's destination prepare whose state write fails after configuring puts the VFs back the same way", async (t) => {
  const w = await world(t);
  const before = await w.snapshot();
  // reserve writes once, configure's commit next: that one fails.
  const pool = migrationPool({ ...w.ctx, store: fullFrom(w.ctx.store, 2).store }, null);
  const settings = { ...noVfSettings(), vlan: 100, trust: true };
  const reserved = await pool.reserve('vm1', [{ id: 'vfpool-vf0', pool: 'hd', mac: '52:54:00:11:22:33' as MacAddress, settings }], null);
  await t.rejects(pool.configure('vm1', reserved), { exitCode: 1, message: /^writing .*state\.json: its file system is full \(ENOSPC\)$/ });
  t.same(await vfsOf(w), (before as { vfs: unknown }).vfs, 'every VF as before');
  await reconcile(w.ctx, { libvirtRunDir: w.opts.libvirtRunDir, graceMs: 0 });
  t.same(await w.snapshot(), before, 'after reconcile, the host and the state as before');
});
