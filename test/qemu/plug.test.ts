import t from 'tap';
import type { Test } from 'tap';
import { join } from 'node:path';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { plugPlannedVfs } from '../../src/qemu/plug.js';
import { domainQmpSocketPath, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress } from '../../src/types.js';
import { BadInputError, ConflictError, HostError } from '../../src/errors.js';
import { startFakeQmp, type FakeReply } from '../helpers/fake-qmp.js';
import { scratchDir } from '../helpers/scratch.js';

/**
 * `vfpool plug`: a hotplug plan's VFs device_add'ed into the running QEMU (a fake QMP server
 * here; the real QEMU 10 in `npm run demo`, test/demo.test.ts), into the root port the wrapper
 * reserved, waited for in query-pci; refused, with the way out, when there is nothing to plug.
 */
const MAC = '52:54:00:11:22:33' as MacAddress;
const plan = (delivery: DomainPlanV1['delivery'], vfs = 1): DomainPlanV1 => ({
  version: 1, domain: 'vm1', uuid: null, delivery, sriovNics: [],
  vfs: Array.from({ length: vfs }, () => ({ id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: MAC, failoverStandbyMac: null, guestAddress: null })),
});
const BASE = ['-name', 'guest=vm1', '-machine', 'q35', '-m', '128', '-nodefaults', '-display', 'none'];

async function world(t: Test, p: DomainPlanV1 | null) {
  const stateDir = join(scratchDir(t), 'run');
  if (p) await writeDomainPlan(stateDir, p, { uid: process.getuid!(), gid: process.getgid!() });
  const socket = domainQmpSocketPath(stateDir, 'vm1');
  // The argv the wrapper gave QEMU for this plan, as /proc/PID/cmdline shows it.
  const argv = (extra: string[] = []) => (p ? planQemuArgs(p, parseQemuArgv([...BASE, ...extra]), { qmpSocketPath: socket }).argv : BASE);
  return { stateDir, socket, argv };
}

/** A QEMU that lists behind vfpool-rp0 (numbered bus 1) what was device_add'ed, in `status`. */
function fakeQemu(opts: { status?: string; refuse?: string } = {}) {
  const added: Array<Record<string, unknown>> = [];
  const handler = (cmd: string, args: unknown): FakeReply => {
    if (cmd === 'query-status') return { return: { status: opts.status ?? 'running', running: true } };
    if (cmd === 'device_add') {
      if (opts.refuse) return { error: { class: 'GenericError', desc: opts.refuse } };
      added.push(args as Record<string, unknown>);
      return { return: {} };
    }
    if (cmd === 'query-pci') {
      const behind = added.map((a) => ({ bus: 1, slot: 0, function: 0, qdev_id: a.id, id: { vendor: 0x8086, device: 0x10d3 } }));
      return { return: [{ bus: 0, devices: [{ bus: 0, slot: 0x1e, function: 0, qdev_id: 'vfpool-rp0', id: { vendor: 0x1b36, device: 0xc }, pci_bridge: { bus: { number: 1, secondary: 1 }, devices: behind } }] }] };
    }
    return { error: { class: 'CommandNotFound', desc: cmd } };
  };
  return { added, handler };
}

t.test('a hotplug plan: the VF device_add\'ed into vfpool-rp0 with its MAC, waited for in query-pci; a second plug adds nothing', async (t) => {
  const w = await world(t, plan('hotplug'));
  const q = fakeQemu();
  const server = await startFakeQmp(w.socket, q.handler);
  t.teardown(() => server.close());
  const logged: string[] = [];
  const argvAsked: string[] = [];
  const deps = { readArgv: (s: string) => (argvAsked.push(s), w.argv()), timeoutMs: 2000, log: (l: string) => logged.push(l) };
  t.same(await plugPlannedVfs(w.stateDir, 'vm1', deps), { domain: 'vm1', added: ['vfpool-vf0'], present: [] });
  t.same(argvAsked, [w.socket], 'the argv of the QEMU behind vfpool\'s QMP socket');
  t.equal(q.added.length, 1);
  t.match(q.added[0], { driver: 'e1000e', id: 'vfpool-vf0', bus: 'vfpool-rp0', addr: '0x0', mac: MAC });
  t.same(logged, ['device_add vfpool-vf0 (e1000e) into vfpool-rp0']);
  t.same(await plugPlannedVfs(w.stateDir, 'vm1', deps), { domain: 'vm1', added: [], present: ['vfpool-vf0'] });
  t.equal(q.added.length, 1, 'no second device_add');
});

