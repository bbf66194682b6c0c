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
import { parseDomainXml } from '../config/domain-xml.js';
import { guestOptions, prepareGuest, planReleaseGuest, releaseGuest } from '../pool/guests.js';
import { DEFAULT_RECONCILE_GRACE_MS, reconcile } from '../pool/reconcile.js';
import { parseObjectName } from '../types.js';
import { printQemuArgs, qemuArgsCommand } from './qemu-args-command.js';
import { migrateCommand } from './migrate-command.js';

function readInputFile(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new BadInputError(`cannot read ${file}: ${errnoOf(err) ?? (err as Error).message}`, 'give the path of an XML file');
  }
}

/** A table without lines between rows: status lists up to hundreds of VFs. */
function compactTable(head: string[]): InstanceType<typeof Table> {
  return new Table({
    head,
    style: { head: [], border: [], compact: true },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}

function out(line = ''): void {
  process.stdout.write(line + '\n');
}

function printStatusTable(s: Status): void {
  if (s.pfs.length === 0) out(`no SR-IOV physical functions on host '${s.host}'`);
  for (const pf of s.pfs) {
    out(`${pf.name} ${pf.address} driver ${pf.driver ?? '-'} ${pf.up ? 'up' : 'DOWN'}: ${pf.numVfs} of ${pf.totalVfs} VFs`);
    if (pf.vfs.length === 0) continue;
    const t = compactTable(['VF', 'address', 'netdev', 'driver', 'MAC', 'VLAN', 'owner']);
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

await migrateCommand(yargs(hideBin(process.argv)).parserConfiguration({ 'populate--': true }), withContext)
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
      const t = compactTable(['Name', 'Mode', 'State', 'Persistent', 'VFs', 'In use']);
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
      // The definition file's text, and the spec parsed from that same text; without a file,
      // get() names the error (unknown pool) or yields a pool libvirt runs (already active).
      const def = ctx.registry.definition(a.pool);
      const spec = def?.spec ?? ctx.registry.get(a.pool);
      const xml = def?.xml ?? ctx.store.read().pools[a.pool]?.xml ?? '';
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
      for (const pf of r.gone) process.stderr.write(`vfpool: warning: pool '${a.pool}': PF ${pf} no longer exists: nothing to remove on it\n`);
      return 0;
    }))
  .command('status', 'PFs, their VFs and who holds them', json,
    withContext('status', async (ctx, a: { json: boolean }) => {
      const s = await readStatus(ctx);
      if (a.json) out(JSON.stringify(s));
      else printStatusTable(s);
      return 0;
    }))
  .command('prepare', 'allocate and configure the VFs a domain asks for (what the qemu hook does at prepare)',
    (y) => json(dryRun(y.option('xml', { type: 'string', demandOption: true, describe: 'the domain XML (- for stdin)' })
      .option('pid', { type: 'number', describe: 'the QEMU pid that uses them (lets `vfpool reconcile` free them when it exits)' }))),
    withContext('prepare', async (ctx, a: { xml: string; pid?: number; dryRun: boolean; json: boolean }) => {
      const spec = parseDomainXml(readInputFile(a.xml), a.xml);
      if (a.pid !== undefined && (!Number.isInteger(a.pid) || a.pid < 2)) throw new BadInputError(`--pid '${a.pid}' is not a process id`);
      const r = await prepareGuest(ctx, spec, { ...guestOptions('cli', ctx.settings), dryRun: a.dryRun, pid: a.pid ?? null });
      if (a.json) out(JSON.stringify({ ...r, dryRun: a.dryRun }));
      else if (a.dryRun) {
        out(`plan for prepare of domain ${spec.name} (--dry-run, nothing changed):`);
        (r.plan.length ? r.plan : ['nothing to do: the domain asks for no VF']).forEach((l, i) => out(`  ${i + 1}. ${l}`));
      } else if (r.vfs.length === 0) out(`Domain ${spec.name} asks for no VF from vfpool`);
      else for (const v of r.vfs) out(`Domain ${spec.name}: VF ${v.vfAddr} (${v.pf} VF ${v.vfIndex}${v.pool ? `, pool ${v.pool}` : ''}${v.netdev ? `, netdev ${v.netdev}` : ''}) mac ${v.mac}${v.vlan !== null ? ` vlan ${v.vlan}` : ''}, guest slot ${v.guestSlot}`);
      return 0;
    }))
  .command('release [domain]', 'restore and free a domain\'s VFs (what the qemu hook does at release); idempotent',
    (y) => json(dryRun(y.positional('domain', { type: 'string', describe: 'the domain name' })
      .option('xml', { type: 'string', describe: 'take the domain name from this domain XML (- for stdin)' })
      .option('forget-netdevs', { type: 'boolean', default: false, describe: 'also forget the PCI addresses its netdev= requests resolved to (seed 001 step 2)' }))),
    withContext('release', async (ctx, a: { domain?: string; xml?: string; dryRun: boolean; json: boolean; forgetNetdevs: boolean }) => {
      if ((a.domain === undefined) === (a.xml === undefined)) throw new BadInputError('name the domain, or give --xml FILE (one of the two)');
      const name = a.xml !== undefined ? parseDomainXml(readInputFile(a.xml), a.xml).name : parseObjectName(a.domain!, 'domain');
      if (a.dryRun) {
        const p = await planReleaseGuest(ctx, name);
        if (a.json) out(JSON.stringify({ ...p, dryRun: true }));
        else {
          out(`plan for release of domain ${name} (--dry-run, nothing changed):`);
          (p.plan.length ? p.plan : ['nothing to do: vfpool holds nothing for it']).forEach((l, i) => out(`  ${i + 1}. ${l}`));
        }
        return 0;
      }
      const r = await releaseGuest(ctx, name, { reason: 'vfpool release', refuseIfRunning: true, forgetNetdevs: a.forgetNetdevs });
      if (a.json) out(JSON.stringify({ ...r, dryRun: false }));
      else if (r.released.length + r.vanished.length === 0) out(`Domain ${name} holds no VF (nothing to release)`);
      else {
        for (const v of r.released) out(`Domain ${name}: VF ${v.vfAddr} restored and freed`);
        for (const v of r.vanished) out(`Domain ${name}: VF ${v} is gone from the host; its record was dropped`);
      }
      return 0;
    }))
  .command('qemu-args [domain]', 'print the QEMU arguments the wrapper adds for a domain (a prepared one, or --xml for requests that need no VF)',
    (y) => json(y.positional('domain', { type: 'string', describe: 'a domain prepared by vfpool' })
      .option('xml', { type: 'string', describe: 'a domain XML whose requests need no VF (<vfpool:sriov-nic>)' })
      .option('machine', { type: 'string', default: 'q35', describe: 'the machine type of the command line to add to' })),
    withContext('qemu-args', async (ctx, a: { domain?: string; xml?: string; machine: string; json: boolean }) => {
      const r = await qemuArgsCommand(ctx.settings, a);
      if (a.json) out(JSON.stringify(r));
      else printQemuArgs(r);
      return 0;
    }))
  .command('reconcile', 'free and restore the VFs of guests that no longer run; keep the others; report both',
    (y) => json(dryRun(y.option('grace', { type: 'number', default: DEFAULT_RECONCILE_GRACE_MS / 1000, describe: 'seconds a libvirt guest may take from prepare to having a QEMU pid' }))),
    withContext('reconcile', async (ctx, a: { grace: number; dryRun: boolean; json: boolean }) => {
      if (!Number.isFinite(a.grace) || a.grace < 0) throw new BadInputError(`--grace '${a.grace}' is not a number of seconds`);
      const r = await reconcile(ctx, { libvirtRunDir: guestOptions('cli', ctx.settings).libvirtRunDir, graceMs: a.grace * 1000, dryRun: a.dryRun });
      if (a.json) {
        out(JSON.stringify(r));
        return r.failed.length ? 1 : 0;
      }
      const verb = a.dryRun ? 'would free' : 'freed';
      for (const e of r.freed) out(`${verb} ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const e of r.failed) out(`FAILED ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const e of r.kept) out(`kept ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const p of r.portsDropped) out(`${a.dryRun ? 'would drop' : 'dropped'} libvirt port of network ${p.network} for domain ${p.domain} (${p.vf ?? '-'}): ${p.reason}`);
      out(`${r.kept.length} kept, ${r.freed.length} ${verb}, ${r.failed.length} failed${a.dryRun ? ' (--dry-run, nothing changed)' : ''}`);
      return r.failed.length ? 1 : 0;
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
