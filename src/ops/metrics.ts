import type { Status } from '../pool/status.js';
import type { Allocation } from '../state/schema.js';

/**
 * `vfpool status --format prometheus`: the text exposition format (version 0.0.4), written to a
 * file for node_exporter's textfile collector. Every family has HELP and TYPE lines; label
 * values are escaped as the format requires (backslash, double quote, newline).
 */

type Labels = Record<string, string>;
interface Family {
  name: string;
  help: string;
  samples: Array<{ labels: Labels; value: number }>;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function renderFamily(f: Family): string {
  const lines = [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} gauge`];
  for (const s of f.samples) {
    const labels = Object.entries(s.labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
    lines.push(`${f.name}${labels ? `{${labels}}` : ''} ${s.value}`);
  }
  return lines.join('\n');
}

const PHASES: Allocation['phase'][] = ['preparing', 'ready', 'releasing'];

export function formatPrometheus(status: Status, allocations: Allocation[]): string {
  const pool = (p: Status['pools'][number]) => ({ pool: p.name, mode: p.mode });
  const pf = (p: Status['pfs'][number]) => ({ pf: p.name, address: p.address });
  const families: Family[] = [
    { name: 'vfpool_pool_active', help: 'Whether the pool is started (1) or not (0).', samples: status.pools.map((p) => ({ labels: pool(p), value: p.active ? 1 : 0 })) },
    { name: 'vfpool_pool_vfs', help: 'VFs the pool has on this host.', samples: status.pools.map((p) => ({ labels: pool(p), value: p.vfs })) },
    { name: 'vfpool_pool_vfs_in_use', help: 'VFs of the pool held by a guest, libvirt or an open /dev/vfio group.', samples: status.pools.map((p) => ({ labels: pool(p), value: p.inUse })) },
    { name: 'vfpool_pool_vfs_free', help: 'VFs of the pool free for the next guest.', samples: status.pools.map((p) => ({ labels: pool(p), value: p.vfs - p.inUse })) },
    { name: 'vfpool_pf_totalvfs', help: 'The PF\'s sriov_totalvfs: the most VFs it can have.', samples: status.pfs.map((p) => ({ labels: pf(p), value: p.totalVfs })) },
    { name: 'vfpool_pf_numvfs', help: 'The PF\'s sriov_numvfs: the VFs it has now.', samples: status.pfs.map((p) => ({ labels: pf(p), value: p.numVfs })) },
    { name: 'vfpool_pf_up', help: 'Whether the PF\'s netdev is up (1) or down (0).', samples: status.pfs.map((p) => ({ labels: pf(p), value: p.up ? 1 : 0 })) },
    {
      name: 'vfpool_allocations',
      help: 'VFs vfpool has allocated to guests, by phase (preparing, ready, releasing: a failed restore waits for reconcile).',
      samples: PHASES.map((phase) => ({ labels: { phase }, value: allocations.filter((a) => a.phase === phase).length })),
    },
  ];
  return families.map(renderFamily).join('\n') + '\n';
}
