import { join } from 'node:path';
import { domainNicMacs, parseDomainXml } from '../config/domain-xml.js';
import { BadInputError } from '../errors.js';
import type { Context } from '../pool/context.js';
import { requestsOf } from '../pool/guest-plan.js';
import { generateQemuArgs } from '../qemu/generate.js';
import type { QemuArgsResult } from '../qemu/args.js';
import type { OptValue } from '../qemu/qemu-opts.js';
import { readDomainPlan, sriovNicPlans, type DomainPlanV1 } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { readInputFile } from './run.js';
import { writeStdout } from '../util/stdio.js';

export interface QemuArgsOutput {
  domain: string;
  /** What the wrapper appends, one argv element each (DESIGN.md's shape). */
  args: string[];
  /** What the wrapper changes on a device already on the command line: a failover standby, found by its MAC. */
  edits: Array<{ device: string; mac: string; set: Record<string, OptValue> }>;
  hotplug: QemuArgsResult['hotplug'];
  placements: QemuArgsResult['placements'];
  /** False: the domain has no plan, and the wrapper passes its command line through untouched. */
  planned: boolean;
}

/**
 * `vfpool qemu-args DOMAIN|--xml FILE`: what the wrapper would add to a `-machine M` command
 * line. DOMAIN reads the plan `prepare` wrote; --xml builds one for requests that need no VF
 * (an emulated SR-IOV NIC) and refuses the others, which only `prepare` can satisfy.
 */
export async function qemuArgsCommand(ctx: Context, a: { domain?: string; xml?: string; machine: string }): Promise<QemuArgsOutput> {
  const { settings } = ctx;
  if ((a.domain === undefined) === (a.xml === undefined)) throw new BadInputError('name the domain, or give --xml FILE (one of the two)');
  let plan: DomainPlanV1 | null;
  let domain: string;
  if (a.xml !== undefined) {
    const text = await readInputFile(a.xml, 'give the path of a domain XML file');
    const spec = parseDomainXml(text, a.xml);
    domain = spec.name;
    const prepareFirst = `run \`vfpool prepare --xml ${a.xml}\`, then \`vfpool qemu-args ${spec.name}\``;
    if (spec.hostdevs.length > 0) throw new BadInputError(`${spec.hostdevs[0]!.field} needs a VF allocated first`, prepareFirst);
    // An <interface> on a hybrid pool is a VF request too (its failover primary), known only once the pools are.
    const hybrid = requestsOf(ctx, spec).find((r) => r.source === 'interface');
    if (hybrid) throw new BadInputError(`${hybrid.field} on pci-passthrough-hybrid pool '${hybrid.pool}' needs a VF allocated first`, prepareFirst);
    const nics = sriovNicPlans(spec.name, spec.uuid, spec.sriovNics, domainNicMacs(spec));
    plan = { version: 1, domain: spec.name, uuid: spec.uuid, delivery: 'cmdline', vfs: [], sriovNics: nics };
  } else {
    domain = parseObjectName(a.domain!, 'domain');
    plan = readDomainPlan(settings.stateDir, domain);
  }
  if (plan === null) return { domain, args: [], edits: [], hotplug: [], placements: [], planned: false };
  // A failover pair's standby is libvirt's virtio-net, on libvirt's command line and not on
  // this one: each stands in here as what the wrapper looks for (virtio-net-pci with the MAC, no
  // id), so the primary is generated and the edit of the standby is said, not refused.
  const argv = ['-name', `guest=${domain}`, '-machine', a.machine];
  const standbyAt = new Map<number, string>();
  for (const mac of new Set(plan.vfs.flatMap((v) => (v.failoverStandbyMac === null ? [] : [v.failoverStandbyMac])))) {
    standbyAt.set(argv.length + 1, mac);
    argv.push('-device', `virtio-net-pci,mac=${mac}`);
  }
  const r = await generateQemuArgs(plan, argv, {
    stateDir: settings.stateDir,
    qemuPath: settings.qemuPath,
    capsCacheFile: join(settings.stateDir, 'qemu-caps.json'),
    // --xml: QEMU is started with these arguments as they are, and nothing prepared
    // `$VFPOOL_STATE_DIR/qemu/NAME/` for vfpool's QMP socket: QEMU would refuse to start
    // ("Failed to bind socket"), and no vfpool command talks to a domain it did not prepare.
    qmpSocket: a.xml === undefined,
  });
  const edits = r.edits.map((e) => {
    const mac = standbyAt.get(e.argIndex)!;
    return { device: `virtio-net device with mac=${mac}`, mac, set: e.set };
  });
  return { domain, args: r.added, edits, hotplug: r.hotplug, placements: r.placements, planned: true };
}

/** One option and its value per line, as a person would paste them after `vfpool-qemu`. */
export function printQemuArgs(r: QemuArgsOutput): void {
  const lines: string[] = [];
  if (!r.planned) lines.push(`# domain ${r.domain} has no vfpool plan: the wrapper passes its command line to QEMU untouched`);
  for (let i = 0; i < r.args.length; i += 2) lines.push(`${r.args[i]} ${r.args[i + 1] ?? ''}`.trimEnd());
  for (const e of r.edits) {
    const { id, ...rest } = e.set;
    const set = Object.entries(rest).map(([k, v]) => `${k}=${String(v)}`).join(',');
    const idNote = typeof id === 'string' ? `, and id=${id} if it has none (an id it has is kept, and failover_pair_id names that one)` : '';
    lines.push(`# and on the ${e.device} already on the command line (the failover standby): ${set}${idNote}`);
  }
  for (const h of r.hotplug) lines.push(`# once QEMU runs (the 'started' hook, or \`vfpool plug ${r.domain}\`), device_add ${JSON.stringify(h)}`);
  for (const p of r.placements) if (p.delivered === 'left-off-incoming') lines.push(`# ${p.id} left off: -incoming (it is plugged after the migration)`);
  writeStdout(lines.join('\n') + (lines.length ? '\n' : ''));
}
