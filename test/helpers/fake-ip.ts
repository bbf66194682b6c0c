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

export interface FakeIpResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * One `ip` call, in-process: what the spawned fake prints and the exit code it ends with. The
 * argv is recorded first, whether the call is then refused or not, as a process's would be.
 */
export function fakeIp(root: string, argv: string[]): FakeIpResult {
  appendFileSync(join(root, 'ip-calls.jsonl'), JSON.stringify(argv) + '\n');
  const state = loadKernel(root);
  const fail = (msg: string, exitCode = 2): FakeIpResult => ({ exitCode, stdout: '', stderr: msg + '\n' });
  const a = [...argv];
  const json = a[0] === '-j' ? (a.shift(), true) : false;
  if (a[0] === '-d') a.shift();
  if (a[0] !== 'link') return fail(`fake ip: unsupported: ${argv.join(' ')}`);
  if (a[1] === 'show' && a[2] === 'dev' && a[3]) {
    const pf = state.pfs.find((p) => p.name === a[3]);
    if (!pf) return fail(`Device "${a[3]}" does not exist.`, 1);
    if (!json) return fail('fake ip: only -j output is implemented');
    return { exitCode: 0, stderr: '', stdout: JSON.stringify([{ ifname: pf.name, mtu: pf.mtu, num_vf: pf.numVfs, vfinfo_list: pf.vfs.map(vfJson) }]) + '\n' };
  }
  if (a[1] === 'set' && a[2] === 'dev' && a[3]) {
    const dev = a[3];
    const rest = a.slice(4);
    let refused: unknown = null;
    if (rest[0] === 'vf') {
      const index = Number(rest[1]);
      const change: Record<string, unknown> = {};
      for (let i = 2; i < rest.length; i += 2) {
        const [k, v] = [rest[i]!, rest[i + 1]!];
        if (k === 'mac') change.mac = v;
        else if (k === 'vlan') {
          // iproute2 checks the VLAN id itself, before asking the kernel (exit 255).
          if (Number(v) > 4095) return fail(`Error: argument "${v}" is wrong: Invalid "vlan" value`, 255);
          change.vlan = Number(v);
        } else if (k === 'qos') change.qos = Number(v);
        else if (k === 'spoofchk') change.spoofchk = v === 'on';
        else if (k === 'trust') change.trust = v === 'on';
        else if (k === 'state') change.linkState = v;
        else if (k === 'min_tx_rate') change.minTxRate = Number(v);
        else if (k === 'max_tx_rate') change.maxTxRate = Number(v);
        else return fail(`fake ip: unsupported vf setting ${k}`);
      }
      if (!state.pfs.some((p) => p.name === dev)) return fail(`Cannot find device "${dev}"`, 1);
      // The kernel keeps what it applied before the attribute it refused: save either way.
      try {
        kernel.setVfLink(state, dev, index, change);
      } catch (err) {
        refused = err;
      }
    } else if (rest[0] === 'mtu' || ((rest[0] === 'up' || rest[0] === 'down') && rest.length === 1)) {
      const known = state.pfs.some((p) => p.name === dev || p.vfs.some((v) => v.netdev === dev));
      if (!known) return fail(`Cannot find device "${dev}"`, 1);
      try {
        if (rest[0] === 'mtu') kernel.setMtu(state, dev, Number(rest[1]));
        else if (state.pfs.some((p) => p.name === dev)) kernel.setLinkUp(state, dev, rest[0] === 'up');
        else return fail('fake ip: up/down is implemented for PFs only');
      } catch (err) {
        refused = err;
      }
    } else return fail(`fake ip: unsupported: ${argv.join(' ')}`);
    saveAndRender(root, state);
    if (refused) return fail(`RTNETLINK answers: ${strerror(refused)}`);
    return { exitCode: 0, stdout: '', stderr: '' };
  }
  return fail(`fake ip: unsupported: ${argv.join(' ')}`);
}

/** What iproute2 prints for a kernel errno (the sim kernel's message is only a fallback). */
function strerror(err: unknown): string {
  const code = (err as { code?: string }).code;
  const text: Record<string, string> = {
    EINVAL: 'Invalid argument',
    EOPNOTSUPP: 'Operation not supported',
    EBUSY: 'Device or resource busy',
    ERANGE: 'Numerical result out of range',
    ENODEV: 'No such device',
    EPERM: 'Operation not permitted',
  };
  return (code && text[code]) ?? (err as Error).message;
}
