import t, { type Test } from 'tap';
import type { Host, VfInfo } from '../../src/host/host.js';
import { applyPlan } from '../../src/pool/plan.js';
import { hotplugDevices } from '../../src/qemu/hotplug.js';
import type { QmpClient } from '../../src/qemu/qmp.js';
import type { NetdevName } from '../../src/types.js';
import { Logger } from '../../src/util/log.js';

/**
 * The wall clock is stepped while vfpool waits: chrony or ntpd at boot (when libvirt autostarts
 * networks and guests), an administrator's `date -s`. A wait bounded on the wall clock gave up
 * at once after a step forward, and after a step back waited as long as the step on top (a
 * hook libvirt waits for, for hours).
 */
const HOUR = 3_600_000;

/** Steps Date.now by `stepMs` each time `step()` is called, for the test's duration. */
function steppedClock(t: Test, stepMs: number): () => void {
  const real = Date.now;
  let offset = 0;
  Date.now = () => real() + offset;
  t.teardown(() => {
    Date.now = real;
  });
  return () => {
    offset += stepMs;
  };
}

const vf = (i: number): VfInfo => ({ index: i, address: `0000:3b:02.${i}`, driver: 'iavf' }) as VfInfo;

/** A PF whose VFs show on the `appearAt`th listing (never, if null), stepping the clock at each. */
function slowHost(step: () => void, appearAt: number | null): Host & { listings: number } {
  const host = {
    listings: 0,
    async listVfs() {
      host.listings++;
      step();
      return appearAt !== null && host.listings >= appearAt ? [vf(0), vf(1)] : [];
    },
  };
  return host as unknown as Host & { listings: number };
}

const awaitTwo = [{ kind: 'await-vfs' as const, pf: 'eth1' as NetdevName, count: 2, probed: true }];
const log = new Logger(null, 'test');

t.test('a pool start waiting for its VFs: a clock stepped forward does not end the wait', async (t) => {
  const host = slowHost(steppedClock(t, HOUR), 4);
  await applyPlan(host, awaitTwo, log, { settleTimeoutMs: 5_000, pollMs: 1 });
  t.equal(host.listings, 4, 'it waited until the VFs were there');
});

t.test('a pool start waiting for its VFs: a clock stepped back does not stretch the wait', async (t) => {
  const host = slowHost(steppedClock(t, -HOUR), null);
  const began = performance.now();
  await t.rejects(applyPlan(host, awaitTwo, log, { settleTimeoutMs: 200, pollMs: 1 }), { code: 'ETIMEDOUT', message: /expected 2 VFs within 0\.2 s, found 0/ });
  t.ok(performance.now() - began < 5_000, 'it gave up after its own timeout');
});

/** A QMP whose query-pci lists the added device from the `appearAt`th query on, stepping the clock at each. */
function slowQmp(step: () => void, appearAt: number): { qmp: QmpClient; queries: () => number } {
  let queries = 0;
  const qmp = {
    async execute(cmd: string) {
      if (cmd === 'device_add') return {};
      if (cmd !== 'query-pci') throw new Error(`unexpected ${cmd}`);
      queries++;
      step();
      const devices = [{ bus: 0, slot: 2, function: 0, qdev_id: 'rp1', class_info: {}, id: { vendor: 1, device: 2 }, pci_bridge: { bus: { secondary: 1 }, devices: queries >= appearAt ? [{ bus: 1, slot: 0, function: 0, qdev_id: 'vfpool-vf0', class_info: {}, id: { vendor: 0x8086, device: 0x10ca } }] : [] } }];
      return [{ bus: 0, devices }];
    },
  };
  return { qmp: qmp as unknown as QmpClient, queries: () => queries };
}

t.test('the started hook waiting for a hot-added VF: a clock stepped forward does not end the wait', async (t) => {
  const { qmp, queries } = slowQmp(steppedClock(t, HOUR), 4);
  const added = await hotplugDevices(qmp, [{ driver: 'vfio-pci', id: 'vfpool-vf0', bus: 'rp1', host: '0000:3b:02.0' } as never], { timeoutMs: 5_000, pollMs: 1 });
  t.same(added, ['vfpool-vf0']);
  t.equal(queries(), 4, 'it waited until query-pci listed it');
});
