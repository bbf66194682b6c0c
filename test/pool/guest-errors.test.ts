import t from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { HostError } from '../../src/errors.js';
import { prepareGuest } from '../../src/pool/guests.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld } from '../helpers/guest-world.js';

t.test('a pool whose <pf dev> the host refuses: the message names domain, pool and PF, with the hint', async (t) => {
  // Started while its NIC was there; the NIC is gone since.
  const w = makeGuestWorld(t, 'sim', { pfs: [{ name: 'eth1', totalVfs: 8, numVfs: 4 }, { name: 'eth9', totalVfs: 8 }] });
  await w.addPool('bad', `<network><name>bad</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>`);
  await w.editKernel((s) => void (s.pfs = s.pfs.filter((p) => p.name !== 'eth9')));
  const host = await w.host.getPf('eth9' as never).then(() => null, (e: HostError) => e);
  t.ok(host instanceof HostError);
  const spec = parseDomainXml(domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='bad' mac='52:54:00:00:00:01'/>` }), 'vm1');
  await t.rejects(prepareGuest(w.ctx, spec, w.opts), {
    message: `domain 'vm1': pool 'bad': PF eth9: ${host!.message}`,
    hint: 'check the <pf dev> name against `ip link`',
    code: host!.code,
    exitCode: 1,
  });
  t.same(w.ctx.store.read().allocations, []);
});
