import { errnoOf } from '../errors.js';

/**
 * Whether a QEMU still serves vfpool's QMP socket, without talking QMP: QEMU created the
 * socket (`server=on`), so a socket file nobody accepts on (ECONNREFUSED) means its QEMU is
 * gone, and no file (ENOENT) means no QEMU was started through the wrapper yet. A live QEMU
 * serving another client still accepts the connection into its backlog, so it reads as live.
 */
export async function probeQmpSocket(path: string, timeoutMs = 2000): Promise<'live' | 'dead' | 'absent' | 'unknown'> {
  const { connect } = await import('node:net'); // loaded when used: the CLI's start-up stays without it
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: 'live' | 'dead' | 'absent' | 'unknown') => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done('unknown'), timeoutMs);
    s.once('connect', () => done('live'));
    s.once('error', (err) => {
      const code = errnoOf(err);
      done(code === 'ECONNREFUSED' ? 'dead' : code === 'ENOENT' ? 'absent' : 'unknown');
    });
  });
}
