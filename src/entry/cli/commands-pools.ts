import { join } from 'node:path';
import { asVfpoolError, BadInputError, ConflictError } from '../../errors.js';
import { parsePoolXml } from '../../config/pool-xml.js';
import { formatPlan, startPool, stopPool } from '../../pool/pools.js';
import { listPools, readStatus } from '../../pool/status.js';
import { libvirtRunsNetwork } from '../../pool/libvirt-runtime.js';
import { DRY_RUN, JSON_OUT, type CommandDef } from './define.js';
import { cliContext, compactTable, out, printStatusTable, warn } from './output.js';
import { readInputFile } from '../run.js';
import { writeStdout } from '../../util/stdio.js';

const POOL = { pool: { describe: 'the pool\'s name (its <name> in the network XML)' } };

export const POOL_COMMANDS: CommandDef[] = [
  {
    name: 'net-define',
    args: '<file>',
    describe: 'define (or redefine) a pool from network XML',
    positionals: { file: { describe: 'the pool\'s network XML file (- for stdin)' } },
    options: { 'dry-run': { type: 'boolean', default: false, describe: 'only check the XML and say where it would be stored; write nothing' } },
    examples: [
      ['net-define sriov-pool.xml', 'store the pool as /etc/vfpool/networks/sriov-pool.xml'],
      ['net-define --dry-run sriov-pool.xml', 'check the XML only'],
    ],
    async run(a: { file: string; dryRun: boolean }) {
      const xml = await readInputFile(a.file);
      const ctx = cliContext('net-define');
      if (a.dryRun) {
        const name = parsePoolXml(xml, a.file).name;
        out(`pool '${name}' is valid; would write ${join(ctx.registry.dir, `${name}.xml`)} (--dry-run, nothing written)`);
        return 0;
      }
      const spec = await ctx.registry.define(xml, a.file);
      out(`Pool ${spec.name} defined from ${a.file}`);
      return 0;
    },
  },
  {
    name: 'net-undefine',
    args: '<pool>',
    describe: 'remove a stopped pool\'s definition',
    positionals: POOL,
    options: DRY_RUN,
    examples: [['net-undefine sriov-pool', 'forget the pool (stop it first with net-destroy)']],
    async run(a: { pool: string; dryRun: boolean }) {
      const ctx = cliContext('net-undefine');
      if (a.dryRun) {
        out(`would remove ${ctx.registry.undefinable(a.pool)} (--dry-run)`);
        return 0;
      }
      ctx.registry.undefine(a.pool);
      out(`Pool ${a.pool} has been undefined`);
      return 0;
    },
  },
  {
    name: 'net-list',
    describe: 'list pools: mode, state, VFs and how many are in use',
    options: JSON_OUT,
    examples: [['net-list', 'a table of every pool'], ['net-list --json', 'the same as JSON']],
    async run(a: { json: boolean }) {
      const ctx = cliContext('net-list');
      const pools = await listPools(ctx);
      // listPools leaves out a definition that does not parse (it must not hide the others): say so.
      for (const name of ctx.registry.names()) {
        if (pools.some((p) => p.name === name)) continue;
        try {
          ctx.registry.get(name);
        } catch (err) {
          warn(`pool '${name}' is not listed: ${asVfpoolError(err).message} (fix the file, or \`vfpool net-undefine ${name}\`)`);
        }
      }
      if (a.json) {
        out(JSON.stringify(pools));
        return 0;
      }
      const t = compactTable(['Name', 'Mode', 'State', 'Persistent', 'VFs', 'In use']);
      for (const p of pools) t.push([p.name, p.mode, p.state, p.persistent ? 'yes' : 'no', p.vfs, p.inUse]);
      out(t.toString());
      for (const p of pools) {
        if (p.state === 'start-interrupted') warn(`pool '${p.name}' is not active: its start was killed half-way, and guests are refused: run \`vfpool reconcile\` (it undoes the start), then start the pool again`);
        if (p.state === 'stop-interrupted') warn(`pool '${p.name}': its stop was killed half-way, and guests are refused: run \`vfpool reconcile\` (it finishes the stop)`);
      }
      return 0;
    },
  },
  {
    name: 'net-dumpxml',
    args: '<pool>',
    describe: 'print a pool\'s XML (as started, if active)',
    positionals: POOL,
    // DESIGN.md: --json on every read command; this one's JSON carries the same XML.
    options: JSON_OUT,
    examples: [['net-dumpxml sriov-pool > pool.xml', 'save the definition'], ['net-dumpxml sriov-pool --json', '{"name","active","xml"}']],
    async run(a: { pool: string; json: boolean }) {
      const ctx = cliContext('net-dumpxml');
      ctx.registry.get(a.pool); // validates, and names the error for an unknown pool
      const active = ctx.store.read().pools[a.pool];
      const xml = active ? networkOf(active.xml) : (ctx.registry.readDefinition(a.pool) ?? '');
      if (a.json) out(JSON.stringify({ name: a.pool, active: active !== undefined, xml }));
      else writeStdout(xml);
      return 0;
    },
  },
  {
    name: 'net-start',
    args: '<pool>',
    describe: 'create the pool\'s VFs and mark it active',
    positionals: POOL,
    options: DRY_RUN,
    examples: [['net-start sriov-pool', 'create the VFs (<vf num>) and bind them'], ['net-start --dry-run sriov-pool', 'print the steps only']],
    async run(a: { pool: string; dryRun: boolean }) {
      const ctx = cliContext('net-start', true);
      const { spec, xml } = ctx.registry.startSource(a.pool) ?? ctx.registry.unknown(a.pool, 'net-start');
      const r = await startPool(ctx, spec, xml, { dryRun: a.dryRun });
      if (a.dryRun) {
        out(`plan for net-start ${a.pool} (--dry-run, nothing changed):`);
        formatPlan(r.actions).forEach((l) => out(`  ${l}`));
      } else out(`Pool ${a.pool} started`);
      for (const u of r.unresolved) warn(`pool '${a.pool}': ${u}`);
      return 0;
    },
  },
  {
    name: 'net-destroy',
    args: '<pool>',
    describe: 'remove the pool\'s VFs (refused while one is in use, or while a libvirt network runs the pool: virsh net-destroy) and mark it inactive',
    positionals: POOL,
    options: DRY_RUN,
    examples: [['net-destroy sriov-pool', 'remove the VFs vfpool created for the pool']],
    async run(a: { pool: string; dryRun: boolean }) {
      const ctx = cliContext('net-destroy', true);
      // A pool that a libvirt network runs (its <metadata>, or a definition of the network's
      // name) is libvirt's to stop: stopped here, libvirt's network stays active without it, a
      // guest on it is refused, and `virsh net-start` answers that the network is active already.
      if (ctx.store.read().pools[a.pool] && libvirtRunsNetwork(ctx.settings.libvirtRunDir, a.pool)) {
        throw new ConflictError(`pool '${a.pool}' is run by libvirt network '${a.pool}', which vfpool net-destroy would leave active without its VFs`, `stop it with \`virsh net-destroy ${a.pool}\``);
      }
      const r = await stopPool(ctx, a.pool, { refuse: true, dryRun: a.dryRun });
      if (a.dryRun) {
        out(`plan for net-destroy ${a.pool} (--dry-run, nothing changed):`);
        formatPlan(r.actions).forEach((l) => out(`  ${l}`));
      } else out(`Pool ${a.pool} destroyed`);
      for (const pf of r.gone) warn(`pool '${a.pool}': PF ${pf} no longer exists: nothing to remove on it`);
      return 0;
    },
  },
  {
    name: 'status',
    describe: 'PFs, their VFs and who holds them',
    options: {
      ...JSON_OUT,
      format: { type: 'string', choices: ['table', 'json', 'prometheus'], default: 'table', describe: 'output format; prometheus is the text exposition format for node_exporter\'s textfile collector' },
    },
    examples: [
      ['status', 'every PF and VF with its owner'],
      ['status --json', 'the same as JSON (= --format json)'],
      // Written beside the file and renamed: the textfile collector must never read half a file.
      ['status --format prometheus > vfpool.tmp && mv vfpool.tmp vfpool.prom', 'metrics, in node_exporter\'s textfile directory (e.g. /var/lib/node_exporter): replaced in one rename'],
    ],
    async run(a: { json: boolean; format: string }) {
      if (a.json && a.format === 'prometheus') throw new BadInputError('--json and --format prometheus ask for two different outputs', 'give one of them (--json is --format json)');
      const ctx = cliContext('status');
      const s = await readStatus(ctx);
      // Loaded when the command runs: every other `vfpool` call starts without evaluating it.
      if (a.format === 'prometheus') writeStdout((await import('../../ops/metrics.js')).formatPrometheus(s, ctx.store.read().allocations));
      else if (a.json || a.format === 'json') out(JSON.stringify(s));
      else printStatusTable(s);
      return 0;
    },
  },
];

/**
 * The `<network>` a pool runs with. A pool libvirt started through the network hook keeps the
 * hook's whole stdin, `<hookData><network>…</network></hookData>` (its `<metadata>` carries the
 * pool): what net-dumpxml prints is the network, as `virsh net-dumpxml` would.
 */
function networkOf(xml: string): string {
  if (!/^\s*(<\?xml[^>]*\?>\s*)?<hookData[\s>]/.test(xml)) return xml;
  const start = xml.search(/<network[\s>]/);
  const end = xml.lastIndexOf('</network>');
  return start >= 0 && end > start ? `${xml.slice(start, end + '</network>'.length)}\n` : xml;
}
