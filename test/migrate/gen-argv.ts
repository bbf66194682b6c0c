// What vfpool's wrapper execs for a domain: `node gen-argv.js STATE_DIR -- QEMU-ARGV...` reads
// the domain's plan (found by -name guest=…) and prints the edited argv, one element per line,
// through the same generator the wrapper uses (src/qemu/generate.ts).
import { generateQemuArgs } from '../../src/qemu/generate.js';
import { parseQemuArgv } from '../../src/qemu/cmdline.js';
import { readDomainPlan } from '../../src/state/domain-plan.js';

const [stateDir, sep, ...argv] = process.argv.slice(2);
if (!stateDir || sep !== '--') {
  process.stderr.write('usage: gen-argv STATE_DIR -- QEMU-ARGV...\n');
  process.exit(2);
}
const name = parseQemuArgv(argv).name;
const plan = name === null ? null : readDomainPlan(stateDir, name);
if (plan === null) {
  process.stderr.write(`gen-argv: no vfpool plan for ${name ?? '(no -name)'} in ${stateDir}\n`);
  process.exit(1);
}
const r = await generateQemuArgs(plan, argv, { stateDir, qemuPath: 'qemu-system-x86_64', capsCacheFile: null });
process.stdout.write(r.argv.join('\n') + '\n');
