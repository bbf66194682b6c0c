import type { Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { planQemuArgs } from '../../src/qemu/args.js';
import { qmpMonitorArgs } from '../../src/qemu/qmp-monitor.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { stripVfpoolDevices } from '../../src/qemu/running-devices.js';
import { domainQmpSocketPath, readDomainPlan, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress } from '../../src/types.js';
import { makeSimEnv, type SimEnv } from './env.js';
import { domainXml } from './libvirt-domains.js';
import { libvirtQ35Argv } from './qemu-argv.js';
import { runCliInProcess as cli } from './cli-in-process.js';
import { startFakeQemu, type FakeQemu } from './fake-qemu.js';
import { seededWorlds } from './file-tree.js';

/**
 * The hosts of the migration tests that talk to a running QEMU: a source where vm1 runs with
 * one VF, and a destination whose incoming QEMU waits for it. QEMU is an in-process QMP server
 * on the domain's socket (fake-qemu.ts), its argv in a /proc under VFPOOL_PROC.
 */
export const MAC = '52:54:00:aa:00:01' as MacAddress;
export const POOL = `<network><name>p</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>`;

export interface Source extends SimEnv {
  qemu: FakeQemu;
  cliEnv: Record<string, string>;
  plan: DomainPlanV1;
}

const HOST = { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2 }] };
/**
 * A host where vm1 holds one VF of pool p (prepared through the CLI) and has its domain plan:
 * made once, by the first test that asks, and its files laid out again for each test
 * (seededWorlds; the prepare is not what these tests are about).
 */
const preparedHost = seededWorlds(async (w) => {
  await w.sim.writeNumVfs('eth1' as never, 2);
  await w.addPool('p', POOL);
  const xml = join(w.dir, 'vm1.xml');
  writeFileSync(xml, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='${MAC}'/>` }));
  const r = await cli(['prepare', '--xml', xml], w.env);
  if (r.exitCode !== 0) throw new Error(`prepare: exit ${r.exitCode}: ${r.stderr}`);
  const vf = w.ctx.store.read().allocations[0]!;
  const plan: DomainPlanV1 = {
    version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [],
    vfs: [{ id: 'vfpool-vf0', host: vf.vfAddr, emulatedModel: 'e1000e', mac: MAC, failoverStandbyMac: null, guestAddress: null }],
  };
  await writeDomainPlan(w.settings.stateDir, plan, { uid: process.getuid!(), gid: process.getgid!() });
  return { plan };
}, HOST);

export const held = (w: SimEnv) => w.ctx.store.read().allocations.filter((a) => a.owner.domain === 'vm1');

/** A host where vm1 runs with one VF (an emulated e1000e on the simulated host), started through the wrapper. */
export async function runningGuest(t: Test): Promise<Source> {
  const w = await preparedHost(t);
  const { plan } = w;
  t.same(held(w).map((a) => [a.mac, a.vfAddr]), [[MAC, plan.vfs[0]!.host]], 'prepared: vm1 holds its VF');
  const socket = domainQmpSocketPath(w.settings.stateDir, 'vm1');
  const argv = planQemuArgs(plan, parseQemuArgv(libvirtQ35Argv('vm1')), { qmpSocketPath: socket }).argv;
  const procRoot = join(w.dir, 'proc');
  const qemu = await startFakeQemu(socket, {
    procRoot, argv,
    devices: { net0: { driver: 'virtio-net-pci', mac: '52:54:00:aa:bb:01', slot: 1 }, 'vfpool-rp0': { driver: 'pcie-root-port', slot: 3, bridge: true }, 'vfpool-vf0': { driver: 'e1000e', mac: MAC, behind: 'vfpool-rp0' } },
  });
  t.teardown(() => qemu.close());
  return { ...w, qemu, plan, cliEnv: { ...w.env, VFPOOL_PROC: procRoot } };
}

/** The destination after `migrate prepare` of vm1: its incoming QEMU, the root port reserved and the VF left off (as the wrapper starts it). */
export async function incomingGuest(t: Test) {
  const src = await runningGuest(t);
  const begin = await cli(['migrate', 'begin', 'vm1'], src.cliEnv);
  t.equal(begin.exitCode, 0, begin.stderr);
  const dst = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 2, address: '0000:5e:00.0' }] });
  await dst.sim.writeNumVfs('eth1' as never, 2);
  await dst.addPool('p', POOL);
  const prep = await cli(['migrate', 'prepare', '--description', '-'], { ...dst.env, VFPOOL_SIM_VF_DEVICE: 'e1000e' }, begin.stdout);
  t.equal(prep.exitCode, 0, prep.stderr);
  const plan = readDomainPlan(dst.settings.stateDir, 'vm1')!;
  const socket = domainQmpSocketPath(dst.settings.stateDir, 'vm1');
  const procRoot = join(dst.dir, 'proc');
  const argv = stripVfpoolDevices(planQemuArgs(plan, parseQemuArgv(['-incoming', 'defer', ...libvirtQ35Argv('vm1')]), { qmpSocketPath: socket }).argv)
    .concat(['-device', 'pcie-root-port,id=vfpool-rp0,bus=pcie.0,chassis=40,addr=0x1f', ...qmpMonitorArgs(socket)]);
  const qemu = await startFakeQemu(socket, { procRoot, argv, devices: { 'vfpool-rp0': { driver: 'pcie-root-port', slot: 0x1f, bridge: true } } });
  t.teardown(() => qemu.close());
  return { src, dst, plan, qemu, env: { ...dst.env, VFPOOL_PROC: procRoot } };
}
