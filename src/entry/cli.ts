#!/usr/bin/env node
import { hideBin } from 'yargs/helpers';
import { buildProgram } from './cli/program.js';

// The commands, their help, completion and the man page all come from src/entry/cli/commands.ts.
await buildProgram(hideBin(process.argv)).parseAsync();
