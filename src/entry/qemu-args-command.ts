import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import { parseDomainXml } from '../config/domain-xml.js';
import { BadInputError } from '../errors.js';
import { generateQemuArgs } from '../qemu/generate.js';
import type { QemuArgsResult } from '../qemu/args.js';
import { readDomainPlan, sriovNicPlans, type DomainPlanV1 } from '../state/domain-plan.js';
import { parseObjectName } from '../types.js';
import { readInputFile } from './run.js';
import { writeStdout } from '../util/stdio.js';

export interface QemuArgsOutput {
  domain: string;
  /** What the wrapper appends, one argv element each (DESIGN.md's shape). */
  args: string[];
  edits: QemuArgsResult['edits'];
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
export async function qemuArgsCommand(settings: Settings, a: { domain?: string; xml?: string; machine: string }): Promise<QemuArgsOutput> {
  if ((a.domain === undefined) === (a.xml === undefined)) throw new BadInputError('name the domain, or give --xml FILE (one of the two)');
  let plan: DomainPlanV1 | null;
  let domain: string;
  if (a.xml !== undefined) {
    const text = await readInputFile(a.xml, 'give the path of a domain XML file');
    const spec = parseDomainXml(text, a.xml);
    domain = spec.name;
    if (spec.hostdevs.length > 0) {
      throw new BadInputError(
        `${spec.hostdevs[0]!.field} needs a VF allocated first`,
        `run \`vfpool prepare --xml ${a.xml}\`, then \`vfpool qemu-args ${spec.name}\``,
      );
    }
    const nics = sriovNicPlans(spec.name, spec.uuid, spec.sriovNics, spec.interfaceMacs.map((m) => m.mac));
    plan = { version: 1, domain: spec.name, uuid: spec.uuid, delivery: 'cmdline', vfs: [], sriovNics: nics };
  } else {
    domain = parseObjectName(a.domain!, 'domain');
    plan = readDomainPlan(settings.stateDir, domain);
  }
  if (plan === null) return { domain, args: [], edits: [], hotplug: [], placements: [], planned: false };
  const r = await generateQemuArgs(plan, ['-name', `guest=${domain}`, '-machine', a.machine], {
    stateDir: settings.stateDir,
    qemuPath: settings.qemuPath,
    capsCacheFile: join(settings.stateDir, 'qemu-caps.json'),
  });
  return { domain, args: r.added, edits: r.edits, hotplug: r.hotplug, placements: r.placements, planned: true };
}

/** One option and its value per line, as a person would paste them after `vfpool-qemu`. */
export function printQemuArgs(r: QemuArgsOutput): void {
  const lines: string[] = [];
  if (!r.planned) lines.push(`# domain ${r.domain} has no vfpool plan: the wrapper passes its command line to QEMU untouched`);
  for (let i = 0; i < r.args.length; i += 2) lines.push(`${r.args[i]} ${r.args[i + 1] ?? ''}`.trimEnd());
  for (const e of r.edits) lines.push(`# and on ${e.device}: ${Object.entries(e.set).map(([k, v]) => `${k}=${String(v)}`).join(',')}`);
  for (const h of r.hotplug) lines.push(`# once QEMU runs (the 'started' hook, or \`vfpool plug ${r.domain}\`), device_add ${JSON.stringify(h)}`);
  for (const p of r.placements) if (p.delivered === 'left-off-incoming') lines.push(`# ${p.id} left off: -incoming (it is plugged after the migration)`);
  writeStdout(lines.join('\n') + (lines.length ? '\n' : ''));
}
