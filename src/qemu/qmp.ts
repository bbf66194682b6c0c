import type { Socket } from 'node:net';
import { errnoOf, HostError } from '../errors.js';

/**
 * A QMP client in three layers, like QEMU's own qemu.qmp: the protocol (JSON objects over a
 * unix socket, one per line, replies matched by id), the client (greeting, capability
 * negotiation, execute with a timeout), and events (waiters registered BEFORE the command that
 * causes the event: DEVICE_DELETED can arrive before device_del's reply). It knows no command
 * names but `qmp_capabilities`, which is the protocol's own handshake.
 */

/** QEMU answered a command with an error; `errorClass` is QMP's (`GenericError`, `DeviceNotFound`, …). */
export class QmpCommandError extends HostError {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`, { code: errorClass });
  }
}

/** QEMU went away (socket closed or never there): every pending command and waiter gets this. */
export class QmpClosedError extends HostError {}

/** No answer, or no event, in time. */
export class QmpTimeoutError extends HostError {}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

type Message = Record<string, unknown>;

/**
 * The longest reply vfpool reads (query-qmp-schema, the largest QEMU gives, is under 1 MiB). The
 * socket is in a directory the QEMU user writes, so root may be talking to whatever that user
 * put there: an endless line would otherwise grow in root's memory until the hook died.
 */
const MAX_QMP_LINE = 16 * 1048576;

/** Layer 1: framing. QEMU sends one JSON object per line (CRLF); so does vfpool. */
class QmpProtocol {
  private partial: string[] = [];
  private partialLength = 0;
  private closed: QmpClosedError | null = null;
  onMessage: (m: Message) => void = () => undefined;
  onClose: (e: QmpClosedError) => void = () => undefined;

  constructor(private readonly socket: Socket, readonly path: string) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      // The start of a line lies in `partial` (pieces, joined once its end comes): searching and
      // re-flattening the whole buffer at every chunk made a long line quadratic.
      let from = 0;
      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n', from)) {
        const line = (this.partial.join('') + chunk.slice(from, nl)).trim();
        this.partial = [];
        this.partialLength = 0;
        from = nl + 1;
        if (line === '') continue;
        let m: unknown;
        try {
          m = JSON.parse(line);
        } catch {
          this.close(new QmpClosedError(`QMP socket ${path} sent something that is not JSON: ${line.slice(0, 80)}`));
          return;
        }
        if (m && typeof m === 'object') this.onMessage(m as Message);
      }
      if (from < chunk.length) {
        this.partial.push(chunk.slice(from));
        this.partialLength += chunk.length - from;
      }
      if (this.partialLength > MAX_QMP_LINE) {
        this.close(new QmpClosedError(`QMP socket ${path} sent more than ${MAX_QMP_LINE / 1048576} MiB without a line end, which QEMU never does`));
      }
    });
    socket.on('error', (err) => this.close(new QmpClosedError(`QMP socket ${path}: ${errnoOf(err) ?? err.message} (QEMU is gone?)`, { code: errnoOf(err), cause: err })));
    socket.on('close', () => this.close(new QmpClosedError(`QEMU closed its QMP socket ${path} (QEMU is gone?)`)));
  }

  send(m: Message): void {
    if (this.closed) throw this.closed;
    this.socket.write(JSON.stringify(m) + '\n');
  }

  close(e: QmpClosedError): void {
    if (this.closed) return;
    this.closed = e;
    this.socket.destroy();
    this.onClose(e);
  }

  get closedError(): QmpClosedError | null {
    return this.closed;
  }
}

/** A registered wait for one event; `promise` settles once. */
export interface EventWaiter {
  promise: Promise<QmpEvent>;
  cancel(): void;
}

/** Layer 3: events. */
class QmpEvents {
  private waiters = new Set<{ name: string; match: (d: Record<string, unknown>) => boolean; resolve: (e: QmpEvent) => void; reject: (e: Error) => void }>();
  private listeners = new Set<(e: QmpEvent) => void>();

  constructor(private readonly isClosed: () => QmpClosedError | null) {}

  dispatch(e: QmpEvent): void {
    for (const l of this.listeners) l(e);
    for (const w of [...this.waiters]) {
      if (w.name === e.event && w.match(e.data)) {
        this.waiters.delete(w);
        w.resolve(e);
      }
    }
  }

  failAll(err: Error): void {
    for (const w of this.waiters) w.reject(err);
    this.waiters.clear();
  }

  /** Every event, for logging; returns the unsubscribe function. */
  listen(fn: (e: QmpEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Registers now; call it before the command that causes the event. */
  waitFor(name: string, match: (data: Record<string, unknown>) => boolean = () => true, opts: { timeoutMs?: number } = {}): EventWaiter {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let entry!: Parameters<typeof this.waiters.add>[0];
    let timer: NodeJS.Timeout | undefined;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      const closed = this.isClosed();
      if (closed) return reject(closed);
      entry = {
        name,
        match,
        resolve: (e) => (clearTimeout(timer), resolve(e)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.waiters.add(entry);
      timer = setTimeout(() => {
        this.waiters.delete(entry);
        reject(new QmpTimeoutError(`no QMP event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    // A waiter nobody awaits (the command failed first) must not crash the process.
    promise.catch(() => undefined);
    return {
      promise,
      cancel: () => {
        clearTimeout(timer);
        if (entry) this.waiters.delete(entry);
      },
    };
  }
}

