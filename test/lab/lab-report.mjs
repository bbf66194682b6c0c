// The lab's per-check table (run-lab.sh calls this on the host after the guests have run):
//   node test/lab/lab-report.mjs OUTDIR WALL_SECONDS
// Reads OUTDIR/probe/probe.tsv (probe-kernel.sh's checks), OUTDIR/suites/NAME.tap and
// NAME.status (guest-suites.sh's node-tap suites), OUTDIR/libvirt/libvirt.tsv (libvirt-guest.sh's
// checks and timings), and OUTDIR/BOOT.exit (run-in-guest.sh's exit status per boot). Prints one PASS/FAIL line per check and, last, exactly "N passed, M failed".
// Exit 1 if anything failed or nothing ran. Whatever is missing (a guest that timed out, a suite
// that crashed, a skipped test) is a FAIL row with its reason: the lab never passes by silence.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [out, wall, ...only] = process.argv.slice(2);
if (!out) {
  console.error('usage: lab-report.mjs OUTDIR [WALL_SECONDS [BOOT...]]');
  process.exit(2);
}
// run-lab.sh names the boots it ran when it ran only some; the others have no rows at all.
const ran = (boot) => only.length === 0 || only.includes(boot);
const SUITES = ['host', 'activation', 'flow'];
const rows = [];
const row = (ok, group, name, reason = '') => rows.push({ ok, group, name, reason });
const read = (p) => (existsSync(p) ? readFileSync(p, 'utf8') : null);
const bootExit = (boot) => read(join(out, `${boot}.exit`))?.trim() ?? 'not run';
const where = (boot) => `see ${join(out, boot)}/guest.log and console.log`;

// ---- probe-kernel.sh: STATUS \t NAME \t DETAIL; INFO lines are facts, not checks.
if (ran('probe')) {
  const tsv = read(join(out, 'probe', 'probe.tsv'));
  const exit = bootExit('probe');
  let failed = false;
  for (const line of (tsv ?? '').split('\n')) {
    const [status, name, detail = ''] = line.split('\t');
    if (status !== 'PASS' && status !== 'FAIL') continue;
    row(status === 'PASS', 'probe', name, status === 'FAIL' ? detail : '');
    failed ||= status === 'FAIL';
  }
  if (tsv === null) row(false, 'probe', 'kernel probe', `no results (guest exit ${exit}); ${where('probe')}`);
  else if (exit !== '0' && !failed) row(false, 'probe', 'kernel probe', `guest exit ${exit} with no failed check; ${where('probe')}`);
}

// ---- bench-net-start.sh (the probe boot, after the probe): PASS/FAIL rows, BENCH rows
// (ARM \t MEDIAN_MS \t ROUNDS), INFO machine. The ratio is printed, not judged: a timing
// threshold would make the lab's verdict depend on the load of the machine.
const benchLines = [];
if (ran('probe')) {
  const tsv = read(join(out, 'probe', 'bench.tsv'));
  const median = {};
  let rounds = '';
  let machine = '';
  let failed = false;
  for (const line of (tsv ?? '').split('\n')) {
    const [status, name, detail = '', all = ''] = line.split('\t');
    if (status === 'BENCH') {
      median[name] = Number(detail);
      rounds = all.trim();
    } else if (status === 'INFO' && name === 'machine') machine = detail;
    else if (status === 'PASS' || status === 'FAIL') {
      row(status === 'PASS', 'bench', name, detail);
      failed ||= status === 'FAIL';
    }
  }
  if (tsv === null) row(false, 'bench', 'net-start bench', `no results (guest exit ${bootExit('probe')}); ${where('probe')}`);
  else if (!failed && !['hand', 'node', 'vfpool', 'hook'].every((a) => Number.isFinite(median[a]))) row(false, 'bench', 'net-start bench', `incomplete results in ${join(out, 'probe', 'bench.tsv')}`);
  else if (!failed) {
    const n = rounds.split(/\s+/).length;
    const base = median.hand + median.node;
    const fmt = (ms) => `${String(ms).padStart(7)} ms`;
    benchLines.push(
      `bench: vfpool net-start against the same work by hand, real kernel, median of ${n} interleaved rounds`,
      `  machine: ${machine}`,
      `  by hand: write sriov_numvfs, wait for the VFs (driver, netdev)  ${fmt(median.hand)}`,
      `  node -e 0                                                       ${fmt(median.node)}`,
      `  vfpool net-start (the CLI)                                      ${fmt(median.vfpool)}  ${(median.vfpool / base).toFixed(2)}x by hand + node -e 0 (target at most 1.2x)`,
      `  network hook, start begin (libvirt's virsh net-start)           ${fmt(median.hook)}  ${(median.hook / base).toFixed(2)}x by hand + node -e 0`,
    );
  }
}

