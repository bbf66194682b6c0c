import t from 'tap';
import { parseDomainXml } from '../../src/config/domain-xml.js';
import { BadInputError, HostError, RollbackError, VfpoolError, prefixError } from '../../src/errors.js';
import { prepareGuest } from '../../src/pool/guests.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { makeGuestWorld } from '../helpers/guest-world.js';

t.test('prefixError keeps exit code, errno, hint and cause', async (t) => {
  const h = new HostError('boom', { code: 'EIO', hint: 'do x' });
  const p = prefixError('domain \'vm1\'', h);
  t.ok(p instanceof HostError);
  t.match(p, { message: "domain 'vm1': boom", code: 'EIO', hint: 'do x', exitCode: 1, cause: h });
  t.equal(prefixError('domain \'vm1\'', h, 'do y').hint, 'do y', 'a given hint replaces the cause\'s');
  t.equal(prefixError("domain 'vm1'", p), p, 'already prefixed: unchanged');
  const b = new BadInputError('bad', 'fix it');
  t.match(prefixError('w', b), { message: 'w: bad', exitCode: 2, hint: 'fix it', cause: b });
  t.ok(prefixError('w', b) instanceof VfpoolError);
  const r = new RollbackError(h, ['undo failed']);
  t.equal(prefixError('w', r), r, 'a RollbackError is left alone');
});

t.test('a pool whose <pf dev> the host refuses: the message names domain, pool and PF, with the hint', async (t) => {
  const w = makeGuestWorld(t, 'sim');
  w.definePool('bad', `<network><name>bad</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>`);
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
