/**
 * Pool activation (seed 000) on a real kernel: startPool/stopPool through LinuxHost on the lab
 * guest's igb PF, with a real QEMU holding a VF's /dev/vfio/GROUP for the in-use guard. Run
 * only inside the lab guest by test/lab/guest-suites.sh:
 *   node dist/test/pool/activation-real.lab.js
 */
import t from 'tap';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.js';
import { createContext } from '../../src/pool/context.js';
import { assertLabGuest, findLabPf, holdVfioWithQemu, labTempDir, renameLabPf, resetLabPf } from '../helpers/real-host.js';
import { activationSuite } from './activation-suite.js';

assertLabGuest('activation-real.lab.js');
const lab = findLabPf();
t.setTimeout(15 * 60_000);

activationSuite(t, async () => {
  await resetLabPf(lab.pf);
  const dir = labTempDir('vfpool-activation');
  const settings: Settings = { ...DEFAULT_SETTINGS, configDir: join(dir, 'etc'), stateDir: join(dir, 'run'), host: 'linux' };
  mkdirSync(join(settings.configDir, 'networks'), { recursive: true });
  const ctx = createContext(settings, 'lab');
  // igbvf probing under TCG takes about a second per VF; the default 15 s is for real hardware.
  ctx.apply = { settleTimeoutMs: 60_000, pollMs: 100 };
  return {
    ctx,
    pf: lab.pf,
    totalVfs: lab.totalVfs,
    holdVfio: holdVfioWithQemu,
    renamePf: (to) => renameLabPf(lab.pf, to),
    cleanup: () => resetLabPf(lab.pf),
  };
});
