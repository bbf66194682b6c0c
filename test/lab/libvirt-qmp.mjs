// What the nested QEMU of a libvirt domain shows over vfpool's QMP socket, as PASS/FAIL rows
// (STATUS \t CHECK \t DETAIL) for libvirt-guest.sh. Speaks QMP itself (a few lines of JSON over
// the socket), so the checks do not trust vfpool's own client.
//
//   node libvirt-qmp.mjs vf SOCKET MAC VF_ADDR   (a) vfpool-vf0 is the VF: 8086:10ca in query-pci,
//                                                behind one of vfpool's root ports, host=VF_ADDR
//   node libvirt-qmp.mjs hybrid SOCKET MAC       (b) the standby virtio-net of MAC has failover=on;
//                                                the primary vfpool-vf0 is hidden (not in
//                                                query-pci), and QEMU holds it as that standby's
//                                                primary: a second primary is refused naming it
import net from 'node:net';

const [mode, socketPath, mac, vfAddr] = process.argv.slice(2);
if (!['vf', 'hybrid'].includes(mode) || !socketPath || !mac || (mode === 'vf' && !vfAddr)) {
  console.error('usage: libvirt-qmp.mjs vf SOCKET MAC VF_ADDR | hybrid SOCKET MAC');
  process.exit(2);
}
const tag = mode === 'vf' ? '(a)' : '(b)';
const row = (ok, name, detail = '') => console.log(`${ok ? 'PASS' : 'FAIL'}\t${tag} ${name}\t${String(detail).replace(/[\t\n]/g, ' ')}`);

function connect(path) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    const waiting = [];
    sock.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; ) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (!('event' in msg)) waiting.shift()?.(msg);
      }
    });
    sock.on('error', reject);
    const next = () => new Promise((res) => waiting.push(res));
    const exec = (execute, args) => {
      const p = next();
      sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
      return p;
    };
    next().then(() => exec('qmp_capabilities')).then(() => resolve({ exec, close: () => sock.end() }), reject);
  });
}

/** Every device of query-pci, with the bridge (its qdev_id) it sits behind. */
function devices(buses, parent = null, acc = []) {
  for (const bus of buses) {
    for (const d of bus.devices ?? []) {
      acc.push({ id: d.qdev_id, bus: bus.bus, slot: d.slot, fn: d.function, vendor: d.id.vendor, device: d.id.device, parent });
      if (d.pci_bridge) devices([{ bus: d.pci_bridge.bus?.secondary, devices: d.pci_bridge.devices }], d.qdev_id, acc);
    }
  }
  return acc;
}
const hex = (n) => n.toString(16).padStart(4, '0');

let qmp;
try {
  qmp = await connect(socketPath);
  row(true, `vfpool's QMP socket answers`, socketPath);
} catch (err) {
  row(false, `vfpool's QMP socket answers`, `${socketPath}: ${err.message}`);
  process.exit(0);
}

let pci = devices((await qmp.exec('query-pci')).return ?? []);
let vf0 = pci.find((d) => d.id === 'vfpool-vf0');
// query-pci lists a device behind a root port only once the guest's firmware has numbered the
// port's bus; under nested TCG the firmware may still be running when virsh start returns.
const t0 = Date.now();
while (mode === 'vf' && (!vf0 || vf0.bus === undefined) && Date.now() - t0 < 60_000) {
  await new Promise((r) => setTimeout(r, 500));
  pci = devices((await qmp.exec('query-pci')).return ?? []);
  vf0 = pci.find((d) => d.id === 'vfpool-vf0');
}
const waited = Date.now() - t0;

if (mode === 'vf') {
  const ok = vf0 && vf0.vendor === 0x8086 && vf0.device === 0x10ca && /^vfpool-rp\d+$/.test(vf0.parent ?? '');
  row(ok, 'query-pci of the nested QEMU shows the VF vfpool-vf0 as 8086:10ca behind a vfpool root port',
    vf0 ? `${hex(vf0.vendor)}:${hex(vf0.device)} at bus ${vf0.bus} slot ${vf0.slot}.${vf0.fn} behind ${vf0.parent}${waited > 100 ? ` (after ${waited} ms)` : ''}` : `not in query-pci after ${waited} ms (${pci.map((d) => d.id || `${hex(d.vendor)}:${hex(d.device)}`).join(', ')})`);
  const host = await qmp.exec('qom-get', { path: '/machine/peripheral/vfpool-vf0', property: 'host' });
  row(host.return === vfAddr, `vfpool-vf0 is vfio-pci host=${vfAddr}`, host.error ? host.error.desc : `host=${host.return}`);
} else {
  const list = (await qmp.exec('qom-list', { path: '/machine/peripheral' })).return ?? [];
  let standby = null;
  for (const c of list.filter((p) => p.type === 'child<virtio-net-pci>')) {
    const m = (await qmp.exec('qom-get', { path: `/machine/peripheral/${c.name}`, property: 'mac' })).return;
    if (m === mac) standby = c.name;
  }
  if (standby === null) {
    row(false, `the standby virtio-net-pci with mac ${mac} has failover=on`, `no virtio-net-pci with that mac among ${list.map((c) => `${c.name}:${c.type}`).join(', ')}`);
  } else {
    const f = await qmp.exec('qom-get', { path: `/machine/peripheral/${standby}`, property: 'failover' });
    row(f.return === true, `the standby virtio-net-pci with mac ${mac} has failover=on`, f.error ? f.error.desc : `${standby}: failover=${f.return}`);
    row(!vf0 && !list.some((c) => c.name === 'vfpool-vf0'), 'the primary vfpool-vf0 is hidden (in neither query-pci nor /machine/peripheral): no guest OS acked STANDBY',
      vf0 ? `present: ${hex(vf0.vendor)}:${hex(vf0.device)} behind ${vf0.parent}` : 'hidden');
    // QEMU keeps a hidden primary's options in the standby (virtio-net.c
    // failover_hide_primary_device) and refuses a second one, naming the first: the only way
    // QMP shows which device QEMU holds as the primary before negotiation.
    const probe = await qmp.exec('device_add', { driver: 'e1000e', id: 'vfpool-lab-probe', failover_pair_id: standby, mac });
    const desc = probe.error?.desc ?? 'accepted';
    const want = `Cannot attach more than one primary device to '${standby}': 'vfpool-vf0' and 'vfpool-lab-probe'`;
    row(desc === want, `QEMU holds vfpool-vf0 as the primary of ${standby} (a second primary is refused naming it)`, desc);
  }
}
qmp.close();
