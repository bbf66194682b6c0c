// Prototype of option H (docs/libvirt-delivery.md), run by the qemu hook at `started begin`:
// deliver the vfio nodes / cgroup / memlock to libvirt's QEMU (src/qemu/deliver.ts, built), then
// device_add over a QMP socket with a MINIMAL QMP exchange (the real client is src/qemu/qmp.ts,
// another helper's). Each attempt in the config's `attempts` is tried in order and its outcome
// (QMP error text or the device in query-pci) and timings appended to the JSON log.
//
// usage: node libvirt-delivery-hook.mjs CONFIG.json   (stdin: the domain XML from libvirt)
import { readFileSync, appendFileSync } from 'node:fs';
import net from 'node:net';
import { deliverVfioToQemu, defaultDeliverDeps, memlockForVfio } from '../../dist/src/qemu/deliver.js';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const xml = readFileSync(0, 'utf8');
const log = (o) => appendFileSync(cfg.log, JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? String(v) : v)) + '\n');
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000;

function qmpSession(path) {
  const sock = net.connect(path);
  let buf = '';
  const waiting = [];
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const msg = JSON.parse(line);
      if ('event' in msg) continue;
      waiting.shift()?.(msg);
    }
  });
  const next = () => new Promise((res) => waiting.push(res));
  const greeting = next();
  return {
    async open() { await greeting; return this.exec('qmp_capabilities'); },
    async exec(execute, args) {
      const p = next();
      sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
      return p;
    },
    close() { sock.end(); },
  };
}

function findDevice(buses, id) {
  for (const bus of buses) for (const d of bus.devices ?? []) {
    if (d.qdev_id === id) return { bus: bus.bus, slot: d.slot, function: d.function, vendor: d.id.vendor, device: d.id.device };
    const inner = d.pci_bridge ? findDevice([{ bus: d.pci_bridge.bus?.secondary, devices: d.pci_bridge.devices }], id) : null;
    if (inner) return inner;
  }
  return null;
}

const pid = Number(readFileSync(`/run/libvirt/qemu/${cfg.domain}.pid`, 'utf8').trim());
const memKiB = BigInt(/<memory unit='KiB'>([0-9]+)<\/memory>/.exec(xml)?.[1] ?? /<memory unit="KiB">([0-9]+)<\/memory>/.exec(xml)[1]);
const label = /<label>\+([0-9]+):\+([0-9]+)<\/label>/.exec(xml);
const [uid, gid] = [Number(label[1]), Number(label[2])];
const deps = { ...defaultDeliverDeps(), ...(cfg.devRoot ? { devRoot: cfg.devRoot } : {}) };
const limits = () => /Max locked memory\s+(\S+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))[1];
log({ at: 'started', pid, uid, gid, memKiB: String(memKiB), memlockBefore: limits(), cgroup: readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n') });

const qmp = qmpSession(cfg.qmpSocket);
await qmp.open();
for (const a of cfg.attempts) {
  const rec = { attempt: a.name };
  if (a.deliver) {
    const t = now();
    const memlock = a.deliver === 'no-memlock' ? 8n * 1024n * 1024n : memlockForVfio(memKiB * 1024n);
    try {
      const r = await deliverVfioToQemu({ pid, groups: cfg.groups, uid, gid, memlockBytes: memlock }, deps);
      rec.deliver = { ms: +(now() - t).toFixed(1), steps: r.steps, ns: r.privateMountNamespace, cgroup: r.cgroup };
    } catch (err) {
      rec.deliver = { ms: +(now() - t).toFixed(1), error: err.toLine?.() ?? err.message };
    }
    rec.memlockAfter = limits();
  }
  if (a.device) {
    const t = now();
    const r = await qmp.exec('device_add', a.device);
    rec.deviceAdd = { ms: +(now() - t).toFixed(1), reply: r.error ?? 'ok' };
    if (!r.error) {
      for (const until = now() + (cfg.waitMs ?? 30000); now() < until; ) {
        const pci = await qmp.exec('query-pci');
        const found = findDevice(pci.return, a.device.id);
        if (found) { rec.queryPci = { ms: +(now() - t).toFixed(1), ...found }; break; }
        await new Promise((res) => setTimeout(res, 50));
      }
      rec.queryPci ??= { ms: +(now() - t).toFixed(1), missing: true };
    }
  }
  log(rec);
}
qmp.close();
