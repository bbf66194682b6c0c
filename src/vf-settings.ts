import { BadInputError } from './errors.js';
import { escapeControl, quoteInput } from './util/quote.js';
import type { LinkState, VfLinkChange } from './types.js';

/**
 * The VF settings a guest may ask for, defined once: the XML attribute that carries each, how
 * it is parsed, whether it is a kernel VF link attribute (set through the PF with `ip link set
 * PF vf N`) or the VF netdev's MTU, and how it reads in a plan. The domain XML parser, the
 * planner, the saved/applied records and the plan descriptions all go through this table, so a
 * new setting is one entry here plus what the kernel needs to apply it.
 */
export interface VfSettings {
  vlan: number | null;
  qos: number | null;
  spoofchk: boolean | null;
  trust: boolean | null;
  linkState: LinkState | null;
  minTxRate: number | null;
  maxTxRate: number | null;
  mtu: number | null;
}

export type VfSettingKey = keyof VfSettings;

interface SettingDef<K extends VfSettingKey> {
  /** The attribute of `<vfpool:hostdev>` that asks for it. */
  attr: string;
  parse: (raw: string, field: string) => NonNullable<VfSettings[K]>;
  /**
   * The keyword of `ip link set dev PF vf N KEYWORD VALUE` for a VF link attribute (IFLA_VF_*);
   * null for the VF netdev's MTU, which is set on the netdev itself.
   */
  ip: string | null;
  /** How a value reads in a plan line ("VLAN 10", "spoofchk on"). */
  describe: (v: NonNullable<VfSettings[K]>) => string;
  /** Its JSON type in a migration description (the parsed value's type). */
  json: 'number' | 'boolean' | 'string';
}

function intIn(min: number, max: number, hint?: string) {
  return (raw: string, field: string, what: string): number => {
    if (!/^[0-9]+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max) {
      throw new BadInputError(`${field}: ${what}=${quoteInput(raw)} is not a whole number from ${min} to ${max}`, hint);
    }
    return Number(raw);
  };
}

function onOff(raw: string, field: string, what: string): boolean {
  if (raw === 'on' || raw === 'yes') return true;
  if (raw === 'off' || raw === 'no') return false;
  throw new BadInputError(`${field}: ${what}=${quoteInput(raw)} must be 'on' or 'off' ('yes'/'no' also accepted)`);
}

const onOffText = (v: boolean) => (v ? 'on' : 'off');

export const VF_SETTINGS: { [K in VfSettingKey]: SettingDef<K> } = {
  vlan: { attr: 'vlan', ip: 'vlan', json: 'number', parse: (r, f) => intIn(0, 4095, 'a VLAN id is 0 (none) to 4095')(r, f, 'vlan'), describe: (v) => `VLAN ${v}` },
  qos: { attr: 'qos', ip: 'qos', json: 'number', parse: (r, f) => intIn(0, 7, 'qos is the 802.1p priority, 0 to 7')(r, f, 'qos'), describe: (v) => `qos ${v}` },
  spoofchk: { attr: 'spoofchk', ip: 'spoofchk', json: 'boolean', parse: (r, f) => onOff(r, f, 'spoofchk'), describe: (v) => `spoofchk ${onOffText(v)}` },
  trust: { attr: 'trust', ip: 'trust', json: 'boolean', parse: (r, f) => onOff(r, f, 'trust'), describe: (v) => `trust ${onOffText(v)}` },
  linkState: {
    attr: 'link-state',
    ip: 'state',
    json: 'string',
    parse: (raw, field) => {
      if (raw === 'auto' || raw === 'enable' || raw === 'disable') return raw;
      throw new BadInputError(`${field}: link-state=${quoteInput(raw)} must be 'auto', 'enable' or 'disable'`);
    },
    describe: (v) => `link-state ${v}`,
  },
  minTxRate: { attr: 'min-tx-rate', ip: 'min_tx_rate', json: 'number', parse: (r, f) => intIn(0, 1_000_000, 'rates are in Mbit/s')(r, f, 'min-tx-rate'), describe: (v) => `min_tx_rate ${v}` },
  maxTxRate: { attr: 'max-tx-rate', ip: 'max_tx_rate', json: 'number', parse: (r, f) => intIn(0, 1_000_000, 'rates are in Mbit/s')(r, f, 'max-tx-rate'), describe: (v) => `max_tx_rate ${v}` },
  mtu: { attr: 'mtu', ip: null, json: 'number', parse: (r, f) => intIn(68, 65535)(r, f, 'mtu'), describe: (v) => `MTU ${v}` },
};

export const VF_SETTING_KEYS = Object.keys(VF_SETTINGS) as VfSettingKey[];

/** Every setting left as the VF has it. */
export function noVfSettings(): VfSettings {
  return { vlan: null, qos: null, spoofchk: null, trust: null, linkState: null, minTxRate: null, maxTxRate: null, mtu: null };
}

/** Just the settings of a larger object (a request), nothing else. */
export function vfSettingsOf(from: VfSettings): VfSettings {
  const out = noVfSettings() as Record<VfSettingKey, unknown>;
  for (const k of VF_SETTING_KEYS) out[k] = from[k];
  return out as unknown as VfSettings;
}

