import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Logger } from '../../src/util/log.js';

t.test('vfpool.log is rotated past its size, keeping `keep` old logs', async (t) => {
  const dir = t.testdir({});
  const log = Logger.forStateDir(dir, 'test', null, { maxBytes: 1000, keep: 2 });
  for (let i = 0; i < 200; i++) log.info(`step ${i} ${'x'.repeat(40)}`);
  t.same(readdirSync(dir).sort(), ['vfpool.log', 'vfpool.log.1', 'vfpool.log.2']);
  for (const f of ['vfpool.log', 'vfpool.log.1', 'vfpool.log.2']) {
    t.ok(statSync(join(dir, f)).size <= 1000 + 200, `${f} bounded`);
    t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  }
  const newest = readFileSync(join(dir, 'vfpool.log'), 'utf8');
  const older = readFileSync(join(dir, 'vfpool.log.1'), 'utf8');
  t.match(older, /step \d+/);
  t.ok(Number(/step (\d+)/.exec(older)![1]) < Number(/step (\d+)/.exec(newest)![1]), '.1 is older than the current log');
  t.match(newest, /step 199 /, 'the last line is in the current log');
});

t.test('a log write never fails an operation, and never follows a symlink', async (t) => {
  const dir = t.testdir({ target: 'untouched\n' });
  // The state "directory" is a file: the write fails, the caller goes on.
  writeFileSync(join(dir, 'file'), '');
  t.doesNotThrow(() => Logger.forStateDir(join(dir, 'file'), 'test').warn('x'));
  // vfpool.log planted as a symlink to a file elsewhere.
  mkdirSync(join(dir, 'state'));
  symlinkSync(join(dir, 'target'), join(dir, 'state', 'vfpool.log'));
  t.doesNotThrow(() => Logger.forStateDir(join(dir, 'state'), 'test').info('hello'));
  t.equal(readFileSync(join(dir, 'target'), 'utf8'), 'untouched\n');
  // A directory it may not write to (as non-root; root writes anyway, which is fine too).
  mkdirSync(join(dir, 'ro'));
  chmodSync(join(dir, 'ro'), 0o500);
  t.doesNotThrow(() => Logger.forStateDir(join(dir, 'ro'), 'test').info('hello'));
  chmodSync(join(dir, 'ro'), 0o700);
  t.ok(existsSync(join(dir, 'state')));
});

t.test('a message holding a newline stays one log line', async (t) => {
  const dir = t.testdir({});
  const echoed: string[] = [];
  Logger.forStateDir(dir, 'test', (l) => echoed.push(l)).warn("domain 'a\nb' refused");
  const lines = readFileSync(join(dir, 'vfpool.log'), 'utf8').split('\n');
  t.equal(lines.length, 2);
  t.match(lines[0], "domain 'a\\nb' refused");
  t.same(echoed, ["warning: domain 'a\\nb' refused"]);
});
