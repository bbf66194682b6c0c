import t from 'tap';

/**
 * Runs test files one after the other inside one Node process (a group written by
 * scripts/test-groups.mjs). node-tap starts every file it runs in its own Node with its
 * coverage loader, ~1.5 s of CPU before the first assertion; 89 files paid that 89 times.
 *
 * A file runs alone: it is imported only once every test of the file before it has ended
 * (its top level runs then, not while another file's tests run), and each file is followed
 * by a check that it left process.env and the working directory as it found them, so a
 * file that would leak state into the next fails, named. Each file keeps the per-file
 * timeout tap gives a file (.taprc `timeout`): the timer is restarted for every file.
 */
export async function runTestFiles(groupUrl: string, files: string[]): Promise<void> {
  await runFiles(groupUrl, queuedByParent() ?? listed(files));
}

async function* listed(files: string[]): AsyncGenerator<string> {
  yield* files;
}

/**
 * Under npm test (scripts/test.mjs), the groups share one queue of all the test files, heaviest
 * first, and each takes the next file when its last one has ended, over the IPC channel npm test
 * opened to it (VFPOOL_TEST_QUEUE=ipc): the groups then end within about one file of each other,
 * where fixed lists, balanced by each file's seconds in an earlier run, ended 2-4 s apart (a
 * file's time moves with the machine's load). A group run alone (`npx tap`, `node`) has no
 * channel and runs its own list.
 */
function queuedByParent(): AsyncGenerator<string> | null {
  const send = process.send?.bind(process);
  if (process.env.VFPOOL_TEST_QUEUE !== 'ipc' || send === undefined) return null;
  return (async function* () {
    let answer: ((file: string | null) => void) | null = null;
    const onMessage = (m: { vfpoolTestFile?: string | null }) => {
      if (m && typeof m === 'object' && 'vfpoolTestFile' in m) answer?.(m.vfpoolTestFile ?? null);
    };
    process.on('message', onMessage);
    for (;;) {
      // node-tap unrefs the channel (it listens on it only for its runner's timeout message):
      // between two files nothing else may keep this process alive while it waits for the answer.
      process.channel?.ref();
      const next = await new Promise<string | null>((resolve) => {
        answer = resolve;
        send({ vfpoolNextTestFile: true });
      });
      process.channel?.unref();
      if (next === null) break;
      yield next;
    }
    process.off('message', onMessage);
    // The open channel would keep this process alive after its last test.
    process.disconnect();
  })();
}

async function runFiles(groupUrl: string, files: AsyncIterable<string>): Promise<void> {
  const perFileTimeout = Number(process.env.TAP_TIMEOUT ?? '30') * 1000;
  // npm test records this process's coverage (scripts/test.mjs sets NODE_V8_COVERAGE; V8 took
  // the directory at start-up). The processes the tests start are the hooks, shims and CLI as
  // libvirt and a person run them: left to inherit it, each would write its own coverage, over
  // 300 files and 100 MB a run, and start slower.
  delete process.env.NODE_V8_COVERAGE;
  // node-tap ends its root test as soon as it is idle once anything registered a teardown on
  // it (a file's `t.teardown` on the root instead of on its own test): while the next file is
  // being imported, the root is idle, ends, and every later file's tests are refused ("cannot
  // create subtest after parent test ends", on stderr) while the process exits 0, so tap
  // counted the group as passed with files never run. Each file's check below counts it as run;
  // a group that ends short fails, saying which file was the first not to run.
  const taken: string[] = [];
  let ran = 0;
  process.on('exit', () => {
    if (ran === taken.length) return;
    process.stderr.write(
      `test group ${groupUrl}: ${taken.length - ran} of ${taken.length} test files did not run, from ${taken[ran]} on: ` +
        `tap's root test ended early (a teardown registered on the root test? register it on the file's own test)\n`,
    );
    process.exitCode = 1;
  });
  for await (const file of files) {
    taken.push(file);
    const envBefore = { ...process.env };
    const cwdBefore = process.cwd();
    t.setTimeout(perFileTimeout);
    let loadError: unknown = null;
    try {
      await import(new URL(file, groupUrl).href);
    } catch (err) {
      loadError = err;
    }
    // Queued after every test the file queued, so it runs once they have all ended.
    await t.test(`${file}: ran alone, left env and cwd as it found them`, async (tt) => {
      tt.equal(loadError, null, `${file} loads`);
      tt.same({ ...process.env }, envBefore, `${file} leaves process.env as it found it`);
      tt.equal(process.cwd(), cwdBefore, `${file} leaves the working directory as it found it`);
      ran++;
    });
  }
}
