// Writes dist/man/vfpool.1 from the CLI's command declarations (src/entry/cli/man.ts), so the
// man page lists exactly the commands and options --help does. Run by `npm run build`.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { renderManPage } = await import(join(root, 'dist/src/entry/cli/man.js'));
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
// The date of the source, not of the build, so two builds of one commit give the same page.
const date = new Date(Number(process.env.SOURCE_DATE_EPOCH ?? 0) * 1000 || Date.now()).toISOString().slice(0, 10);
mkdirSync(join(root, 'dist/man'), { recursive: true });
writeFileSync(join(root, 'dist/man/vfpool.1'), renderManPage(version, date));
