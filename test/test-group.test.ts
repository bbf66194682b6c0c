import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, spawnEntry, WITHOUT_TAP_LOADER } from './helpers/spawn.js';

// The group runner (test/helpers/test-group.ts, used by every group scripts/test-groups.mjs
// writes): a group whose files did not all run must fail, not pass. Two files in a group of
// their own, run as tap runs a group (a Node of its own, without tap's loader).
const runner = pathToFileURL(join(REPO, 'dist/test/helpers/test-group.js')).href;
const later = `import t from 'tap';
import { writeFileSync } from 'node:fs';
// Loaded a moment later than the file before it ended: its root test is idle meanwhile.
await new Promise((resolve) => setTimeout(resolve, 50));
t.test('the later file', async (tt) => {
  writeFileSync(new URL('./later.ran', import.meta.url), '');
  tt.pass('ran');
});
`;

function group(t: Test, first: string): string {
  return t.testdir({
    'first.test.js': first,
    'later.test.js': later,
    'group.test.js': `import { runTestFiles } from ${JSON.stringify(runner)};\nawait runTestFiles(import.meta.url, ['./first.test.js', './later.test.js']);\n`,
  });
}

t.test('a group runs every file and passes', async (t) => {
  const dir = group(t, `import t from 'tap';\nt.test('the first file', async (tt) => tt.pass('ran'));\n`);
  const r = await spawnEntry(join(dir, 'group.test.js'), [], { env: {} });
  t.equal(r.exitCode, 0, r.stderr);
  t.ok(existsSync(join(dir, 'later.ran')), 'the later file ran');
  t.equal(r.stderr, '');
});

t.test('a file that ends the root test early fails its group, naming the first file that did not run', async (t) => {
  // A teardown on the root test, registered from inside the file's test: tap then ends the
  // root as soon as nothing is queued, which is while the next file loads.
  const dir = group(t, `import t from 'tap';\nt.test('the first file', async (tt) => { t.teardown(() => {}); tt.pass('ran'); });\n`);
  const r = await spawnEntry(join(dir, 'group.test.js'), [], { env: {} });
  t.equal(r.exitCode, 1, 'the group fails');
  t.notOk(existsSync(join(dir, 'later.ran')), 'the later file never ran (what the failure is about)');
  t.match(r.stderr, /1 of 2 test files did not run, from \.\/later\.test\.js on/);
});

/**
 * A group as npm test runs it (scripts/test.mjs): an IPC channel and VFPOOL_TEST_QUEUE=ipc, the
 * files handed out one at a time from `queue` (then null), whatever the group's own list says.
 * Returns the exit code, stderr and how many times the group asked.
 */
async function queuedGroup(dir: string, queue: string[]): Promise<{ exitCode: number | null; stderr: string; asked: number }> {
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const child = spawn(envBin, [...unset, process.execPath, join(dir, 'group.test.js')], {
    env: { PATH: process.env.PATH!, VFPOOL_TEST_QUEUE: 'ipc' },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let asked = 0;
  child.on('message', (m: { vfpoolNextTestFile?: boolean }) => {
    if (m.vfpoolNextTestFile !== true) return;
    asked++;
    child.send({ vfpoolTestFile: queue.shift() ?? null });
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const exitCode = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { exitCode, stderr, asked };
}

t.test('under npm test a group runs the files it is handed, in that order, and ends after the last', async (t) => {
  const dir = group(t, `import t from 'tap';\nimport { appendFileSync, existsSync } from 'node:fs';\nt.test('the first file', async (tt) => { appendFileSync(new URL('./order', import.meta.url), \`first, after the later file: \${existsSync(new URL('./later.ran', import.meta.url))}\\n\`); tt.pass('ran'); });\n`);
  const r = await queuedGroup(dir, ['./later.test.js', './first.test.js']);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.asked, 3, 'asked for a file three times: two files, then the answer that there are no more');
  t.ok(existsSync(join(dir, 'later.ran')), 'the later file ran');
  t.equal(readFileSync(join(dir, 'order'), 'utf8'), 'first, after the later file: true\n', 'the first file ran once, after the later one (the queue\'s order, not the group\'s list)');
  t.equal(r.stderr, '');
});

t.test('under npm test, a handed-out file that did not run fails its group, named', async (t) => {
  const dir = group(t, `import t from 'tap';\nt.test('the first file', async (tt) => { t.teardown(() => {}); tt.pass('ran'); });\n`);
  const r = await queuedGroup(dir, ['./first.test.js', './later.test.js']);
  t.equal(r.exitCode, 1, 'the group fails');
  t.notOk(existsSync(join(dir, 'later.ran')), 'the later file never ran');
  t.match(r.stderr, /1 of 2 test files did not run, from \.\/later\.test\.js on/);
});
