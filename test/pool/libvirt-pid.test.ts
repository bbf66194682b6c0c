import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readLibvirtPid } from '../../src/pool/guests.js';

t.test('readLibvirtPid reads libvirt\'s NAME.pid and refuses a name that is no file name', async (t) => {
  const dir = t.testdir({});
  mkdirSync(join(dir, 'run'));
  writeFileSync(join(dir, 'run/vm1.pid'), `${process.pid}\n`);
  writeFileSync(join(dir, 'secret.pid'), `${process.pid}\n`);
  t.equal(readLibvirtPid(join(dir, 'run'), 'vm1'), process.pid, 'a live pid');
  t.equal(readLibvirtPid(join(dir, 'run'), 'vm2'), null, 'no pid file: not running');
  t.throws(() => readLibvirtPid(join(dir, 'run'), '../secret'), { exitCode: 2, message: "domain name '../secret' is not a name vfpool accepts" },
    'a name that would leave the run directory is refused, not read');
});
