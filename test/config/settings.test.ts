import t from 'tap';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BadInputError } from '../../src/errors.js';
import { DEFAULT_SETTINGS, loadSettings, parseConfFile, settingsFrom } from '../../src/config/settings.js';

t.test('parseConfFile: KEY=value lines, comments, quotes; nothing evaluated', async (t) => {
  const cases: Array<[string, string, Record<string, string>]> = [
    ['empty', '', {}],
    ['comments and blank lines', '# vfpool\n\n   # indented\n', {}],
    ['plain', 'VFPOOL_STATE_DIR=/run/x\n', { VFPOOL_STATE_DIR: '/run/x' }],
    ['spaces around =', 'VFPOOL_HOST = sim:/tmp/h.json', { VFPOOL_HOST: 'sim:/tmp/h.json' }],
    ['double quotes', 'VFPOOL_IP="/usr/sbin/ip"', { VFPOOL_IP: '/usr/sbin/ip' }],
    ['single quotes', "VFPOOL_ETC='/etc'", { VFPOOL_ETC: '/etc' }],
    ['no shell: $() stays text', 'VFPOOL_QEMU=$(rm -rf /)', { VFPOOL_QEMU: '$(rm -rf /)' }],
    ['the last one wins', 'VFPOOL_DEV=/a\nVFPOOL_DEV=/b', { VFPOOL_DEV: '/b' }],
  ];
  for (const [name, text, want] of cases) t.same(parseConfFile(text, 'F'), want, name);
});

t.test('parseConfFile refusals name file and line', async (t) => {
  const cases: Array<[string, string]> = [
    ['VFPOOL_HOST', "F:1: 'VFPOOL_HOST' is not a KEY=value line"],
    ['\nexport VFPOOL_HOST=linux', "F:2: 'export VFPOOL_HOST=linux' is not a KEY=value line"],
    ['VFPOOL_NOPE=1', "F:1: unknown setting 'VFPOOL_NOPE'"],
  ];
  for (const [text, msg] of cases) {
    const err = t.throws(() => parseConfFile(text, 'F')) as BadInputError;
    t.ok(err instanceof BadInputError, text);
    t.equal(err.message, msg);
  }
});

t.test('loadSettings: environment over file; a config dir that is a file is a sentence with the fix', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vfpool-conf-'));
  writeFileSync(join(dir, 'vfpool.conf'), 'VFPOOL_STATE_DIR=/from/file\nVFPOOL_HOST=sim:/x\n');
  const s = loadSettings({ VFPOOL_CONFIG_DIR: dir, VFPOOL_HOST: 'linux' });
  t.equal(s.stateDir, '/from/file');
  t.equal(s.host, 'linux', 'the environment wins');
  t.equal(s.sysfsRoot, DEFAULT_SETTINGS.sysfsRoot);

  const file = join(dir, 'vfpool.conf');
  const err = t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: file })) as BadInputError;
  t.equal(err.exitCode, 2);
  t.equal(err.toLine(), `the configuration file ${join(file, 'vfpool.conf')}: a part of that path is a file, not a directory: remove or rename that file, or point VFPOOL_CONFIG_DIR elsewhere`);

  const asDir = mkdtempSync(join(tmpdir(), 'vfpool-conf-'));
  mkdirSync(join(asDir, 'vfpool.conf'));
  const err2 = t.throws(() => loadSettings({ VFPOOL_CONFIG_DIR: asDir })) as BadInputError;
  t.equal(err2.exitCode, 2);
  t.match(err2.message, /vfpool\.conf is a directory$/);
});

t.test('VFPOOL_SIM_DELIVERY: cmdline by default, hotplug when asked, anything else one sentence', async (t) => {
  t.equal(settingsFrom({}, {}).simDelivery, 'cmdline');
  t.equal(settingsFrom({}, { VFPOOL_SIM_DELIVERY: 'hotplug' }).simDelivery, 'hotplug');
  t.equal(settingsFrom({ VFPOOL_SIM_DELIVERY: 'cmdline' }, { VFPOOL_SIM_DELIVERY: 'hotplug' }).simDelivery, 'cmdline', 'the environment wins');
  const err = t.throws(() => settingsFrom({ VFPOOL_SIM_DELIVERY: 'hot plug' }, {})) as BadInputError;
  t.ok(err instanceof BadInputError);
  t.equal(err.message, "VFPOOL_SIM_DELIVERY='hot plug' is neither cmdline nor hotplug");
});
