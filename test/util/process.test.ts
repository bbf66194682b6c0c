import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isAlive } from '../../src/util/process.js';

/**
 * A zombie: the child of a process that never calls wait(). `sh` starts `cat` on the test's
 * pipe (which it ends by closing it; an explicit redirection, since sh gives a background job
 * /dev/null), prints its pid and execs `sleep`, which holds no end of the pipe and never
 * collects it.
 */
t.test('isAlive: a live process, a zombie (exited, never waited for), a gone one', async (t) => {
  const parent = spawn('/bin/sh', ['-c', 'exec 3<&0; cat <&3 & echo $!; exec sleep 600 </dev/null 3<&-'], { stdio: ['pipe', 'pipe', 'ignore'] });
  t.teardown(() => void parent.kill('SIGKILL'));
  const childPid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))));
  t.ok(isAlive(childPid), 'cat, running');
  t.ok(isAlive(parent.pid!), 'sleep, running');
  parent.stdin!.end(); // cat ends; sleep never waits for it
  const state = () => {
    const s = readFileSync(`/proc/${childPid}/stat`, 'utf8');
    return s.charAt(s.lastIndexOf(')') + 2);
  };
  while (state() !== 'Z') await new Promise((r) => setTimeout(r, 10));
  t.notOk(isAlive(childPid), 'a zombie is not alive: its QEMU has exited, whoever has not waited for it');
  parent.kill('SIGKILL');
  await new Promise((r) => parent.once('exit', r));
  t.notOk(isAlive(parent.pid!), 'a process that is gone');
  t.ok(isAlive(process.pid), 'this one');
  t.ok(isAlive(1), 'pid 1 (another user\'s process answers EPERM when not root: alive too)');
});
