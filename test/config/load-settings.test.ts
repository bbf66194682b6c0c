import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_SETTINGS, loadSettings } from '../../src/config/settings.js';
import { scratchDir } from '../helpers/scratch.js';

t.test('loadSettings: defaults, then vfpool.conf, then the environment, key by key', async (t) => {
  const conf = scratchDir(t);
  t.same(loadSettings({ VFPOOL_CONFIG_DIR: conf }), { ...DEFAULT_SETTINGS, configDir: conf }, 'no vfpool.conf: the defaults');
  writeFileSync(join(conf, 'vfpool.conf'), `# comment\nVFPOOL_STATE_DIR = "/run/x"\nVFPOOL_HOST=sim:/tmp/h.json\nVFPOOL_IP='/opt/ip'\n`);
  const s = loadSettings({ VFPOOL_CONFIG_DIR: conf, VFPOOL_HOST: 'linux', VFPOOL_SYSFS: '' });
  t.same(s, { ...DEFAULT_SETTINGS, configDir: conf, stateDir: '/run/x', host: 'linux', ipPath: '/opt/ip' }, 'the environment wins; an empty variable does not');
  writeFileSync(join(conf, 'vfpool.conf'), `VFPOOL_CONFIG_DIR=/srv/pools\n`);
  t.equal(loadSettings({ VFPOOL_CONFIG_DIR: conf }).configDir, conf, 'the environment\'s VFPOOL_CONFIG_DIR wins over the file\'s too');
});

t.test('loadSettings: a broken vfpool.conf is bad input naming file and line; one that cannot be read is not hidden', async (t) => {
  const conf = scratchDir(t);
  writeFileSync(join(conf, 'vfpool.conf'), 'VFPOOL_HOST=linux\nexport VFPOOL_IP=/x\n');
  t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: conf }), {
    exitCode: 2,
    message: `${join(conf, 'vfpool.conf')}:2: 'export VFPOOL_IP=/x' is not a KEY=value line`,
  });
  const dirConf = scratchDir(t);
  mkdirSync(join(dirConf, 'vfpool.conf'));
  t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: dirConf }), { exitCode: 2, message: /vfpool\.conf is a directory/ });
});

t.test('loadSettings: a simulated host file given as a relative path is refused, as every other path is', async (t) => {
  // Relative to the cwd: the CLI run from one directory and the hooks (cwd /) would each
  // simulate a machine of their own, and hand out the same VFs twice.
  const conf = scratchDir(t);
  t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: conf, VFPOOL_HOST: 'sim:host.json' }), {
    exitCode: 2,
    message: "VFPOOL_HOST 'sim:host.json' (from the environment) names a relative file",
    hint: 'give an absolute path, sim:/path/to/host.json: the hooks run with cwd /, the CLI with yours',
  });
  writeFileSync(join(conf, 'vfpool.conf'), 'VFPOOL_HOST=sim:./lab/host.json\n');
  t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: conf }), { exitCode: 2, message: "VFPOOL_HOST 'sim:./lab/host.json' (from vfpool.conf) names a relative file" });
  t.equal(loadSettings({ VFPOOL_CONFIG_DIR: conf, VFPOOL_HOST: 'sim:/srv/host.json' }).host, 'sim:/srv/host.json', 'an absolute one is taken');
});
