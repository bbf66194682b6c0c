import t from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { prepareGuest, releaseGuest } from '../../src/pool/guests.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { recordingHost } from '../helpers/recording-host.js';
import { makeGuestWorld, POOLS } from '../helpers/guest-world.js';

/** Three VFs of one PF (eth1): the planning pass reads the PF once, not once per VF. */
const VFPOOL = `<vfpool:hostdev pool='hd' mac='52:54:00:00:00:01' vlan='10'/>
           <vfpool:hostdev pool='hd' mac='52:54:00:00:00:02'/>
           <vfpool:hostdev pool='hy' mac='52:54:00:00:00:03' mtu='1400'/>`;
const spec = () => parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: VFPOOL }), 'vm1');

t.test(`preparing 3 VFs on one PF reads the PF once while planning`, async (t) => {
  const w = makeGuestWorld(t, 'sim');
  for (const [n, x] of Object.entries(POOLS)) await w.addPool(n, x);
  const before = await w.snapshot();
  const rec = recordingHost(w.host);
  const ctx = { ...w.ctx, host: rec.host };
  const count = (calls: typeof rec.calls, method: string, arg?: unknown) =>
    calls.filter((c) => c.method === method && (arg === undefined || c.args[0] === arg)).length;

  // The registry: the pool names listed and each definition parsed once per pass.
  let names = 0;
  let gets = 0;
  const registry = ctx.registry;
  const realNames = registry.names.bind(registry);
  const realGet = registry.get.bind(registry);
  registry.names = (...a) => (names++, realNames(...a));
  registry.get = (...a) => (gets++, realGet(...a));

  const dry = await prepareGuest(ctx, spec(), { ...w.opts, dryRun: true });
  t.equal(dry.vfs.length, 3);
  t.equal(count(rec.calls, 'getVfLinks'), 1, 'dry run: getVfLinks once');
  t.equal(count(rec.calls, 'getPf', 'eth1'), 1, 'dry run: getPf once');
  t.equal(count(rec.calls, 'listVfs'), 1, 'dry run: listVfs once');
  t.equal(count(rec.calls, 'getMtu', 'eth1'), 1, 'dry run: the PF MTU once');
  t.equal(names, 2, 'pool names listed once for the requests, once for the plan');
  t.equal(gets, 4, 'each of the 2 pools parsed once for the requests, once for the plan');

  rec.calls.length = 0;
  const r = await prepareGuest(ctx, spec(), w.opts);
  t.same(r.vfs.map(({ vfAddr, mac, mode, vlan }) => ({ vfAddr, mac, mode, vlan })), dry.vfs.map(({ vfAddr, mac, mode, vlan }) => ({ vfAddr, mac, mode, vlan })), 'the real run picks what the dry run showed');
  const firstChange = rec.calls.findIndex((c) => c.method === 'setVfLink');
  t.ok(firstChange > 0);
  const planning = rec.calls.slice(0, firstChange);
  t.equal(count(planning, 'getVfLinks'), 1, 'getVfLinks once before the first change');
  t.equal(count(planning, 'getPf', 'eth1'), 1);
  t.equal(count(planning, 'listVfs'), 1);
  t.equal(count(planning, 'getMtu', 'eth1'), 1);
  t.equal(r.vfs.length, 3);
  t.equal(count(rec.calls, 'getVfLinks'), 1 + 3, 'then one read-back per VF');

  await releaseGuest(ctx, 'vm1', { reason: 'test' });
  t.same(await w.snapshot(), before, 'and release puts everything back');
});
