/**
 * A fake iproute2 `ip` over the fixture kernel (see fixture-kernel.ts). It records every argv
 * as a JSON line in ip-calls.jsonl (tests assert on the exact commands LinuxHost runs) and
 * implements the subset vfpool uses, printing JSON the way iproute2 6.x does: `vlan`/`qos` only
 * when non-zero, so a VF without VLAN shows "vlan_list":[{}].
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import * as kernel from '../../src/host/sim-kernel.js';
import { loadKernel, saveAndRender } from './fixture-kernel.js';

function vfJson(vf: kernel.SimVf): Record<string, unknown> {
  const vlan: Record<string, number> = {};
  if (vf.vlan) vlan.vlan = vf.vlan;
  if (vf.qos) vlan.qos = vf.qos;
  return {
    vf: vf.index,
    link_type: 'ether',
    address: vf.mac,
    broadcast: 'ff:ff:ff:ff:ff:ff',
    vlan_list: [vlan],
    rate: { max_tx: vf.maxTxRate, min_tx: vf.minTxRate },
    spoofchk: vf.spoofchk,
    link_state: vf.linkState,
    trust: vf.trust,
    query_rss_en: false,
  };
}

export function fakeIp(root: string, argv: string[]): number {
  appendFileSync(join(root, 'ip-calls.jsonl'), JSON.stringify(argv) + '\n');
  const state = loadKernel(root);
  const fail = (msg: string, code = 2) => {
    process.stderr.write(msg + '\n');
    return code;
  };
  const a = [...argv];
  const json = a[0] === '-j' ? (a.shift(), true) : false;
  if (a[0] === '-d') a.shift();
  if (a[0] !== 'link') return fail(`fake ip: unsupported: ${argv.join(' ')}`);
  if (a[1] === 'show' && a[2] === 'dev' && a[3]) {
    const pf = state.pfs.find((p) => p.name === a[3]);
    if (!pf) return fail(`Device "${a[3]}" does not exist.`, 1);
    if (!json) return fail('fake ip: only -j output is implemented');
    process.stdout.write(JSON.stringify([{ ifname: pf.name, mtu: pf.mtu, num_vf: pf.numVfs, vfinfo_list: pf.vfs.map(vfJson) }]) + '\n');
    return 0;
  }
  if (a[1] === 'set' && a[2] === 'dev' && a[3]) {
    const dev = a[3];
    const rest = a.slice(4);
    try {
      if (rest[0] === 'vf') {
        const index = Number(rest[1]);
        const change: Record<string, unknown> = {};
        for (let i = 2; i < rest.length; i += 2) {
          const [k, v] = [rest[i]!, rest[i + 1]!];
          if (k === 'mac') change.mac = v;
          else if (k === 'vlan') change.vlan = Number(v);
          else if (k === 'qos') change.qos = Number(v);
          else if (k === 'spoofchk') change.spoofchk = v === 'on';
          else if (k === 'trust') change.trust = v === 'on';
          else if (k === 'state') change.linkState = v;
          else if (k === 'min_tx_rate') change.minTxRate = Number(v);
          else if (k === 'max_tx_rate') change.maxTxRate = Number(v);
          else return fail(`fake ip: unsupported vf setting ${k}`);
        }
        kernel.setVfLink(state, dev, index, change);
      } else if (rest[0] === 'mtu') {
        const vf = state.pfs.flatMap((p) => p.vfs).find((v) => v.netdev === dev);
        const pf = state.pfs.find((p) => p.name === dev);
        if (vf) vf.mtu = Number(rest[1]);
        else if (pf) pf.mtu = Number(rest[1]);
        else return fail(`Cannot find device "${dev}"`, 1);
      } else return fail(`fake ip: unsupported: ${argv.join(' ')}`);
    } catch (err) {
      return fail(`RTNETLINK answers: ${(err as Error).message}`);
    }
    saveAndRender(root, state);
    return 0;
  }
  return fail(`fake ip: unsupported: ${argv.join(' ')}`);
}
