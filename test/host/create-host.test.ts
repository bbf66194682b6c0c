import t from 'tap';
import { DEFAULT_SETTINGS } from '../../src/config/settings.js';
import { createHost } from '../../src/host/index.js';
import { LinuxHost } from '../../src/host/linux-host.js';
import { SimHost } from '../../src/host/sim-host.js';

t.test('VFPOOL_HOST picks the machine: linux, sim:FILE; anything else is bad input (exit 2)', async (t) => {
  t.ok(createHost({ ...DEFAULT_SETTINGS, host: 'linux' }) instanceof LinuxHost);
  t.ok(createHost({ ...DEFAULT_SETTINGS, host: 'sim:/tmp/h.json' }) instanceof SimHost);
  for (const host of ['xen', 'sim:', 'Linux']) {
    t.throws(() => createHost({ ...DEFAULT_SETTINGS, host }), {
      exitCode: 2,
      message: `VFPOOL_HOST '${host}' is not 'linux' or 'sim:FILE'`,
      hint: 'set it in the environment or in vfpool.conf',
    }, host);
  }
});
