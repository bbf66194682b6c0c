import { createConnection, type Socket } from 'node:net';
import { execa } from 'execa';
import { HostError } from '../errors.js';
import type { MigrationQmp, QmpEvent, QmpEventWaiter } from './ports.js';

/**
 * MigrationQmp over a QMP unix socket (vfpool's `qemu/NAME/qmp.sock`). Small on purpose: the
 * project's QMP client is src/qemu/qmp.ts (helper "qemu-core"); once it lands, this file
 * becomes an adapter to it. Events are dispatched to listeners registered before the command.
 */
export async function connectQmp(path: string, timeoutMs = 10_000): Promise<MigrationQmp & { close(): void }> {
  const sock: Socket = createConnection(path);
  let buf = '';
  let gone: Error | null = null;
  const pending: Array<{ resolve(v: unknown): void; reject(e: Error): void }> = [];
  const listeners = new Set<{ event: string; match(d: Record<string, unknown>): boolean; resolve(e: QmpEvent): void; reject(e: Error): void }>();
  let greeting: ((v: unknown) => void) | null = null;
  const failAll = (err: Error) => {
    gone = err;
    for (const p of pending.splice(0)) p.reject(err);
    for (const l of [...listeners]) l.reject(err);
    listeners.clear();
  };
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if ('QMP' in msg) { greeting?.(msg); greeting = null; continue; }
      if ('event' in msg) {
        const ev: QmpEvent = { event: String(msg.event), data: (msg.data ?? {}) as Record<string, unknown> };
        for (const l of [...listeners]) if (l.event === ev.event && l.match(ev.data)) { listeners.delete(l); l.resolve(ev); }
        continue;
      }
      const p = pending.shift();
      if (!p) continue;
      if ('error' in msg) {
        const e = msg.error as { class?: string; desc?: string };
        p.reject(new HostError(`QMP ${e.class ?? 'error'}: ${e.desc ?? 'no description'}`, { code: e.class }));
      } else p.resolve(msg.return);
    }
  });
  sock.on('error', (err) => failAll(new HostError(`QMP socket ${path}: ${err.message}`, { code: (err as NodeJS.ErrnoException).code, hint: 'is the domain\'s QEMU running (started through vfpool-qemu)?' })));
  sock.on('close', () => failAll(new HostError(`QMP socket ${path} closed: QEMU is gone`)));

  const bounded = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new HostError(`QMP ${what} on ${path}: no answer within ${ms} ms`)), ms);
    p.then((v) => { clearTimeout(timer); resolve(v); }, (e) => { clearTimeout(timer); reject(e); });
  });
  const execute = (command: string, args?: Record<string, unknown>, ms = timeoutMs): Promise<unknown> => {
    if (gone) return Promise.reject(gone);
    const p = new Promise<unknown>((resolve, reject) => pending.push({ resolve, reject }));
    sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return bounded(p, ms, command);
  };
  await bounded(new Promise((resolve) => { greeting = resolve; }), timeoutMs, 'greeting');
  await execute('qmp_capabilities');
  return {
    execute,
    listen(event, match, ms): QmpEventWaiter {
      let entry!: { event: string; match(d: Record<string, unknown>): boolean; resolve(e: QmpEvent): void; reject(e: Error): void };
      let timer: NodeJS.Timeout | undefined;
      const promise = new Promise<QmpEvent>((resolve, reject) => {
        entry = { event, match, resolve: (e) => { clearTimeout(timer); resolve(e); }, reject: (e) => { clearTimeout(timer); reject(e); } };
        if (gone) return reject(gone);
        listeners.add(entry);
        timer = setTimeout(() => { listeners.delete(entry); reject(new HostError(`no ${event} event within ${ms} ms`)); }, ms);
      });
      promise.catch(() => {});
      return { promise, cancel: () => { listeners.delete(entry); clearTimeout(timer); } };
    },
    close: () => sock.destroy(),
  };
}

/**
 * MigrationQmp through another host's libvirt (`virsh -c URI qemu-monitor-command`): how
 * `vfpool migrate DOMAIN DEST_URI` reaches the destination's QEMU. Commands only: libvirt's
 * monitor passes no events to virsh.
 */
export function virshQmp(uri: string, domain: string): MigrationQmp {
  return {
    async execute(command, args, ms = 30_000) {
      const r = await execa('virsh', ['-c', uri, 'qemu-monitor-command', domain, JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })], { reject: false, timeout: ms });
      if (r.exitCode !== 0) throw new HostError(`virsh -c ${uri} qemu-monitor-command ${domain} ${command}: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`);
      const msg = JSON.parse(String(r.stdout)) as { return?: unknown; error?: { class?: string; desc?: string } };
      if (msg.error) throw new HostError(`QMP ${msg.error.class ?? 'error'} from ${domain} at ${uri}: ${msg.error.desc ?? ''}`, { code: msg.error.class });
      return msg.return;
    },
    listen(event) {
      throw new HostError(`waiting for ${event} through virsh is not possible (libvirt keeps QEMU's events)`, { hint: 'use vfpool\'s QMP socket on that host' });
    },
  };
}