t.test('a QEMU that arrived by migration (-incoming on its argv, now running) is plugged like any other', async (t) => {
  const w = await world(t, plan('hotplug'));
  const q = fakeQemu();
  const server = await startFakeQmp(w.socket, q.handler);
  t.teardown(() => server.close());
  const r = await plugPlannedVfs(w.stateDir, 'vm1', { readArgv: () => w.argv(['-incoming', 'tcp:127.0.0.1:4444']), timeoutMs: 2000 });
  t.same(r.added, ['vfpool-vf0']);
});

t.test('refusals: no plan, a cmdline plan (exit 2), no QEMU (exit 1), an incoming QEMU (exit 3), QEMU refusing device_add', async (t) => {
  const none = await world(t, null);
  const deps = { readArgv: () => BASE, timeoutMs: 500 };
  await t.rejects(plugPlannedVfs(none.stateDir, 'vm1', deps), new BadInputError("domain 'vm1' has no vfpool plan on this host", 'prepare it first: `vfpool prepare --xml FILE --delivery hotplug`'));
  await t.rejects(plugPlannedVfs(none.stateDir, '../x', deps), BadInputError, 'the domain name is validated before any path is built');

  const cmdline = await world(t, plan('cmdline'));
  const e = await plugPlannedVfs(cmdline.stateDir, 'vm1', deps).catch((x: unknown) => x);
  t.ok(e instanceof BadInputError);
  t.equal((e as BadInputError).toLine(), "domain 'vm1': its plan puts its VFs on QEMU's command line (delivery cmdline), so there is nothing to plug: to plug them into a running QEMU, release it and prepare it with `--delivery hotplug`");

  const noVfs = await world(t, plan('hotplug', 0));
  t.same(await plugPlannedVfs(noVfs.stateDir, 'vm1', deps), { domain: 'vm1', added: [], present: [] }, 'a plan without VFs needs no QEMU');

  const down = await world(t, plan('hotplug'));
  const gone = await plugPlannedVfs(down.stateDir, 'vm1', deps).catch((x: unknown) => x);
  t.ok(gone instanceof HostError);
  t.match((gone as HostError).toLine(), /^domain 'vm1': no QEMU answers on vfpool's QMP socket: .*qmp\.sock.*: start it through vfpool-qemu first$/);

  const incoming = await world(t, plan('hotplug'));
  const qi = fakeQemu({ status: 'inmigrate' });
  const si = await startFakeQmp(incoming.socket, qi.handler);
  t.teardown(() => si.close());
  const c = await plugPlannedVfs(incoming.stateDir, 'vm1', { ...deps, readArgv: () => incoming.argv() }).catch((x: unknown) => x);
  t.ok(c instanceof ConflictError);
  t.equal((c as ConflictError).exitCode, 3);
  t.match((c as ConflictError).toLine(), /waits for an incoming migration \(status inmigrate\): .*vfpool migrate confirm vm1 --role destination/);
  t.same(qi.added, [], 'nothing added to an incoming QEMU');

  const refusing = await world(t, plan('hotplug'));
  const qr = fakeQemu({ refuse: "Bus 'vfpool-rp0' not found" });
  const sr = await startFakeQmp(refusing.socket, qr.handler);
  t.teardown(() => sr.close());
  await t.rejects(plugPlannedVfs(refusing.stateDir, 'vm1', { ...deps, readArgv: () => refusing.argv() }), /device_add of vfpool-vf0 \(e1000e\) into vfpool-rp0 failed: .*Bus 'vfpool-rp0' not found/);

  const notWrapped = await world(t, plan('hotplug'));
  const sn = await startFakeQmp(notWrapped.socket, fakeQemu().handler);
  t.teardown(() => sn.close());
  await t.rejects(plugPlannedVfs(notWrapped.stateDir, 'vm1', deps), /the running QEMU has no root port vfpool-rp0 on its command line/, 'a QEMU not started through the wrapper');
});