// ---- node-tap suites: one row per top-level test, with its first failed assertion as reason.
function tapRows(group, tap) {
  const found = [];
  let open = null; // the top-level subtest being read
  let firstFailure = null;
  for (const line of tap.split('\n')) {
    let m;
    if ((m = /^# Subtest: (.*)$/.exec(line))) {
      open = m[1];
      firstFailure = null;
    } else if ((m = /^\s+not ok \d+ - (.*?)(?: # time=.*)?$/.exec(line))) {
      firstFailure ??= m[1];
    } else if ((m = /^(not )?ok \d+ - (.*?)(?: # (time=.*|SKIP.*|TODO.*))?$/.exec(line))) {
      const name = m[2].replace(/\\#/g, '#');
      const directive = m[3] ?? '';
      if (/^(SKIP|TODO)/.test(directive)) found.push({ ok: false, group, name, reason: `not run: ${directive} (the lab does not skip)` });
      else found.push({ ok: !m[1], group, name, reason: m[1] ? (firstFailure ?? 'failed') : '' });
      open = null;
    }
  }
  if (open !== null) found.push({ ok: false, group, name: open, reason: 'never finished (crash or guest timeout)' });
  return found;
}
if (ran('suites')) {
  const exit = bootExit('suites');
  for (const name of SUITES) {
    const tap = read(join(out, 'suites', `${name}.tap`));
    const status = read(join(out, 'suites', `${name}.status`))?.trim();
    if (tap === null) {
      row(false, name, `${name} suite`, `no TAP output (guest exit ${exit}); ${where('suites')}`);
      continue;
    }
    const found = tapRows(name, tap);
    rows.push(...found);
    if (found.length === 0) row(false, name, `${name} suite`, `no test ran (exit ${status ?? '?'}); ${where('suites')}`);
    else if (status !== '0' && found.every((r) => r.ok)) row(false, name, `${name} suite`, `exited ${status ?? 'without a status'} after its tests; ${where('suites')}`);
  }
}

// ---- libvirt-guest.sh: STATUS \t NAME \t DETAIL, details shown for passes too (what QEMU
// showed, how long a start took); INFO lines are printed under the table. Its last line is the
// INFO row 'wall time in the guest': a table without it means the script died on the way.
const infos = [];
if (ran('libvirt')) {
  const tsv = read(join(out, 'libvirt', 'libvirt.tsv'));
  const exit = bootExit('libvirt');
  let failed = false;
  let finished = false;
  for (const line of (tsv ?? '').split('\n')) {
    const [status, name, detail = ''] = line.split('\t');
    if (status === 'INFO') infos.push(`libvirt: ${name}: ${detail}`);
    finished ||= status === 'INFO' && name === 'wall time in the guest';
    if (status !== 'PASS' && status !== 'FAIL') continue;
    row(status === 'PASS', 'libvirt', name, detail);
    failed ||= status === 'FAIL';
  }
  if (tsv === null) row(false, 'libvirt', 'libvirt boot', `no results (guest exit ${exit}); ${where('libvirt')}`);
  else if (!finished && !failed) row(false, 'libvirt', 'libvirt boot', `never reached its end (guest exit ${exit}); ${where('libvirt')}`);
  else if (exit !== '0' && !failed) row(false, 'libvirt', 'libvirt boot', `guest exit ${exit} with no failed check; ${where('libvirt')}`);
}

const passed = rows.filter((r) => r.ok).length;
const failed = rows.length - passed;
const width = Math.max(...rows.map((r) => r.group.length));
console.log(`==== vfpool lab: ${rows.length} checks on a real kernel (${out}) ====`);
for (const r of rows) console.log(`${r.ok ? 'PASS' : 'FAIL'}  ${r.group.padEnd(width)}  ${r.name}${r.reason ? `  -- ${r.reason}` : ''}`);
for (const i of infos) console.log(`info  ${i}`);
for (const b of benchLines) console.log(b);
if (wall) console.log(`wall time: ${wall} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
