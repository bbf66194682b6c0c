#!/usr/bin/env node
import { dirname, join } from 'node:path';
import { qemuHook } from './main/qemu-hook.js';
import { runEntry } from './run.js';

// libvirt's qemu hook (hooks/qemu runs the bundle dist/bin/qemu-hook.cjs); the work is in main/qemu-hook.ts.
// The CLI bundle sits beside this hook's bundle (dist/bin/).
void runEntry(() => qemuHook(process.argv.slice(2), join(dirname(process.argv[1]!), 'cli.cjs')));
