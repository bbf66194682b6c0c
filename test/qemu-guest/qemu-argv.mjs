// Host-side reading of what vfpool generated, for test/qemu-guest/run-qemu.sh (one line out; exit 1
// with the reason when the arguments are not what the guest proof relies on):
//   node qemu-argv.mjs failover ARGV_FILE PERSON_DEVICES_FILE MAC
//     ARGV_FILE: the argv vfpool's wrapper exec'd (one element per line); PERSON_DEVICES_FILE:
//     the command line it was given. The standby must have gained failover=on and a primary with
//     failover_pair_id, the same MAC and a pcie-root-port must have been added.
//   node qemu-argv.mjs sriov ARGS_JSON N DEVICES_OUT EXPECT_OUT
//     ARGS_JSON: `vfpool qemu-args --xml … --json`. Writes its args one per line (run-in-guest.sh's
//     --devices) and the guest's expectations: `vfs N`, `pf_mac M`, `vf SLOT.FN MAC` per VF.
// It parses both -device forms QEMU takes: libvirt's JSON object and `driver,key=value,…`.
import { readFileSync, writeFileSync } from 'node:fs';

function fail(msg) {
  console.log(msg);
  process.exit(1);
}

/** `driver,k=v,…` (a doubled comma is a literal comma) or `{JSON}` → a plain object. */
function parseDevice(arg) {
  if (arg.startsWith('{')) return JSON.parse(arg);
  const parts = [];
  let cur = '';
  for (let i = 0; i < arg.length; i++) {
    if (arg[i] === ',' && arg[i + 1] === ',') { cur += ','; i++; } else if (arg[i] === ',') { parts.push(cur); cur = ''; } else cur += arg[i];
  }
  parts.push(cur);
  const dev = { driver: parts.shift() };
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (eq < 0) fail(`-device ${arg}: '${p}' has no '='`);
    dev[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return dev;
}
const devicesOf = (argv) => argv.flatMap((a, i) => (argv[i - 1] === '-device' ? [{ ...parseDevice(a), argIndex: i, json: a.startsWith('{') }] : []));
const isOn = (v) => v === true || v === 'on' || v === 'true' || v === 'yes';
const lines = (file) => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');

/** addr as QEMU takes it (`0x1.0x2`, `1.2`, `0x1e`) → `slot.fn` in lowercase hex, no padding. */
function normAddr(addr) {
  const m = /^(?:0x)?([0-9a-f]+)(?:\.(?:0x)?([0-7]))?$/i.exec(String(addr));
  if (!m) fail(`addr '${addr}' is not SLOT[.FN]`);
  return `${parseInt(m[1], 16).toString(16)}.${parseInt(m[2] ?? '0', 16).toString(16)}`;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'failover') {
  const [argvFile, personFile, mac] = args;
  const argv = lines(argvFile);
  const person = devicesOf(lines(personFile));
  // The proof is only vfpool's if the person's command line had neither half of the pairing.
  if (person.some((d) => 'failover' in d || 'failover_pair_id' in d || d.driver === 'e1000e')) fail(`${personFile} already has failover arguments: the test is wrong`);
  const devs = devicesOf(argv);
  const standby = devs.find((d) => d.driver === 'virtio-net-pci' && d.mac === mac);
  if (!standby) fail(`no virtio-net-pci with mac ${mac} in the exec'd argv`);
  if (!isOn(standby.failover)) fail(`standby ${standby.id}: failover=${standby.failover ?? '(unset)'} in the exec'd argv, want on`);
  const primaries = devs.filter((d) => d.failover_pair_id === standby.id);
  if (primaries.length !== 1) fail(`${primaries.length} devices with failover_pair_id=${standby.id}, want 1`);
  const p = primaries[0];
  if (p.driver !== 'e1000e') fail(`primary ${p.id} is ${p.driver}, want e1000e (VFPOOL_SIM_VF_DEVICE)`);
  if (p.mac !== mac) fail(`primary ${p.id} has mac ${p.mac}, want the standby's ${mac}`);
  const port = devs.find((d) => d.id === p.bus);
  if (!port || port.driver !== 'pcie-root-port') fail(`primary ${p.id} sits on bus '${p.bus}', not on a pcie-root-port (QEMU needs a hotpluggable bus)`);
  // QEMU creates every `driver,k=v` device before any JSON one, whatever the order on the command
  // line: a kv primary next to libvirt's JSON standby is realized before the standby can hide it.
  if (person.some((d) => d.json)) {
    const kv = devs.filter((d) => !d.json && String(d.id).startsWith('vfpool-')).map((d) => d.id);
    if (kv.length) fail(`the command line uses JSON -device but vfpool added ${kv.join(', ')} as driver,k=v (QEMU would create them before every JSON device)`);
  }
  const qmp = argv.some((a, i) => argv[i - 1] === '-qmp' && /^unix:[^,]*qmp\.sock,/.test(a));
  console.log(`standby ${standby.id} failover=on; primary ${p.id} ${p.driver} mac=${p.mac} failover_pair_id=${standby.id} on ${port.id} (pcie-root-port chassis ${port.chassis} at ${port.bus ?? '?'} ${port.addr ?? ''})${qmp ? '; vfpool QMP socket added' : ''}${person.some((d) => d.json) ? '; all JSON like libvirt\'s' : ''}`);
} else if (mode === 'sriov') {
  const [jsonFile, nText, devicesOut, expectOut] = args;
  const n = Number(nText);
  const out = JSON.parse(readFileSync(jsonFile, 'utf8'));
  if (!Array.isArray(out.args) || out.args.some((a) => typeof a !== 'string')) fail(`${jsonFile}: no "args" array of strings`);
  const devs = devicesOf(out.args);
  const vfs = devs.filter((d) => d.driver === 'virtio-net-pci' && d['sriov-pf'] !== undefined);
  if (vfs.length !== n) fail(`${vfs.length} VF devices (virtio-net-pci with sriov-pf), want ${n}`);
  const pfIds = new Set(vfs.map((v) => v['sriov-pf']));
  if (pfIds.size !== 1) fail(`VFs name ${pfIds.size} PFs: ${[...pfIds].join(', ')}`);
  const pf = devs.find((d) => d.id === [...pfIds][0]);
  if (!pf) fail(`sriov-pf=${[...pfIds][0]} names no device (QEMU would silently make the VFs ordinary NICs)`);
  if (vfs.some((v) => v.argIndex > pf.argIndex)) fail(`a VF comes after its PF ${pf.id} (QEMU: "PCI device specified as SR-IOV PF already exists")`);
  if (vfs.some((v) => v.bus !== pf.bus)) fail(`VFs not all on the PF's bus ${pf.bus}`);
  const macs = [pf.mac, ...vfs.map((v) => v.mac)];
  if (macs.some((m) => !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(m ?? ''))) fail(`a function without a mac=: ${macs.join(' ')}`);
  if (new Set(macs).size !== macs.length) fail(`MACs not distinct: ${macs.join(' ')}`);
  writeFileSync(devicesOut, out.args.join('\n') + '\n');
  writeFileSync(expectOut, [`vfs ${n}`, `pf_mac ${pf.mac}`, ...vfs.map((v) => `vf ${normAddr(v.addr)} ${v.mac}`)].join('\n') + '\n');
  console.log(`PF ${pf.id} at ${normAddr(pf.addr)} on ${pf.bus}; VFs at ${vfs.map((v) => normAddr(v.addr)).join(' ')}; ${out.args.length} args`);
} else {
  console.error('usage: qemu-argv.mjs failover ARGV PERSON_DEVICES MAC | sriov ARGS_JSON N DEVICES_OUT EXPECT_OUT');
  process.exit(2);
}
