/**
 * A Host that fails on purpose: it forwards every call to a real Host (simulated, or LinuxHost
 * on a fixture tree) and makes call number `failAt` (1-based, counting every method call, reads
 * included; or each of several numbers) throw a HostError instead, once. With `failAt` 0 it only counts, which is how a
 * test learns how many calls an operation makes before injecting a failure at each of them.
 * What it models: any single kernel or iproute2 operation failing (EIO), at any point.
 */
import { HostError } from '../../src/errors.js';
import type { Host } from '../../src/host/host.js';

export interface FaultyHost {
  host: Host;
  /** Method names in call order. */
  calls: string[];
  /** The method name of the injected failure, once it happened. */
  injected: string | null;
}

const MUTATORS = new Set(['writeNumVfs', 'setVfLink', 'setMtu', 'bindDriver', 'setVfioGroupOwner']);

export function isMutator(method: string): boolean {
  return MUTATORS.has(method);
}

export function faultyHost(inner: Host, failAt: number | number[]): FaultyHost {
  const at = new Set(Array.isArray(failAt) ? failAt : [failAt]);
  const f: FaultyHost = { host: inner, calls: [], injected: null };
  f.host = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      // Not a kernel operation that fails: a boot id it cannot read is null (Host.bootId), and
      // it is synchronous.
      if (prop === 'bootId') return () => (v as () => string | null).apply(target);
      return async (...args: unknown[]) => {
        f.calls.push(String(prop));
        if (at.has(f.calls.length)) {
          f.injected ??= String(prop);
          throw new HostError(`injected failure in ${String(prop)} (call ${f.calls.length})`, { code: 'EIO' });
        }
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return f;
}
