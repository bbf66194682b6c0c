/**
 * Hostile libvirt argv, fuzzed (issue 10): the wrapper's command-line parser and editor must
 * turn any argv into either the edited argv or ONE BadInputError line (exit 2 in the wrapper,
 * QEMU not started: QEMU would refuse such an argument itself), never another error, and what
 * vfpool adds never names a path outside the domain's directory under the state directory.
 * In process (fast-check, many runs), then through the real shim as libvirt runs it (fewer
 * runs): the exit status, one line, no stack trace, no change to the state directory.
 */
import t from 'tap';
import fc from 'fast-check';
import { execa } from 'execa';
import { readdirSync, readFileSync, statSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError } from '../../src/errors.js';
import { planQemuArgs } from '../../src/qemu/args.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { domainQmpSocketPath, writeDomainPlan, type DomainPlanV1 } from '../../src/state/domain-plan.js';
import type { MacAddress, PciAddress } from '../../src/types.js';
import { checkProperty, HOSTILE_STRINGS } from '../helpers/fuzz.js';
import { scratchDir } from '../helpers/scratch.js';
import { REPO, WITHOUT_TAP_LOADER } from '../helpers/spawn.js';

const MAC = '52:54:00:aa:bb:01' as MacAddress;
const STATE = '/run/vfpool-fuzz';
const PLAIN: DomainPlanV1 = {
  version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [],
  vfs: [{ id: 'vfpool-vf0', host: '0000:3b:02.0' as PciAddress, emulatedModel: null, mac: MAC, failoverStandbyMac: null, guestAddress: null }],
};
const FAILOVER: DomainPlanV1 = { ...PLAIN, delivery: 'hotplug', vfs: [{ ...PLAIN.vfs[0]!, failoverStandbyMac: MAC }] };
const BASE = ['-name', 'guest=vm1,debug-threads=on', '-machine', 'pc-q35-10.0,usb=off,acpi=on', '-nodefaults', '-netdev', '{"type":"user","id":"hostnet0"}', '-device', `{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"${MAC}"}`];

const word = fc.oneof(fc.constantFrom(...HOSTILE_STRINGS), fc.string({ maxLength: 12 }), fc.constantFrom('vfpool-vf0', 'vfpool-rp0', 'vfpool-qmp', 'pcie.0', 'pci.0', 'net0', 'hostnet0', MAC));
const jsonScalar = fc.oneof(word, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constantFrom(1e400, -0, 2 ** 53 + 1));
/**
 * `-device {…}` as text: objects with odd values, nesting, duplicate keys, non-objects, broken JSON,
 * huge (100 000 characters: one argument may not exceed 128 KiB, MAX_ARG_STRLEN, for QEMU as for the wrapper).
 */
const jsonOption = fc.oneof(
  fc.dictionary(fc.oneof(fc.constantFrom('driver', 'id', 'bus', 'addr', 'chassis', 'slot', 'mac', 'netdev', 'failover', 'type', '__proto__', 'constructor'), word), fc.oneof(jsonScalar, fc.jsonValue({ maxDepth: 3 })), { maxKeys: 6 }).map((o) => JSON.stringify(o)),
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc.tuple(word, word).map(([a, b]) => `{"driver":${JSON.stringify(a)},"driver":${JSON.stringify(b)},"id":"x"}`),
  fc.constantFrom('{', '{}', '{"driver":', '{"driver":"e1000e",}', '{"driver":"e1000e"}garbage', '{"a":{"b":{"c":[1,2,{"d":null}]}}}', `{"driver":"pcie-root-port","chassis":"x","slot":-1,"addr":"0x1f.0x9"}`, '{"driver":"\\u0000"}', '{"driver":"\\ud800"}', `{"driver":"e1000e","id":"${'x'.repeat(100_000)}"}`, '[1,2]', '"str"', '5', 'null'),
);
/** kv text: `,,`, missing values, empty parts, bare words. */
const kvOption = fc.array(fc.oneof(word, fc.tuple(word, word).map(([k, v]) => `${k}=${v}`), fc.constantFrom('', ',', ',,', '=', 'driver=', '=x', 'id=a,,b', 'addr=0x2.0x1', 'addr=zz', 'bus=', 'mac=', 'guest=', 'type=q35')), { maxLength: 6 }).map((a) => a.join(','));
const optName = fc.constantFrom('-device', '--device', '-netdev', '-chardev', '-object', '-mon', '-machine', '-M', '-name', '-incoming', '-nodefaults', '-S', '-blockdev', '-fsdev', '-append', '-x-unknown', '-');
const extra = fc.array(fc.tuple(optName, fc.option(fc.oneof(jsonOption, kvOption, word), { nil: undefined })), { maxLength: 8 })
  .map((pairs) => pairs.flatMap(([o, v]) => (v === undefined ? [o] : [o, v])));
const argvArb = fc.tuple(fc.constantFrom(PLAIN, FAILOVER), fc.boolean(), extra, fc.boolean()).map(([plan, withBase, more, front]) => ({
  plan,
  argv: withBase ? (front ? [...more, ...BASE] : [...BASE, ...more]) : ['-name', 'guest=vm1', ...more],
}));

