import { spawn } from 'node:child_process';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/..., the shims live in the source tree). */
export const REPO = join(dirname(fileURLToPath(import.meta.url)), '../../..');

export interface Spawned {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Prefix for any command that starts Node below it (a shim, a shell, script(1), install.sh):
 * `/usr/bin/env -u NODE_OPTIONS CMD ARGS…` (env execs CMD: same pid). node-tap's
 * processinfo adds its coverage loader to NODE_OPTIONS of every process a test spawns, even
 * one given an environment of its own or NODE_OPTIONS='' (it is put back); under it each Node
 * start costs ~0.75 s more CPU, and libvirt never starts vfpool that way.
 */
export const WITHOUT_TAP_LOADER = ['/usr/bin/env', '-u', 'NODE_OPTIONS'] as const;

/**
 * Runs a real entry point as a process, as libvirt or a person would: argv, stdin, and an
 * environment holding only what is given (libvirt hands hooks LC_ALL, HOME and PATH alone).
 * `file` is relative to the repo (`hooks/network`, `hooks/qemu`, `dist/bin/cli.cjs`) or absolute
 * (a link to one, as libvirt finds it); a `.js`, `.cjs` or `.mjs` file is started with this
 * Node, anything else executed. Exit code -1: ended by a signal.
 *
 * node:child_process, not execa: the suites start ~300 processes this way, and execa's own
 * JavaScript cost the test process ~5.5 ms of CPU per start (8.3 against 2.8 ms measured
 * around /bin/true), ~1.8 s of a run.
 */
export async function spawnEntry(file: string, args: string[], opts: { env: Record<string, string>; stdin?: string }): Promise<Spawned> {
  const path = isAbsolute(file) ? file : join(REPO, file);
  const argv = /\.[cm]?js$/.test(file) ? [process.execPath, path, ...args] : [path, ...args];
  // Without node-tap's loaders, as libvirt starts it: only `npx tap` puts them in NODE_OPTIONS
  // (npm test's groups run without), and only then is env(1) needed to take them out again.
  const [cmd, ...rest] = process.env.NODE_OPTIONS ? [...WITHOUT_TAP_LOADER, ...argv] : argv;
  const child = spawn(cmd!, rest, {
    env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
    cwd: '/',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => stdout.push(d));
  child.stderr.on('data', (d: Buffer) => stderr.push(d));
  // A process that exits without reading all of its stdin (a hook that decided from argv alone).
  child.stdin.on('error', () => {});
  child.stdin.end(opts.stdin ?? '');
  const exitCode = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
  return { exitCode, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
}

/**
 * `vfpool ARGS` as install.sh installs it: `vfpool` links to dist/bin/cli.cjs. dist/bin/cli.mjs
 * (for scripts that name a path) starts the same bundle through Node's ESM loader, ~20 ms more
 * CPU a start; test/entry/cli.test.ts and cli-conventions.test.ts start it directly.
 */
export function vfpoolCli(args: string[], opts: { env: Record<string, string>; stdin?: string }): Promise<Spawned> {
  return spawnEntry('dist/bin/cli.cjs', args, opts);
}
