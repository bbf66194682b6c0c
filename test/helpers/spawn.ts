import { execa } from 'execa';
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
 * Node, anything else executed.
 */
export async function spawnEntry(file: string, args: string[], opts: { env: Record<string, string>; stdin?: string }): Promise<Spawned> {
  const path = isAbsolute(file) ? file : join(REPO, file);
  const argv = /\.[cm]?js$/.test(file) ? [process.execPath, path, ...args] : [path, ...args];
  // Without node-tap's loaders (WITHOUT_TAP_LOADER), as libvirt starts it.
  const [envBin, ...unset] = WITHOUT_TAP_LOADER;
  const r = await execa(envBin, [...unset, ...argv], {
    stripFinalNewline: false,
    env: { LC_ALL: 'C', HOME: '/root', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
    extendEnv: false,
    input: opts.stdin ?? '',
    reject: false,
    cwd: '/',
  });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/**
 * `vfpool ARGS` as install.sh installs it: `vfpool` links to dist/bin/cli.cjs. dist/bin/cli.mjs
 * (for scripts that name a path) starts the same bundle through Node's ESM loader, ~20 ms more
 * CPU a start; test/entry/cli.test.ts and cli-conventions.test.ts start it directly.
 */
export function vfpoolCli(args: string[], opts: { env: Record<string, string>; stdin?: string }): Promise<Spawned> {
  return spawnEntry('dist/bin/cli.cjs', args, opts);
}
