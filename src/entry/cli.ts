#!/usr/bin/env node
import { hideBin } from 'yargs/helpers';
import { buildProgram } from './cli/program.js';

// The commands, their help, completion and the man page all come from src/entry/cli/commands.ts.
// Not a top-level await: the CLI is a CommonJS bundle (dist/bin/cli.cjs, scripts/bundle.mjs),
// which has none. A rejection still ends the process with status 1 and the error.
void buildProgram(hideBin(process.argv)).parseAsync();
