import type { CommandDef } from './define.js';
import { GUEST_COMMANDS } from './commands-guests.js';
import { OPS_COMMANDS } from './commands-ops.js';
import { POOL_COMMANDS } from './commands-pools.js';
import { QEMU_COMMANDS } from './commands-qemu.js';
import { MIGRATE_COMMANDS } from './commands-migrate.js';

/** Every `vfpool` command, in the order --help and the man page list them. */
export const COMMANDS: CommandDef[] = [...POOL_COMMANDS, ...GUEST_COMMANDS, ...QEMU_COMMANDS, ...MIGRATE_COMMANDS, ...OPS_COMMANDS];

/** yargs' own completion command, declared here so the man page lists it like the others. */
export const COMPLETION: Pick<CommandDef, 'name' | 'describe' | 'examples'> = {
  name: 'completion',
  describe: 'print a shell completion script for bash (or zsh)',
  examples: [
    ['completion > /etc/bash_completion.d/vfpool', 'complete vfpool commands and options in every new shell'],
    ['completion >> ~/.bashrc', 'for one user'],
  ],
};

export const SUMMARY = 'SR-IOV virtual-function pools for QEMU and libvirt.';