/**
 * Parses the settings from an element's attributes (`get`), then the rules between them: the
 * kernel sets qos together with the VLAN; a minimum rate above the maximum is refused.
 */
export function parseVfSettings(get: (attr: string) => string | undefined, field: string): VfSettings {
  const s = noVfSettings() as Record<VfSettingKey, unknown>;
  for (const k of VF_SETTING_KEYS) {
    const raw = get(VF_SETTINGS[k].attr);
    if (raw !== undefined) s[k] = VF_SETTINGS[k].parse(raw, field);
  }
  const v = s as unknown as VfSettings;
  if (v.qos !== null && v.vlan === null) {
    throw new BadInputError(`${field}: qos='${v.qos}' needs a vlan`, "the kernel sets the priority together with the VLAN: add vlan='…'");
  }
  if (v.minTxRate !== null && v.maxTxRate !== null && v.maxTxRate !== 0 && v.minTxRate > v.maxTxRate) {
    throw new BadInputError(`${field}: min-tx-rate='${v.minTxRate}' is above max-tx-rate='${v.maxTxRate}'`);
  }
  return v;
}

/** Settings as JSON (a migration description): only those asked for, keyed as VfSettings. */
export type VfSettingsJson = { [K in VfSettingKey]?: NonNullable<VfSettings[K]> };

export function vfSettingsToJson(s: VfSettings): VfSettingsJson {
  const out: Record<string, unknown> = {};
  for (const k of VF_SETTING_KEYS) if (s[k] !== null) out[k] = s[k];
  return out as VfSettingsJson;
}

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `the ${typeof v} ${quoteInput(String(v))}`;
}

/**
 * Settings that came as JSON from another host (`vfSettingsToJson`'s form), checked by the
 * parsers and rules of `<vfpool:hostdev>`'s attributes: another host's vfpool is input like any
 * XML. An unknown key, a value of the wrong type or out of range is bad input naming it; null is
 * "leave as the VF has it".
 */
export function parseVfSettingsJson(value: Record<string, unknown>, field: string): VfSettings {
  const attrs = new Map<string, string>();
  for (const [k, v] of Object.entries(value)) {
    if (!(VF_SETTING_KEYS as string[]).includes(k)) {
      throw new BadInputError(`${field}.${escapeControl(k.slice(0, 64))} is not a VF setting`, `the settings are ${VF_SETTING_KEYS.join(', ')}`);
    }
    if (v === null) continue;
    const def = VF_SETTINGS[k as VfSettingKey];
    if (typeof v !== def.json) throw new BadInputError(`${field}.${k} is ${jsonKind(v)}, expected a ${def.json}`);
    const raw = typeof v === 'boolean' ? onOffText(v) : String(v);
    // Parsed here too so that a bad value names its key; parseVfSettings adds the rules between them.
    def.parse(raw, `${field}.${k}`);
    attrs.set(def.attr, raw);
  }
  return parseVfSettings((attr) => attrs.get(attr), field);
}

/**
 * The VF link change the settings ask for: only the link settings named (not null). qos travels
 * with the VLAN (0 when only a VLAN is given): the kernel sets them as one attribute.
 */
export function linkChangeOf(s: VfSettings): VfLinkChange {
  const c: Record<string, unknown> = {};
  for (const k of VF_SETTING_KEYS) {
    if (VF_SETTINGS[k].ip === null || k === 'qos' || s[k] === null) continue;
    c[k] = s[k];
    if (k === 'vlan') c.qos = s.qos ?? 0;
  }
  return c as VfLinkChange;
}

/** A link change in plan words ("admin MAC …, VLAN 10 qos 3, spoofchk off"). */
export function describeLinkChange(c: VfLinkChange): string {
  const parts: string[] = [];
  if (c.mac !== undefined) parts.push(`admin MAC ${c.mac}`);
  for (const k of VF_SETTING_KEYS) {
    if (k === 'qos' || VF_SETTINGS[k].ip === null) continue;
    const v = c[k as keyof VfLinkChange];
    if (v === undefined || v === null) continue;
    let text = (VF_SETTINGS[k].describe as (x: unknown) => string)(v);
    if (k === 'vlan' && c.qos !== undefined) text += ` ${VF_SETTINGS.qos.describe(c.qos)}`;
    parts.push(text);
  }
  return parts.join(', ') || 'nothing';
}

/** The `ip link set dev PF vf N …` words for a link change, in the kernel's order; qos only travels with a vlan. */
export function ipLinkWords(c: VfLinkChange): string[] {
  const words: string[] = [];
  if (c.mac !== undefined) words.push('mac', c.mac);
  for (const k of VF_SETTING_KEYS) {
    const keyword = VF_SETTINGS[k].ip;
    const v = c[k as keyof VfLinkChange];
    if (keyword === null || v === undefined || v === null || (k === 'qos' && c.vlan === undefined)) continue;
    words.push(keyword, typeof v === 'boolean' ? onOffText(v) : String(v));
  }
  return words;
}
