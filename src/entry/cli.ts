#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import Table from 'cli-table3';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BadInputError, errnoOf } from '../errors.js';
import { loadSettings } from '../config/settings.js';
import { createContext, type Context } from '../pool/context.js';
import { formatPlan, startPool, stopPool } from '../pool/pools.js';
import { listPools, readStatus, type Status } from '../pool/status.js';
import { runEntry } from './run.js';

function readInputFile(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new BadInputError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, 'give the path of an XML file');
  }
}

function out(line = ''): void {
  process.stdout.write(line + '\n');
}

function printStatusTable(s: Status): void {
  if (s.pfs.length === 0) out(`no SR-IOV physical functions on host '${s.host}'`);
  for (const pf of s.pfs) {
    out(`${pf.name} ${pf.address} driver ${pf.driver ?? '-'} ${pf.up ? 'up' : 'DOWN'}: ${pf.numVfs} of ${pf.totalVfs} VFs`);
    if (pf.vfs.length === 0) continue;
    const t = new Table({ head: ['VF', 'address', 'netdev', 'driver', 'MAC', 'VLAN', 'owner'], style: { head: [], border: [] } });
    for (const v of pf.vfs) {
      t.push([
        v.index,
        v.address,
        v.netdev ?? '-',
        v.driver ?? '-',
        v.mac ?? '-',
        v.vlan ? String(v.vlan) : '-',
        v.owner ? `${v.owner.domain}${v.owner.pool ? ` (${v.owner.pool})` : ''}` : 'free',
      ]);
    }
    out(t.toString());
  }
}

// yargs' inferred argument types do not follow its camel-case expansion ('dry-run' -> dryRun),
// so each handler states the arguments it reads and the builder's type is not checked against it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function withContext<T>(what: string, fn: (ctx: Context, args: T) => Promise<number>): (args: any) => Promise<void> {
  return (args: T) => runEntry(() => fn(createContext(loadSettings(), `cli ${what}`), args));
}

const dryRun = (y: Argv) => y.option('dry-run', { type: 'boolean', default: false, describe: 'print the plan, change nothing' });
const json = (y: Argv) => y.option('json', { type: 'boolean', default: false, describe: 'machine-readable output' });

await yargs(hideBin(process.argv))
  .scriptName('vfpool')
  .usage('$0 <command> [options]\n\nSR-IOV virtual-function pools for QEMU and libvirt.')
  .command('net-define <file>', 'define (or redefine) a pool from network XML', (y) => dryRun(y.positional('file', { type: 'string', demandOption: true })),
    withContext('net-define', async (ctx, a: { file: string; dryRun: boolean }) => {
      const xml = readInputFile(a.file);
      if (a.dryRun) {
        const { parsePoolXml } = await import('../config/pool-xml.js');
        out(`pool '${parsePoolXml(xml, a.file).name}' is valid; nothing written (--dry-run)`);
        return 0;
      }
      const spec = await ctx.registry.define(xml, a.file);
      out(`Pool ${spec.name} defined from ${a.file}`);
      return 0;
    }))
  .command('net-undefine <pool>', 'remove a stopped pool\'s definition', (y) => dryRun(y.positional('pool', { type: 'string', demandOption: true })),
    withContext('net-undefine', async (ctx, a: { pool: string; dryRun: boolean }) => {
      if (a.dryRun) {
        ctx.registry.get(a.pool);
        out(`would remove ${ctx.registry.dir}/${a.pool}.xml (--dry-run)`);
        return 0;
      }
      ctx.registry.undefine(a.pool);
      out(`Pool ${a.pool} has been undefined`);
      return 0;
    }))
  .command('net-list', 'list pools', json,
    withContext('net-list', async (ctx, a: { json: boolean }) => {
      const pools = await listPools(ctx);
      if (a.json) {
        out(JSON.stringify(pools));
        return 0;
      }
      const t = new Table({ head: ['Name', 'Mode', 'State', 'Persistent', 'VFs', 'In use'], style: { head: [], border: [] } });
      for (const p of pools) t.push([p.name, p.mode, p.active ? 'active' : 'inactive', p.persistent ? 'yes' : 'no', p.vfs, p.inUse]);
      out(t.toString());
      return 0;
    }))
  .command('net-dumpxml <pool>', 'print a pool\'s XML (as started, if active)', (y) => y.positional('pool', { type: 'string', demandOption: true }),
    withContext('net-dumpxml', async (ctx, a: { pool: string }) => {
      ctx.registry.get(a.pool); // validates, and names the error for an unknown pool
      const active = ctx.store.read().pools[a.pool];
      process.stdout.write(active?.xml ?? ctx.registry.readDefinition(a.pool) ?? '');
      return 0;
    }))
  .command('net-start <pool>', 'create the pool\'s VFs and mark it active', (y) => dryRun(y.positional('pool', { type: 'string', demandOption: true })),
    withContext('net-start', async (ctx, a: { pool: string; dryRun: boolean }) => {
      const spec = ctx.registry.get(a.pool);
      const xml = ctx.registry.readDefinition(a.pool) ?? '';
      const r = await startPool(ctx, spec, xml, { dryRun: a.dryRun });
      if (a.dryRun) {
        out(`plan for net-start ${a.pool} (--dry-run, nothing changed):`);
        formatPlan(r.actions).forEach((l) => out(`  ${l}`));
      } else out(`Pool ${a.pool} started`);
      return 0;
    }))
  .command('net-destroy <pool>', 'remove the pool\'s VFs (refused while one is in use) and mark it inactive', (y) => dryRun(y.positional('pool', { type: 'string', demandOption: true })),
    withContext('net-destroy', async (ctx, a: { pool: string; dryRun: boolean }) => {
      const r = await stopPool(ctx, a.pool, { refuse: true, dryRun: a.dryRun });
      if (a.dryRun) {
        out(`plan for net-destroy ${a.pool} (--dry-run, nothing changed):`);
        formatPlan(r.actions).forEach((l) => out(`  ${l}`));
      } else out(`Pool ${a.pool} destroyed`);
      return 0;
    }))
  .command('status', 'PFs, their VFs and who holds them', json,
    withContext('status', async (ctx, a: { json: boolean }) => {
      const s = await readStatus(ctx);
      if (a.json) out(JSON.stringify(s));
      else printStatusTable(s);
      return 0;
    }))
  .demandCommand(1, 'name a command (see --help)')
  .strict()
  .fail((msg, err) => {
    if (err) throw err;
    process.stderr.write(`vfpool: ${msg} (see \`vfpool --help\`)\n`);
    process.exit(2);
  })
  .help()
  .version(false)
  .parseAsync();
