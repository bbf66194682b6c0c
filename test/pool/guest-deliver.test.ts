import t from 'tap';
import { execa } from 'execa';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { deliverGuestVfs, prepareGuest, type DeliverGuestDeps } from '../../src/pool/guests.js';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { defaultDeliverDeps, type VfioDeliveryRequest } from '../../src/qemu/deliver.js';
import { domainQmpSocketPath, readDomainPlan } from '../../src/state/domain-plan.js';
import { startFakeQmp, type FakeReply } from '../helpers/fake-qmp.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld, POOLS, type GuestWorld } from '../helpers/guest-world.js';

/**
 * `started begin` with hotplug delivery: the vfio groups go to QEMU's pid (deliverVfioToQemu,
 * proven against real QEMU in test/qemu/deliver-real.test.ts, recorded here), then device_add
 * over vfpool's QMP socket (a fake QMP server here) and a bounded wait for query-pci.
 */
const VF = `<vfpool:hostdev pool='hd' mac='52:54:00:11:22:33'/>`;
const spec = (stage: 'prepare' | 'started') => parseDomainXml(domainXml(stage, { name: 'vm1', vfpool: VF, label: '+4242:+4343' }), 'vm1');

interface Setup {
  w: GuestWorld;
  deps: DeliverGuestDeps;
  deliveries: VfioDeliveryRequest[];
  qemuPid: number;
}

async function setup(t: Parameters<typeof makeGuestWorld>[0]): Promise<Setup> {
  const w = makeGuestWorld(t, 'fixture');
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, spec('prepare'), w.opts);
  const plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  t.equal(plan.delivery, 'hotplug');
  // "QEMU": a live process, libvirt's pid file naming it, its command line as the wrapper made it.
  const qemu = execa('sleep', ['60']);
  qemu.catch(() => undefined);
  t.teardown(() => void qemu.kill());
  const qemuPid = qemu.pid!;
  writeFileSync(join(w.opts.libvirtRunDir, 'vm1.pid'), `${qemuPid}\n`);
  const argv = planQemuArgs(plan, parseQemuArgv(['-name', 'guest=vm1,debug-threads=on', '-machine', 'pc-q35-10.0', '-device', '{"driver":"virtio-net-pci","id":"net0","mac":"52:54:00:00:00:09","bus":"pcie.0","addr":"0x3"}']), { qmpSocketPath: domainQmpSocketPath(w.settings.stateDir, 'vm1') }).argv;
  const proc = w.opts.procRoot!; // where vfpool also checks that the pid file names vm1's QEMU
  mkdirSync(join(proc, String(qemuPid)), { recursive: true });
  writeFileSync(join(proc, String(qemuPid), 'cmdline'), ['/usr/bin/qemu-system-x86_64', ...argv, ''].join('\0'));
  const deliveries: VfioDeliveryRequest[] = [];
  const deps: DeliverGuestDeps = {
    deliver: { ...defaultDeliverDeps(), procRoot: proc },
    timeoutMs: 1500,
    deliverVfio: async (req) => {
      deliveries.push(req);
      return { steps: [], privateMountNamespace: true, cgroup: 'none' };
    },
  };
  return { w, deps, deliveries, qemuPid };
}

/** A QEMU whose query-pci lists what was device_add'ed behind its root port (unless `hideAdded`). */
function fakeQemu(opts: { refuse?: string; hideAdded?: boolean } = {}): { handler: (cmd: string, args: unknown) => FakeReply; added: unknown[] } {
  const added: Array<{ id: string }> = [];
  return {
    added,
    handler: (cmd, args) => {
      if (cmd === 'device_add') {
        if (opts.refuse) return { error: { class: 'GenericError', desc: opts.refuse } };
        added.push(args as { id: string });
        return { return: {} };
      }
      if (cmd === 'query-pci') {
        const behind = opts.hideAdded ? [] : added.map((a) => ({ bus: 1, slot: 0, function: 0, qdev_id: a.id, id: { vendor: 0x8086, device: 0x10ca } }));
        return { return: [{ bus: 0, devices: [{ bus: 0, slot: 1, function: 0, qdev_id: 'vfpool-rp0', id: { vendor: 0x1b36, device: 0xc }, pci_bridge: { bus: { number: 1 }, devices: behind } }] }] };
      }
      return { error: { class: 'CommandNotFound', desc: cmd } };
    },
  };
}

