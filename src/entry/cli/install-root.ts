import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The vfpool install (or checkout) the running CLI belongs to: the nearest directory above the
 * script with vfpool's package.json and hooks. `PREFIX/bin/vfpool` is a link into
 * `PREFIX/lib/vfpool/dist/bin/`, so the script's real path leads there.
 */
export function installRoot(script = process.argv[1]): string | null {
  if (!script) return null;
  let dir: string;
  try {
    dir = dirname(realpathSync(script));
  } catch {
    return null;
  }
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'hooks/vfpool-hook')) && existsSync(join(dir, 'package.json'))) return dir;
  }
  return null;
}

/**
 * The build's version as the build stamped it (`dist/bin/version`: package.json's version and,
 * built from git, the commit: scripts/bundle.mjs), else package.json's version alone.
 */
export function vfpoolVersion(): string {
  const root = installRoot() ?? '.';
  try {
    const stamped = readFileSync(join(root, 'dist/bin/version'), 'utf8').trim();
    if (stamped) return stamped;
  } catch {
    // Not built by scripts/bundle.mjs (tsc alone): package.json says the release.
  }
  try {
    return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
