import { loadSettings } from '../../config/settings.js';
import { parseQemuArgv } from '../../qemu/cmdline.js';
import { domainCapsCacheFile, generateQemuArgs } from '../../qemu/generate.js';
import { readDomainPlan } from '../../state/domain-plan.js';
import { encodeArgv } from '../../qemu/wrapper-argv.js';
import { crashPoint } from '../../util/crash-point.js';
import { writeStdout } from '../../util/stdio.js';

/**
 * The Node half of the QEMU wrapper: qemu-args/vfpool-qemu runs it only for a domain that has
 * a plan file, and execs QEMU with the argv printed here (encoding in src/qemu/wrapper-argv.ts).
 * Any refusal is one line on stderr and the shim's exit status; QEMU is then not started.
 * Its entry point is src/entry/qemu-wrapper.ts; the tests run it in-process too.
 */
export async function qemuWrapper(argv: string[]): Promise<number> {
  const settings = loadSettings();
  const name = parseQemuArgv(argv).name;
  const plan = name === null ? null : readDomainPlan(settings.stateDir, name);
  crashPoint('wrapper:read');
  const out = plan === null
    ? argv
    : (await generateQemuArgs(plan, argv, { stateDir: settings.stateDir, qemuPath: settings.qemuPath, capsCacheFile: domainCapsCacheFile(settings.stateDir, plan.domain) })).argv;
  crashPoint('wrapper:generated');
  writeStdout(encodeArgv(out));
  return 0;
}
