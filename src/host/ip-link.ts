import { HostError } from '../errors.js';
import { macFromKernel } from '../types.js';
import type { LinkState, VfLinkChange, VfLinkConfig } from './host.js';
import { ipLinkWords } from '../vf-settings.js';

/**
 * iproute2's JSON for `ip -j -d link show dev PF`: `vfinfo_list` holds one object per VF.
 * iproute2 prints a field only when the driver reports it, and `vlan`/`qos` only when non-zero
 * (a VF without VLAN shows `"vlan_list":[{}]`), so absent means 0 or "not reported".
 */
interface IpVfInfo {
  vf: number;
  address?: string;
  mac?: string;
  vlan_list?: Array<{ vlan?: number; qos?: number }>;
  vlan?: number;
  qos?: number;
  tx_rate?: number;
  max_tx_rate?: number;
  min_tx_rate?: number;
  rate?: { max_tx?: number; min_tx?: number };
  spoofchk?: boolean;
  trust?: boolean;
  link_state?: string;
}

export function parseVfInfoList(json: string, pf: string): Map<number, VfLinkConfig> {
  let links: Array<{ vfinfo_list?: IpVfInfo[] }>;
  try {
    links = JSON.parse(json);
  } catch (err) {
    throw new HostError(`ip -j link show ${pf}: output is not JSON`, { cause: err });
  }
  const out = new Map<number, VfLinkConfig>();
  for (const vf of links[0]?.vfinfo_list ?? []) {
    const vl = vf.vlan_list?.[0] ?? {};
    const state = vf.link_state;
    out.set(vf.vf, {
      mac: macFromKernel(vf.address ?? vf.mac ?? '00:00:00:00:00:00'),
      vlan: vl.vlan ?? vf.vlan ?? 0,
      qos: vl.qos ?? vf.qos ?? 0,
      spoofchk: vf.spoofchk ?? null,
      trust: vf.trust ?? null,
      linkState: state === 'auto' || state === 'enable' || state === 'disable' ? (state as LinkState) : null,
      minTxRate: vf.min_tx_rate ?? vf.rate?.min_tx ?? 0,
      maxTxRate: vf.max_tx_rate ?? vf.rate?.max_tx ?? vf.tx_rate ?? 0,
    });
  }
  return out;
}

/** `ip link set dev PF vf N …` arguments for a change; qos only travels with a vlan. */
export function vfLinkSetArgs(pf: string, vf: number, change: VfLinkChange): string[] {
  return ['link', 'set', 'dev', pf, 'vf', String(vf), ...ipLinkWords(change)];
}
