import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';
import { formatPrometheus } from '../../src/ops/metrics.js';
import { makeSimEnv } from '../helpers/env.js';
import { domainXml } from '../helpers/libvirt-domains.js';
import { vfpoolCli } from '../helpers/spawn.js';
import { cli } from '../helpers/cli-in-process.js';

/** The parser is lenient about values, so every sample is also checked to be a number. */
function parse(text: string): Map<string, PromFamily> {
  const families = parsePrometheusTextFormat(text);
  for (const f of families) {
    for (const m of f.metrics) if (!Number.isFinite(Number(m.value)) || m.value === '') throw new Error(`${f.name}: value '${m.value}' is not a number`);
  }
  return new Map(families.map((f) => [f.name, f]));
}
const value = (f: PromFamily | undefined, labels: Record<string, string>) => f?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value;

t.test('status --format prometheus: pools, PFs and allocations by phase, read back by a Prometheus text parser', async (t) => {
  const w = makeSimEnv(t, { pfs: [{ name: 'eth1', totalVfs: 8, address: '0000:3b:00.0' }, { name: 'eth2', totalVfs: 4, address: '0000:5e:00.0' }] });
  w.definePool('p', `<network><name>p</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='3'/></pf></forward></network>`);
  w.definePool('idle', `<network><name>idle</name><forward mode='passthrough'><pf dev='eth2'/></forward></network>`);
  // The setup and the refusal in-process; the metrics themselves from the bundle, as node_exporter's textfile gets them.
  t.equal((await cli(['net-start', 'p'], { env: w.env })).exitCode, 0);
  const vm = join(w.dir, 'vm1.xml');
  writeFileSync(vm, domainXml('prepare', { name: 'vm1', vfpool: `<vfpool:hostdev pool='p' mac='52:54:00:aa:00:01'/>` }));
  t.equal((await cli(['prepare', '--xml', vm], { env: w.env })).exitCode, 0);

  const r = await vfpoolCli(['status', '--format', 'prometheus'], { env: w.env });
  t.equal(r.exitCode, 0, r.stderr);
  const m = parse(r.stdout);
  for (const f of m.values()) {
    t.equal(f.type, 'GAUGE', `${f.name} has TYPE`);
    t.ok(f.help.length > 10, `${f.name} has HELP`);
  }
  t.equal(value(m.get('vfpool_pool_vfs'), { pool: 'p', mode: 'hostdev' }), '3');
  t.equal(value(m.get('vfpool_pool_vfs_in_use'), { pool: 'p' }), '1');
  t.equal(value(m.get('vfpool_pool_vfs_free'), { pool: 'p' }), '2');
  t.equal(value(m.get('vfpool_pool_active'), { pool: 'p' }), '1');
  t.equal(value(m.get('vfpool_pool_active'), { pool: 'idle' }), '0');
  t.equal(value(m.get('vfpool_pool_vfs'), { pool: 'idle' }), '0', 'eth2 has no VFs yet');
  t.equal(value(m.get('vfpool_pf_totalvfs'), { pf: 'eth1', address: '0000:3b:00.0' }), '8');
  t.equal(value(m.get('vfpool_pf_numvfs'), { pf: 'eth1' }), '3');
  t.equal(value(m.get('vfpool_pf_totalvfs'), { pf: 'eth2' }), '4');
  t.equal(value(m.get('vfpool_pf_numvfs'), { pf: 'eth2' }), '0');
  t.same(m.get('vfpool_allocations')!.metrics.map((x) => [x.labels!.phase, x.value]), [['preparing', '0'], ['ready', '1'], ['releasing', '0']]);

  const bad = await cli(['status', '--format', 'xml'], { env: w.env });
  t.equal(bad.exitCode, 2);
  t.equal(bad.stderr, 'vfpool: status: Invalid values: Argument: format, Given: "xml", Choices: "table", "json", "prometheus": see `vfpool status --help`\n');
});

t.test('label values are escaped as the format requires', async (t) => {
  const text = formatPrometheus({ host: 'linux', pfs: [], pools: [{ name: 'a"b\\c\nd', mode: 'hostdev', active: true, state: 'active', persistent: true, vfs: 2, inUse: 1 }] }, []);
  t.match(text, /vfpool_pool_vfs\{pool="a\\"b\\\\c\\nd",mode="hostdev"\} 2/);
  t.equal(value(parse(text).get('vfpool_pool_vfs'), { mode: 'hostdev' }), '2');
  t.equal(parse(text).get('vfpool_pool_vfs')!.metrics[0]!.labels!.pool, 'a"b\\c\nd', 'the parser gets the name back');
});
