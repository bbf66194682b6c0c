import { createServer, type Server, type Socket } from 'node:net';

/**
 * An in-process QMP server (what it models: QEMU's monitor in control mode). It sends QEMU's
 * greeting, insists on qmp_capabilities first (as QEMU does: "Expecting capabilities
 * negotiation with 'qmp_capabilities'"), and answers each command through `handler`, which
 * may emit events before or after the reply, reply with an error, or never reply.
 */
export type FakeReply =
  | { return: unknown; eventsBefore?: Array<{ event: string; data?: unknown }>; eventsAfter?: Array<{ event: string; data?: unknown }> }
  | { error: { class: string; desc: string } }
  | { silent: true }
  | { hangUp: true };

export interface FakeQmp {
  path: string;
  received: Array<{ execute: string; arguments?: unknown }>;
  close(): Promise<void>;
  /** Sends an event to every connected client. */
  emit(event: string, data?: unknown): void;
}

export async function startFakeQmp(path: string, handler: (cmd: string, args: unknown) => FakeReply): Promise<FakeQmp> {
  const received: FakeQmp['received'] = [];
  const sockets = new Set<Socket>();
  const send = (s: Socket, m: unknown) => s.write(JSON.stringify(m) + '\r\n');
  const event = (e: { event: string; data?: unknown }) => ({ event: e.event, data: e.data ?? {}, timestamp: { seconds: 1, microseconds: 2 } });
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    // A client killed mid-conversation (the crash suite's SIGKILL) resets the connection; QEMU's
    // monitor drops such a client and goes on serving others, so does this one.
    s.on('error', () => s.destroy());
    let negotiated = false;
    let buf = '';
    send(s, { QMP: { version: { qemu: { major: 10, minor: 0, micro: 2 }, package: 'fake' }, capabilities: ['oob'] } });
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; arguments?: unknown; id?: unknown };
        buf = buf.slice(nl + 1);
        received.push({ execute: msg.execute, ...(msg.arguments !== undefined ? { arguments: msg.arguments } : {}) });
        if (msg.execute === 'qmp_capabilities') {
          negotiated = true;
          send(s, { return: {}, id: msg.id });
          continue;
        }
        if (!negotiated) {
          send(s, { error: { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" }, id: msg.id });
          continue;
        }
        const r = handler(msg.execute, msg.arguments);
        if ('silent' in r) continue;
        if ('hangUp' in r) {
          s.destroy();
          continue;
        }
        if ('error' in r) {
          send(s, { error: r.error, id: msg.id });
          continue;
        }
        for (const e of r.eventsBefore ?? []) send(s, event(e));
        send(s, { return: r.return, id: msg.id });
        for (const e of r.eventsAfter ?? []) send(s, event(e));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    received,
    emit: (e, data) => sockets.forEach((s) => send(s, event({ event: e, data }))),
    close: () => new Promise<void>((resolve) => {
      sockets.forEach((s) => s.destroy());
      server.close(() => resolve());
    }),
  };
}
