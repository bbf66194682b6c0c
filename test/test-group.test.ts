import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, spawnEntry } from './helpers/spawn.js';

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
