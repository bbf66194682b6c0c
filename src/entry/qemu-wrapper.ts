import { qemuWrapper } from './main/qemu-wrapper.js';
import { runEntry } from './run.js';

// The Node half of qemu-args/vfpool-qemu (the bundle dist/bin/qemu-wrapper.cjs starts); the work is in main/qemu-wrapper.ts.
void runEntry(() => qemuWrapper(process.argv.slice(2)));
