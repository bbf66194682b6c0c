import { join } from 'node:path';
import { domainQmpSocketPath, domainRunDir, type DomainPlanV1 } from '../state/domain-plan.js';
import { planQemuArgs, type QemuArgsResult, type QemuCaps } from './args.js';
import { probeQemuCaps } from './caps.js';
import { parseQemuArgv } from './cmdline.js';

export interface GenerateOptions {
  stateDir: string;
  /** The real QEMU (VFPOOL_QEMU): asked for its capabilities when the plan needs them. */
  qemuPath: string;
  /** Where the capability answer is cached; null: ask every time. */
  capsCacheFile: string | null;
  /** false: add no vfpool QMP socket (its directory exists only for a prepared domain). */
  qmpSocket?: boolean;
}

/**
 * The wrapper's and `vfpool qemu-args`' one path from a plan and a command line to the edited
 * command line: parse, ask QEMU what it supports only if the plan needs it, plan.
 */
export async function generateQemuArgs(plan: DomainPlanV1, argv: string[], opts: GenerateOptions): Promise<QemuArgsResult> {
  const cmd = parseQemuArgv(argv);
  let caps: QemuCaps | undefined;
  if (plan.sriovNics.length > 0) caps = await probeQemuCaps(opts.qemuPath, opts.capsCacheFile);
  return planQemuArgs(plan, cmd, { qmpSocketPath: opts.qmpSocket === false ? null : domainQmpSocketPath(opts.stateDir, plan.domain), caps });
}

/** The capability cache of the wrapper: in the domain's own directory, which its QEMU user may write. */
export function domainCapsCacheFile(stateDir: string, domain: string): string {
  return join(domainRunDir(stateDir, domain), 'qemu-caps.json');
}
