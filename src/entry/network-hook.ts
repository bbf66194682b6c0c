#!/usr/bin/env node
import { networkHook } from './main/network-hook.js';
import { runEntry } from './run.js';

// libvirt's network hook (hooks/network runs the bundle dist/bin/network-hook.cjs); the work is in main/network-hook.ts.
void runEntry(() => networkHook(process.argv.slice(2)));
