import t from 'tap';
import { BadInputError, HostError, RollbackError, VfpoolError, prefixError } from '../src/errors.js';

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