t.test('started: memlock for the guest\'s <memory> + 1 GiB, the VF\'s group to the DAC user, device_add into vfpool-rp0, query-pci shows it', async (t) => {
  const { w, deps, deliveries, qemuPid } = await setup(t);
  const q = fakeQemu();
  const qmp = await startFakeQmp(domainQmpSocketPath(w.settings.stateDir, 'vm1'), q.handler);
  t.teardown(() => qmp.close());
  const r = await deliverGuestVfs(w.ctx, spec('started'), w.opts, deps);
  const a = w.ctx.store.read().allocations[0]!;
  t.same(deliveries, [{ pid: qemuPid, groups: [a.iommuGroup], uid: 4242, gid: 4343, memlockBytes: 65536n * 1024n + 1024n ** 3n }]);
  t.same(q.added, [{ driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', host: a.vfAddr }]);
  t.same(r, { domain: 'vm1', added: ['vfpool-vf0'], pid: qemuPid });
  const again = await deliverGuestVfs(w.ctx, spec('started'), w.opts, deps);
  t.same(again.added, [], 'a second call adds nothing: the VF is already there');
  t.equal(q.added.length, 1);
});

t.test('reconnect (onlyIfMissing): a VF already in QEMU is left alone, no vfio step; one a start cut short never plugged is plugged', async (t) => {
  const { w, deps, deliveries, qemuPid } = await setup(t);
  const q = fakeQemu();
  const qmp = await startFakeQmp(domainQmpSocketPath(w.settings.stateDir, 'vm1'), q.handler);
  t.teardown(() => qmp.close());
  const plugged = await deliverGuestVfs(w.ctx, spec('started'), w.opts, deps, { onlyIfMissing: true });
  t.same([plugged, deliveries.length, q.added.length], [{ domain: 'vm1', added: ['vfpool-vf0'], pid: qemuPid }, 1, 1], 'missing: the vfio step, then device_add');
  const again = await deliverGuestVfs(w.ctx, spec('started'), w.opts, deps, { onlyIfMissing: true });
  t.same([again.added, deliveries.length, q.added.length], [[], 1, 1], 'there: nothing done, not even the vfio step');
});

t.test('started: QEMU refusing device_add is one line naming domain, device and QEMU\'s reason', async (t) => {
  const { w, deps } = await setup(t);
  const qmp = await startFakeQmp(domainQmpSocketPath(w.settings.stateDir, 'vm1'), fakeQemu({ refuse: "vfio 0000:00:00.0: Could not open '/dev/vfio/6': No such file or directory" }).handler);
  t.teardown(() => qmp.close());
  const err = await deliverGuestVfs(w.ctx, spec('started'), w.opts, deps).then(() => null, (e: Error & { exitCode: number }) => e);
  t.match(err?.message, /^domain 'vm1': its VFs could not be hotplugged at 'started': device_add of vfpool-vf0 \(vfio-pci host=.*\) into vfpool-rp0 failed: .*Could not open '\/dev\/vfio\/6'/);
  t.equal(err?.exitCode, 1);
  t.notMatch(err?.message, /\n/);
});

t.test('started: a VF that never shows in query-pci fails after the bounded wait', async (t) => {
  const { w, deps } = await setup(t);
  const qmp = await startFakeQmp(domainQmpSocketPath(w.settings.stateDir, 'vm1'), fakeQemu({ hideAdded: true }).handler);
  t.teardown(() => qmp.close());
  // A shorter bound than setup's 1.5 s (which leaves the other cases room on a busy machine): here it
  // is only waited out.
  await t.rejects(deliverGuestVfs(w.ctx, spec('started'), w.opts, { ...deps, timeoutMs: 500 }), { message: /vfpool-vf0 \(vfio-pci\) was added but did not show in QEMU's query-pci within 1 s/, code: 'ETIMEDOUT' });
});

t.test('started: no QMP socket (QEMU not started through the wrapper) and no pid are failures with the cause', async (t) => {
  const { w, deps } = await setup(t);
  await t.rejects(deliverGuestVfs(w.ctx, spec('started'), w.opts, deps), { message: /^domain 'vm1': .*cannot connect to QMP socket .*qmp\.sock: ENOENT/ });
  writeFileSync(join(w.opts.libvirtRunDir, 'vm1.pid'), '999999999\n');
  await t.rejects(deliverGuestVfs(w.ctx, spec('started'), w.opts, deps), { message: /pid file .*vm1\.pid names no running QEMU/ });
});

t.test('started: a cmdline plan (vfpool prepare, emulated stand-ins) does nothing', async (t) => {
  const w = makeGuestWorld(t, 'fixture');
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, spec('prepare'), { ...w.opts, via: 'cli' });
  const r = await deliverGuestVfs(w.ctx, spec('started'), w.opts, { deliver: defaultDeliverDeps(), timeoutMs: 10, deliverVfio: () => Promise.reject(new Error('must not be called')) });
  t.same(r, { domain: 'vm1', added: [], pid: null });
});

t.test('started on a simulated host told to hot-plug its stand-ins (VFPOOL_SIM_DELIVERY=hotplug): no vfio step, the e1000e device_add\'ed with the MAC', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  Object.assign(w.ctx.settings, { simVfDevice: 'e1000e', simDelivery: 'hotplug' });
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, spec('prepare'), w.opts);
  const plan = readDomainPlan(w.settings.stateDir, 'vm1')!;
  t.same([plan.delivery, plan.vfs[0]!.emulatedModel, plan.vfs[0]!.host], ['hotplug', 'e1000e', null], 'the libvirt path real VFs take');
  const qemu = execa('sleep', ['60']);
  qemu.catch(() => undefined);
  t.teardown(() => void qemu.kill());
  writeFileSync(join(w.opts.libvirtRunDir, 'vm1.pid'), `${qemu.pid!}\n`);
  const argv = planQemuArgs(plan, parseQemuArgv(['-name', 'guest=vm1', '-machine', 'pc-q35-10.0']), { qmpSocketPath: domainQmpSocketPath(w.settings.stateDir, 'vm1') }).argv;
  const proc = w.opts.procRoot!; // where vfpool also checks that the pid file names vm1's QEMU
  mkdirSync(join(proc, String(qemu.pid!)), { recursive: true });
  writeFileSync(join(proc, String(qemu.pid!), 'cmdline'), ['/usr/bin/qemu-system-x86_64', ...argv, ''].join('\0'));
  const q = fakeQemu();
  const qmp = await startFakeQmp(domainQmpSocketPath(w.settings.stateDir, 'vm1'), q.handler);
  t.teardown(() => qmp.close());
  const r = await deliverGuestVfs(w.ctx, spec('started'), w.opts, { deliver: { ...defaultDeliverDeps(), procRoot: proc }, timeoutMs: 1500, deliverVfio: () => Promise.reject(new Error('an emulated stand-in needs no vfio group')) });
  t.same(r.added, ['vfpool-vf0']);
  t.match(q.added, [{ driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', mac: '52:54:00:11:22:33' }]);
});

t.test('without VFPOOL_SIM_DELIVERY the stand-ins of a libvirt guest stay on the command line', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  Object.assign(w.ctx.settings, { simVfDevice: 'e1000e' });
  await w.addPool('hd', POOLS.hd);
  await prepareGuest(w.ctx, spec('prepare'), w.opts);
  t.equal(readDomainPlan(w.settings.stateDir, 'vm1')!.delivery, 'cmdline');
});
