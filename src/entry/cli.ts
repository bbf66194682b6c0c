#!/usr/bin/env node
import { runPlainCommand } from './cli/fast-path.js';

// The commands, their help, completion and the man page all come from src/entry/cli/commands.ts.
// A plain command line runs its command without loading yargs (cli/fast-path.ts says why);
// everything else goes through yargs, loaded then. Not a top-level await: the CLI is a
// CommonJS bundle (dist/bin/cli.cjs, scripts/bundle.mjs), which has none. A rejection still
// ends the process with status 1 and the error. process.argv.slice(2) is what yargs' hideBin
// gives under Node.
const argv = process.argv.slice(2);
void (runPlainCommand(argv) ?? import('./cli/program.js').then(({ buildProgram }) => buildProgram(argv).parseAsync()));
