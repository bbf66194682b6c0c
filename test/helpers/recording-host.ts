import type { Host } from '../../src/host/host.js';

export interface HostCall {
  method: string;
  args: unknown[];
}

/**
 * Wraps a Host, recording every call, and optionally failing the Nth call of a method (a fault
 * injector for rollback tests). The wrapper implements Host through a Proxy so it can never
 * fall behind the interface.
 */
export function recordingHost(inner: Host, fail?: { method: keyof Host; nth: number; error: Error }): { host: Host; calls: HostCall[] } {
  const calls: HostCall[] = [];
  const seen = new Map<string, number>();
  const host = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const method = String(prop);
        calls.push({ method, args });
        const n = (seen.get(method) ?? 0) + 1;
        seen.set(method, n);
        if (fail && fail.method === method && fail.nth === n) return Promise.reject(fail.error);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { host, calls };
}

export function numVfsWrites(calls: HostCall[], pf: string): number[] {
  return calls.filter((c) => c.method === 'writeNumVfs' && c.args[0] === pf).map((c) => c.args[1] as number);
}
