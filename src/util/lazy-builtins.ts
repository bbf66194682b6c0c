import { createRequire } from 'node:module';

// Node built-ins that only some runs of a hook or the CLI need, required on first use rather
// than imported with the module: the hooks and the CLI are single bundles (scripts/bundle.mjs),
// where an import is a require at start-up, and libvirt waits for every hook call. Measured:
// - node:crypto (OpenSSL's binding and some twenty modules): ~9 ms of CPU at the start of every
//   CLI command and qemu hook call; only an emulated SR-IOV NIC's MACs are hashed.
// - node:child_process and node:fs/promises: with net, dgram, readline and the stream machinery
//   behind them (~35 modules), ~10 ms of CPU at the start of every qemu hook call (a guest's
//   prepare with a VF: 99.8 -> 88.7 ms, node -e 0 51.1 ms). Only the detached migration
//   confirm is spawned with child_process (execa, for `ip` and QEMU, is a file of its own,
//   loaded on demand too), and only QEMU delivery and the device cgroup, when a guest's QEMU
//   runs, read and write with fs/promises.
// A built-in resolves the same from any base.
const requireBuiltin = createRequire('/');

export const lazyCrypto = (): typeof import('node:crypto') => requireBuiltin('node:crypto') as typeof import('node:crypto');
export const lazyChildProcess = (): typeof import('node:child_process') => requireBuiltin('node:child_process') as typeof import('node:child_process');
export const lazyFsPromises = (): typeof import('node:fs/promises') => requireBuiltin('node:fs/promises') as typeof import('node:fs/promises');
// node:tty loads node:net: asked only for a character device that may be a terminal (src/util/stdio.ts).
export const lazyTty = (): typeof import('node:tty') => requireBuiltin('node:tty') as typeof import('node:tty');
