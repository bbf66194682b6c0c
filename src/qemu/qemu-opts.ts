import { BadInputError } from '../errors.js';

/**
 * QEMU's two spellings of an option value, as `-device`, `-netdev`, `-machine` and `-name`
 * take them: the QemuOpts form `driver,key=val,key2=val2`, where `,,` is a literal comma and
 * the first bare word is the option's implied key (`driver`, `type`, `guest`), and since QEMU
 * 6.0 a JSON object (`-device {"driver":"virtio-net-pci","id":"net0",…}`), which libvirt 11
 * uses for every `-device`. Both are read into one shape; edits are written back in the form
 * they came in, so libvirt's arguments stay JSON.
 */
export type OptValue = string | number | boolean;

export interface QemuOpts {
  form: 'json' | 'kv';
  /** Values as given: strings in the kv form; JSON numbers and booleans stay typed. */
  props: Record<string, OptValue>;
}

/** Splits at single commas; `,,` is a comma inside a value (QEMU's get_opt_value()). */
function splitKv(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  return parts;
}

/**
 * Parses one option value. `impliedKey` is the key a leading bare word stands for. A bare
 * word later on is QemuOpts' boolean shorthand (`key` = on). `what` names the argument in errors.
 */
export function parseQemuOpts(text: string, impliedKey: string, what: string): QemuOpts {
  if (text.startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new BadInputError(`${what}: '${text}' is not valid JSON: ${(err as Error).message}`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new BadInputError(`${what}: '${text}' is not a JSON object`);
    }
    const props: Record<string, OptValue> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      // Nested values (e.g. a -object's arrays) are kept as text: vfpool never edits them.
      props[k] = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : JSON.stringify(v);
    }
    return { form: 'json', props };
  }
  const props: Record<string, OptValue> = {};
  splitKv(text).forEach((part, i) => {
    if (part === '') return;
    const eq = part.indexOf('=');
    if (eq < 0) props[i === 0 ? impliedKey : part] = i === 0 ? part : 'on';
    else props[part.slice(0, eq)] = part.slice(eq + 1);
  });
  return { form: 'kv', props };
}

/** Writes props in the kv form, escaping commas; the implied key's value goes first, bare. */
export function formatKv(props: Record<string, OptValue>, impliedKey?: string): string {
  const esc = (v: OptValue) => String(typeof v === 'boolean' ? (v ? 'on' : 'off') : v).replace(/,/g, ',,');
  const parts: string[] = [];
  if (impliedKey !== undefined && props[impliedKey] !== undefined) parts.push(esc(props[impliedKey]!));
  for (const [k, v] of Object.entries(props)) {
    if (k === impliedKey) continue;
    parts.push(`${k}=${esc(v)}`);
  }
  return parts.join(',');
}

/** The value of a property as QEMU reads a bool (`on`, `true`, `yes`… or a JSON bool). */
export function optBool(v: OptValue | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'on' || v === 'true' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === 'no') return false;
  return undefined;
}

/** An integer property as QEMU reads it (decimal or 0x hex, or a JSON number). */
export function optInt(v: OptValue | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number') return Number.isInteger(v) ? v : undefined;
  if (typeof v !== 'string') return undefined;
  if (/^0x[0-9a-f]+$/i.test(v)) return parseInt(v, 16);
  if (/^[0-9]+$/.test(v)) return parseInt(v, 10);
  return undefined;
}

/** A PCI `addr` property: `S`, `S.F`, `0xS.0xF`, or a JSON number (devfn as slot). */
export function parsePciAddr(v: OptValue | undefined): { slot: number; fn: number } | null {
  if (v === undefined) return null;
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v < 32 ? { slot: v, fn: 0 } : null;
  if (typeof v !== 'string') return null;
  const m = /^(0x[0-9a-f]+|[0-9a-f]+)(?:\.(0x[0-7]|[0-7]))?$/i.exec(v);
  if (!m) return null;
  // QEMU's PCI address property reads the slot and function as hex with or without 0x.
  const slot = parseInt(m[1]!.replace(/^0x/i, ''), 16);
  const fn = m[2] === undefined ? 0 : parseInt(m[2].replace(/^0x/i, ''), 16);
  return slot < 32 ? { slot, fn } : null;
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