/** The outcome the wrapper's Node half would reach: the edited argv, or one bad-input line. */
function edit(plan: DomainPlanV1, argv: string[], stateDir = STATE): { argv: string[]; added: string[] } | BadInputError {
  try {
    return planQemuArgs(plan, parseQemuArgv(argv), { qmpSocketPath: domainQmpSocketPath(stateDir, plan.domain) });
  } catch (err) {
    if (!(err instanceof BadInputError)) throw new Error(`not a BadInputError: ${err instanceof Error ? err.stack : String(err)}`);
    const line = err.toLine();
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(line)) throw new Error(`control character in the message: ${JSON.stringify(line.slice(0, 300))}`);
    if (line.length > 2000) throw new Error(`a ${line.length}-character message`);
    return err;
  }
}

t.test('any argv gives the edited argv or one bad-input line; what vfpool adds stays in the domain directory', async (t) => {
  await checkProperty(t, 'wrapper argv editing', fc.property(argvArb, ({ plan, argv }) => {
    const r = edit(plan, argv);
    if (r instanceof BadInputError) return true;
    for (const a of r.added) {
      for (const m of a.matchAll(/(?:^|,)path=([^,]*)/g)) if (m[1] !== domainQmpSocketPath(STATE, plan.domain)) throw new Error(`added path ${m[1]}`);
    }
    // vfpool only adds (and may edit a device in place): nothing of libvirt's argv is dropped.
    if (r.argv.length < argv.length) throw new Error(`argv shrank from ${argv.length} to ${r.argv.length}`);
    return true;
  }), 600);
});

t.test('through the wrapper as libvirt runs it: exit 2 and one line, or QEMU started; never a stack; the state directory unchanged', async (t) => {
  const dir = scratchDir(t);
  const state = join(dir, 'run');
  const record = join(dir, 'qemu-argv');
  const qemu = join(dir, 'qemu');
  writeFileSync(qemu, `#!/bin/sh\nfor a do printf '%s\\0' "$a"; done >'${record}'\nexit 7\n`, { mode: 0o755 });
  await writeDomainPlan(state, PLAIN, { uid: process.getuid!(), gid: process.getgid!() });
  const snapshot = () => {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const f of readdirSync(d).sort()) {
        const p = join(d, f);
        const st = statSync(p);
        if (st.isDirectory()) walk(p);
        else out.push(`${p} ${st.mode.toString(8)} ${readFileSync(p, 'utf8')}`);
      }
    };
    walk(dir);
    return out.join('\n');
  };
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', VFPOOL_CONFIG_DIR: join(dir, 'etc'), VFPOOL_STATE_DIR: state, VFPOOL_QEMU: qemu };
  const noNul = (a: string[]) => a.map((s) => s.replace(/\0/g, '0'));
  const sampled = fc.sample(argvArb.map((c) => noNul(c.argv)), { seed: 20261130, numRuns: 24 })
    .concat([noNul(['-name', 'guest=vm1', '-device', '{"driver":"e1000e","id":"a\nb"}', '-machine', 'q35']), ['-name', 'guest=../vm1', '-device', '{'], ['-name', 'guest=vm1\n', '-machine', 'q35']]);
  // Each distinct argv once: the sample repeats some (['-name', 'guest=vm1'] three times), and
  // the same argv through the same shim is the same run (~80 ms of processes each).
  const cases = [...new Map(sampled.map((a) => [JSON.stringify(a), a])).values()];
  t.ok(cases.length >= 20, `${cases.length} distinct argvs of ${sampled.length}`);
  for (const argv of cases) {
    rmSync(record, { force: true });
    const before = snapshot();
    const [envBin, ...unset] = WITHOUT_TAP_LOADER;
    const r = await execa(envBin, [...unset, join(REPO, 'qemu-args/vfpool-qemu'), ...argv], { env, extendEnv: false, reject: false });
    const stderr = String(r.stderr);
    // Printable ASCII only: a U+2028 in a test name breaks the TAP stream's lines.
    const what = JSON.stringify(argv).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).slice(0, 200);
    const expected = edit(PLAIN, argv, state);
    const named = parseNameSafely(argv);
    if (named !== 'vm1') {
      t.same([r.exitCode, stderr, existsSync(record)], [7, '', true], `${what}: no plan for this name: QEMU untouched`);
    } else if (expected instanceof BadInputError) {
      t.equal(r.exitCode, 2, `${what}: exit 2`);
      t.equal(stderr, `vfpool: ${expected.toLine()}`, `${what}: the one line`);
      t.notOk(existsSync(record), `${what}: QEMU not started`);
    } else {
      t.equal(r.exitCode, 7, `${what}: QEMU ran (${stderr.slice(0, 200)})`);
      t.same(readFileSync(record, 'utf8').split('\0').slice(0, -1), expected.argv, `${what}: the edited argv`);
    }
    t.notMatch(stderr, /\n\s+at /, `${what}: no stack trace`);
    rmSync(record, { force: true });
    t.equal(snapshot(), before, `${what}: nothing changed in the state directory`);
  }
});

/** The name the shim finds (its rules: the last -name, `guest=` or a leading bare word, no `,,`). */
function parseNameSafely(argv: string[]): string | null {
  let name: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] !== '-name' && argv[i] !== '--name') continue;
    const v = argv[++i];
    name = null;
    if (v === undefined || v.includes(',,')) continue;
    v.split(',').forEach((f, k) => {
      if (f.startsWith('guest=')) name = f.slice(6);
      else if (!f.includes('=') && k === 0) name = f;
    });
  }
  return name;
}
