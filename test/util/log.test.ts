import t from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Logger } from '../../src/util/log.js';
import { scratchDir } from '../helpers/scratch.js';

t.test('the log: one line per step with pid and context, created 0600 with its directory', async (t) => {
  const dir = join(scratchDir(t), 'run/vfpool');
  const echoed: string[] = [];
  const log = Logger.forStateDir(dir, 'cli', (l) => echoed.push(l)).child("pool 'p'");
  log.info('starting');
  log.warn('PF eth2 is gone');
  const lines = readFileSync(join(dir, 'vfpool.log'), 'utf8').trim().split('\n');
  t.match(lines, [
    new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\[${process.pid}\\] info cli pool 'p': starting$`),
    new RegExp(`\\[${process.pid}\\] warn cli pool 'p': PF eth2 is gone$`),
  ]);
  t.equal(statSync(join(dir, 'vfpool.log')).mode & 0o777, 0o600);
  t.same(echoed, ['starting', 'warning: PF eth2 is gone'], 'echoed for a person, warnings marked');
});

t.test('a log that cannot be written never fails the operation', async (t) => {
  const root = scratchDir(t);
  writeFileSync(join(root, 'file'), '');
  const echoed: string[] = [];
  const log = Logger.forStateDir(join(root, 'file/sub'), 'hook', (l) => echoed.push(l));
  t.doesNotThrow(() => log.warn('still said'));
  t.same(echoed, ['warning: still said'], 'the echo still happens');
  t.notOk(existsSync(join(root, 'file/sub/vfpool.log')));
  t.doesNotThrow(() => new Logger(null, 'x').info('no file at all'));
});
