import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { adoptGuest, prepareGuest, startGuest } from '../../src/pool/guests.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { faultyHost } from '../helpers/faulty-host.js';
import { makeGuestWorld, POOLS, type GuestWorld } from '../helpers/guest-world.js';
import { fakeLibvirtQemu } from '../helpers/libvirt-qemu.js';

const VFPOOL = `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01'/>
           <vfpool:hostdev pool='hd' mac='52:54:00:00:00:02'/>`;
const spec = (stage: 'prepare' | 'start') => parseDomainXml(domainXml(stage, { name: 'vm1', vfpool: VFPOOL }), 'vm1');

async function prepared(t: Parameters<typeof makeGuestWorld>[0]): Promise<GuestWorld> {
  const w = makeGuestWorld(t, 'sim');
  for (const [n, x] of Object.entries(POOLS)) await w.addPool(n, x);
  const r = await prepareGuest(w.ctx, spec('prepare'), w.opts);
  t.equal(r.vfs.length, 2);
  return w;
}

t.test('start: a failed hand-over of the second VF\'s group leaves the host and the state as before', async (t) => {
  // Where the second setVfioGroupOwner falls, learnt on a twin world.
  const twin = await prepared(t);
  const counting = faultyHost(twin.host, 0);
  const ok = await startGuest({ ...twin.ctx, host: counting.host }, spec('start'), twin.opts);
  t.equal(ok.handedOver.length, 2, 'both groups are handed over when nothing fails');
  const owners = counting.calls.flatMap((m, i) => (m === 'setVfioGroupOwner' ? [i + 1] : []));
  t.equal(owners.length, 2);

  const w = await prepared(t);
  const before = await w.snapshot();
  const failing = faultyHost(w.host, owners[1]!);
  await t.rejects(startGuest({ ...w.ctx, host: failing.host }, spec('start'), w.opts), { exitCode: 1, message: /^domain 'vm1', pool 'hd', VF .*injected failure in setVfioGroupOwner/ });
  t.equal(failing.injected, 'setVfioGroupOwner');
  t.same(await w.snapshot(), before, 'every /dev/vfio group has its owner back and every record its vfio owner state');
  for (const a of w.ctx.store.read().allocations) t.equal(a.vfioOwner, null, `${a.vfAddr}: no vfio owner recorded`);

  // And a later start works as if the failed one never happened.
  const again = await startGuest(w.ctx, spec('start'), w.opts);
  t.equal(again.handedOver.length, 2);
  t.same(w.ctx.store.read().allocations.map((a) => a.vfioOwner), [
    { saved: { uid: 0, gid: 0 }, granted: { uid: 64055, gid: 64055 } },
    { saved: { uid: 0, gid: 0 }, granted: { uid: 64055, gid: 64055 } },
  ]);
});

t.test('started after start recorded the pid: no lock, no write', async (t) => {
  const w = await prepared(t);
  fakeLibvirtQemu({ libvirtRunDir: w.opts.libvirtRunDir, procRoot: w.settings.procRoot }, 'vm1');
  await startGuest(w.ctx, spec('start'), w.opts);
  t.same(w.ctx.store.read().allocations.map((a) => a.owner.pid), [process.pid, process.pid], 'start begin recorded the pid');

  const file = w.ctx.store.file;
  const stat = statSync(file);
  const text = readFileSync(file, 'utf8');
  let updates = 0;
  const update = w.ctx.store.update.bind(w.ctx.store);
  w.ctx.store.update = (fn) => {
    updates++;
    return update(fn);
  };
  for (const op of ['started', 'reconnect', 'attach']) {
    t.same(await adoptGuest(w.ctx, spec('start'), w.opts, op), { domain: 'vm1', vfs: 2, pid: process.pid }, `${op}: same answer`);
  }
  t.equal(updates, 0, 'the state lock was never taken');
  const after = statSync(file);
  t.equal(after.ino, stat.ino, 'state.json was not replaced');
  t.equal(after.mtimeMs, stat.mtimeMs, 'state.json was not written');
  t.equal(readFileSync(file, 'utf8'), text);

  // A pid that is not recorded yet is still written.
  await w.ctx.store.update((s) => {
    s.allocations[1]!.owner.pid = null;
  });
  updates = 0;
  await adoptGuest(w.ctx, spec('start'), w.opts, 'started');
  t.equal(updates, 1);
  t.same(w.ctx.store.read().allocations.map((a) => a.owner.pid), [process.pid, process.pid]);
});
