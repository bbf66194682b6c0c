import type { MigrateArgs } from '../migrate-command.js';
import { parseSeconds, secondsOption, type CommandDef } from './define.js';
import { cliContext } from './output.js';

export const MIGRATE_COMMANDS: CommandDef[] = [
  {
    name: 'migrate',
    args: '<first> [second]',
    describe: 'live migration: `migrate begin|prepare|perform|confirm …` (the four stages, for orchestration without libvirt), or `migrate DOMAIN DEST_URI [-- virsh migrate options]` (with libvirt)',
    positionals: {
      first: { describe: 'a stage (begin, prepare, perform, confirm), or the domain to migrate with libvirt' },
      second: { describe: 'the domain (with a stage), or the destination libvirt URI' },
    },
    options: {
      xml: { type: 'string', describe: 'begin: a domain XML (libvirt `migrate begin` hook): print it with source-only requests mapped' },
      description: { type: 'string', describe: 'prepare: the output of `migrate begin DOMAIN` on the source (file or -)' },
      to: { type: 'string', describe: 'perform: also run the QMP migration to this URI: tcp:HOST:PORT or unix:/PATH (no other transport)' },
      role: { type: 'string', choices: ['source', 'destination'], describe: 'confirm: which side this host is' },
      failed: { type: 'boolean', default: false, describe: 'confirm: the migration failed (undo) instead of succeeded' },
      'wait-incoming': secondsOption('confirm --role destination: wait up to S seconds for the incoming migration to end, then confirm its outcome'),
      timeout: secondsOption('seconds a migration may take', 300),
      json: { type: 'boolean', default: false, describe: 'machine-readable output (JSON)' },
      'dry-run': { type: 'boolean', default: false, describe: 'prepare, perform, confirm and `migrate DOMAIN DEST_URI`: make every check, print what would be done, change nothing (begin changes nothing anyway)' },
    },
    examples: [
      ['migrate vm1 qemu+tcp://dest/system', 'unplug vm1\'s plain VFs, virsh migrate --live, confirm on both hosts'],
      ['migrate begin vm1 > vm1.json', 'source: what the destination must reserve (pool, MAC, VLAN), no PCI addresses'],
      ['migrate prepare --description vm1.json', 'destination: reserve and configure VFs with the same MACs'],
      ['migrate perform vm1 --to tcp:dest:4444', 'source: unplug the VFs, then migrate over QMP'],
      ['migrate confirm vm1 --role source', 'source: restore and free the VFs after a successful migration'],
      ['migrate vm1 qemu+tcp://dest/system --dry-run', 'the steps and the virsh command line, nothing changed'],
    ],
    async run(a: Omit<MigrateArgs, 'timeout' | 'waitIncoming'> & { timeout: string | number; waitIncoming?: string | number }) {
      const timeout = parseSeconds('timeout', a.timeout, { zeroAllowed: false });
      const waitIncoming = a.waitIncoming === undefined ? undefined : parseSeconds('wait-incoming', a.waitIncoming, { zeroAllowed: false });
      // Loaded when the command runs: every other `vfpool` call starts without evaluating it.
      const { runMigrate } = await import('../migrate-command.js');
      return runMigrate(cliContext('migrate'), { ...a, timeout, waitIncoming });
    },
  },
];
