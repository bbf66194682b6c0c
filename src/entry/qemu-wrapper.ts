import { qemuWrapper } from './main/qemu-wrapper.js';
import { runEntry } from './run.js';

// The Node half of qemu-args/vfpool-qemu (bundled as dist/bin/qemu-wrapper.mjs); the work is in main/qemu-wrapper.ts.
await runEntry(() => qemuWrapper(process.argv.slice(2)));
