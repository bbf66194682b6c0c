import t from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSimEnv } from '../helpers/env.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';

/**
 * `vfpool migrate …`: every bad input is one line, exit 2, and changes nothing (in-process, stdin
 * given); as a process: the clear failures without a QEMU, and `begin --xml -` on a real pipe.
 */
/** A description `vfpool migrate begin` could have written, then one field made hostile at a time. */
function hostileDescriptions(): Array<[string, unknown, RegExp]> {
  const vf = { id: 'vfpool-vf0', pool: 'p', mac: '52:54:00:00:00:01', failoverStandbyMac: null, guestAddress: null, settings: { vlan: 7 } };
  const base = { version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [], vfs: [vf] };
  const withVf = (change: Record<string, unknown>, drop?: string) => {
    const v: Record<string, unknown> = { ...vf, ...change };
    if (drop) delete v[drop];
    return { ...base, vfs: [v] };
  };
  return [
    ['a VF without settings', withVf({}, 'settings'), /vfs\[0\]\.settings is not an object/],
    ['settings null', withVf({ settings: null }), /vfs\[0\]\.settings is not an object/],
    ['a VF that is not an object', { ...base, vfs: [null] }, /vfs\[0\] is not an object/],
    ['a domain name that is a path', { ...base, domain: '../../etc/x' }, /domain.*is not a name vfpool accepts/],
    ['a pool name that is a path', withVf({ pool: '../p' }), /vfs\[0\]\.pool.*is not a name vfpool accepts/],
    ['a MAC that is not one', withVf({ mac: 'zz:zz' }), /vfs\[0\]\.mac/],
    ['a guest slot out of range', withVf({ guestAddress: { slot: 99 } }), /vfs\[0\]\.guestAddress .* is not \{slot: 1\.\.31\}/],
    ['a delivery vfpool does not know', { ...base, delivery: 'ftp' }, /delivery "ftp" is not 'cmdline' or 'hotplug'/],
    ['a uuid that is not one', { ...base, uuid: 'x; rm -rf /' }, /uuid .* is not a UUID/],
    // Each VF's settings are checked by the parsers of <vfpool:hostdev>'s attributes.
    ['a spoofchk neither on nor off', withVf({ settings: { spoofchk: 'maybe' } }), /vfs\[0\]\.settings\.spoofchk is the string 'maybe', expected a boolean/],
    ['a setting vfpool does not know', withVf({ settings: { foo: 1 } }), /vfs\[0\]\.settings\.foo is not a VF setting: the settings are vlan, qos, spoofchk, trust, linkState, minTxRate, maxTxRate, mtu/],
    ['a VLAN out of range', withVf({ settings: { vlan: 5000 } }), /vfs\[0\]\.settings\.vlan: vlan='5000' is not a whole number from 0 to 4095/],
    ['qos without a VLAN', withVf({ settings: { qos: 3 } }), /vfs\[0\]\.settings: qos='3' needs a vlan/],
    ['a boolean setting given as text', withVf({ settings: { trust: 'on' } }), /vfs\[0\]\.settings\.trust is the string 'on', expected a boolean/],
    ['a rate that is a fraction', withVf({ settings: { maxTxRate: 1.5 } }), /vfs\[0\]\.settings\.maxTxRate: max-tx-rate='1\.5' is not a whole number/],
    ['a setting that is an object', withVf({ settings: { mtu: { x: 1 } } }), /vfs\[0\]\.settings\.mtu is an object, expected a number/],
    ['a link-state vfpool does not know', withVf({ settings: { linkState: 'up' } }), /vfs\[0\]\.settings\.linkState: link-state='up' must be 'auto', 'enable' or 'disable'/],
  ];
}

t.test('bad input: one line, exit 2, no state written', async (t) => {
  const w = makeSimEnv(t);
  const cases: Array<[string[], RegExp, string?]> = [
    [['migrate', 'prepare'], /vfpool migrate prepare: give --description FILE/],
    [['migrate', 'prepare', '--description', '-'], /is not JSON/, 'not json'],
    [['migrate', 'prepare', '--description', '-'], /is not a version 1 migration description/, '{"version":2}'],
    [['migrate', 'prepare', '--description', '-'], /vfs\[0\] carries a host address/, JSON.stringify({ version: 1, domain: 'vm1', uuid: null, delivery: 'cmdline', sriovNics: [], vfs: [{ id: 'vfpool-vf0', pool: 'p', mac: null, host: '0000:01:10.0' }] })],
    // Each field a description carries becomes this host's plan, records and QEMU arguments.
    ...hostileDescriptions().map(([what, desc, re]): [string[], RegExp, string] => [['migrate', 'prepare', '--description', '-'], re, JSON.stringify(desc)]),
    [['migrate', 'perform'], /vfpool migrate perform: name the domain/],
    [['migrate', 'confirm', 'vm1'], /give --role source or --role destination/],
    [['migrate', 'vm1', 'not a uri'], /'not a uri' is not a libvirt URI/],
    [['migrate', 'vm1', 'qemu+tcp://127.0.0.1:1/system', '--', '--live;rm'], /'--live;rm' is not a virsh migrate option/],
    [['migrate', 'begin', '../x'], /domain.*is not a name vfpool accepts/],
  ];
  for (const [args, re, stdin] of cases) {
    const r = await cli(args, { env: w.env, stdin: stdin ?? '' });
    t.equal(r.exitCode, 2, `${args.join(' ')}: exit 2 (${r.stderr.trim()})`);
    t.match(r.stderr, re);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  t.notOk(existsSync(join(w.env.VFPOOL_STATE_DIR!, 'migrate')), 'no migration record written');
});

t.test('begin DOMAIN on a host where it has no plan, perform without a running QEMU: clear failures', async (t) => {
  const w = makeSimEnv(t);
  const b = await vfpoolCli(['migrate', 'begin', 'vm1'], { env: w.env });
  t.equal(b.exitCode, 2);
  t.match(b.stderr, /domain 'vm1' has no vfpool plan on this host/);
  const p = await vfpoolCli(['migrate', 'perform', 'vm1'], { env: w.env });
  t.equal(p.exitCode, 1, 'no QEMU: exit 1');
  t.match(p.stderr, /QMP socket .*vm1\/qmp.sock.*is QEMU running/);
  const c = await vfpoolCli(['migrate', 'confirm', 'vm1', '--role', 'source'], { env: w.env });
  t.equal(c.exitCode, 0, 'confirm with nothing recorded: idempotent no-op');
  t.match(c.stdout, /vm1: nothing-to-do/);
});

t.test('begin --xml - maps a source address to its pool (the migrate begin hook)', async (t) => {
  const w = makeSimEnv(t);
  const xml = `<domain type='qemu'><name>vm1</name><metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='p1' address='0000:01:10.0' mac='52:54:00:9a:00:01'/></vfpool:domain></metadata></domain>`;
  const r = await vfpoolCli(['migrate', 'begin', '--xml', '-'], { env: w.env, stdin: xml });
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(r.stdout, xml.replace(" pool='p1' address='0000:01:10.0'", " pool='p1'"));
  writeFileSync(join(w.dir, 'x'), '');
});