/** Layer 2: the client. */
export class QmpClient {
  readonly events: QmpEvents;
  private nextId = 0;
  private pending = new Map<string, { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private greetingWaiter: ((m: Message) => void) | null = null;

  private constructor(private readonly protocol: QmpProtocol, readonly path: string) {
    this.events = new QmpEvents(() => protocol.closedError);
    protocol.onMessage = (m) => this.route(m);
    protocol.onClose = (e) => {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(e);
      }
      this.pending.clear();
      this.events.failAll(e);
    };
  }

  /** The greeting's `QMP.version.qemu` ({major, minor, micro}), after connect. */
  version: { major: number; minor: number; micro: number } | null = null;

  /**
   * Connects, reads the greeting and negotiates capabilities. A socket that is not there, or
   * nobody listening on it, is a QmpClosedError saying QEMU is not running.
   */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    // node:net loaded here, not at start-up: the CLI bundles every command, most never connect.
    const { connect: netConnect } = await import('node:net');
    const socket = netConnect(path);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => (socket.destroy(), reject(new QmpTimeoutError(`cannot connect to QMP socket ${path} within ${timeoutMs} ms`))), timeoutMs);
      socket.once('connect', () => (clearTimeout(t), resolve()));
      socket.once('error', (err) => {
        clearTimeout(t);
        reject(new QmpClosedError(`cannot connect to QMP socket ${path}: ${errnoOf(err) ?? err.message} (is QEMU running?)`, { code: errnoOf(err), cause: err }));
      });
    });
    const client = new QmpClient(new QmpProtocol(socket, path), path);
    const greeting = await client.awaitGreeting(timeoutMs);
    const v = (greeting.QMP as { version?: { qemu?: QmpClient['version'] } } | undefined)?.version?.qemu;
    client.version = v ?? null;
    await client.execute('qmp_capabilities', undefined, { timeoutMs });
    return client;
  }

  private awaitGreeting(timeoutMs: number): Promise<Message> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => (this.protocol.close(new QmpClosedError(`no QMP greeting on ${this.path}`)), reject(new QmpTimeoutError(`no QMP greeting on ${this.path} within ${timeoutMs} ms`))), timeoutMs);
      const prevClose = this.protocol.onClose;
      this.protocol.onClose = (e) => (clearTimeout(t), prevClose(e), reject(e));
      this.greetingWaiter = (m) => {
        clearTimeout(t);
        this.protocol.onClose = prevClose;
        resolve(m);
      };
    });
  }

  private route(m: Message): void {
    if ('QMP' in m) {
      this.greetingWaiter?.(m);
      this.greetingWaiter = null;
      return;
    }
    if (typeof m.event === 'string') {
      this.events.dispatch({ event: m.event, data: (m.data as Record<string, unknown>) ?? {}, timestamp: m.timestamp as QmpEvent['timestamp'] });
      return;
    }
    const id = typeof m.id === 'string' ? m.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p) return; // a reply to a command that timed out
    this.pending.delete(id!);
    clearTimeout(p.timer);
    if ('error' in m) {
      const err = m.error as { class?: string; desc?: string };
      p.reject(new QmpCommandError(p.command, err.class ?? 'GenericError', err.desc ?? JSON.stringify(m.error)));
    } else p.resolve(m.return);
  }

  /** Runs one command; resolves with its `return`, rejects with QmpCommandError, QmpTimeoutError or QmpClosedError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const id = `vfpool-${++this.nextId}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(`QMP ${command} got no answer within ${timeoutMs} ms on ${this.path}`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        this.protocol.send(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(err);
      }
    });
  }

  close(): void {
    this.protocol.close(new QmpClosedError(`QMP connection to ${this.path} closed by vfpool`));
  }
}
