import { BadInputError } from '../../errors.js';
import { parseDomainXml } from '../../config/domain-xml.js';
import { guestOptions, prepareGuest, planReleaseGuest, releaseGuest } from '../../pool/guests.js';
import { DEFAULT_RECONCILE_GRACE_MS, reconcile } from '../../pool/reconcile.js';
import { parseObjectName } from '../../types.js';
import { isAlive } from '../../util/process.js';
import { quoteInput } from '../../util/quote.js';
import { DRY_RUN, JSON_OUT, parseSeconds, secondsOption, type CommandDef } from './define.js';
import { cliContext, out } from './output.js';
import { readInputFile } from '../run.js';

/**
 * `--pid`: read as text (yargs' number type turns `abc` into NaN) and checked to be a live
 * process, since the allocation is freed once that process is gone: a dead or mistyped pid
 * would let the next reconcile free VFs a guest is about to use.
 */
function parsePid(raw: string): number {
  if (!/^[0-9]{1,10}$/.test(raw) || Number(raw) < 2) throw new BadInputError(`--pid ${quoteInput(raw)} is not a process id`, 'give the pid of the QEMU process that uses the VFs, a whole number above 1');
  const pid = Number(raw);
  if (!isAlive(pid)) throw new BadInputError(`--pid ${pid}: no such process`, 'start QEMU first and give its pid, or prepare without --pid and release with `vfpool release`');
  return pid;
}

export const GUEST_COMMANDS: CommandDef[] = [
  {
    name: 'prepare',
    describe: 'allocate and configure the VFs a domain asks for (what the qemu hook does at prepare)',
    options: {
      xml: { type: 'string', demandOption: true, describe: 'the domain XML (- for stdin)' },
      pid: { type: 'string', describe: 'the QEMU pid that uses them (lets `vfpool reconcile` free them when it exits)' },
      delivery: { type: 'string', choices: ['cmdline', 'hotplug'], describe: "how the VFs reach QEMU: on vfpool-qemu's command line (cmdline, the default), or device_add'ed by `vfpool plug` once QEMU runs (hotplug: unpluggable without the guest's help, e.g. for a migration of a guest with no OS)" },
      ...DRY_RUN,
      ...JSON_OUT,
    },
    examples: [
      ['prepare --xml vm1.xml', 'give domain vm1 the VFs its <vfpool:hostdev> elements ask for'],
      ['prepare --xml vm1.xml --dry-run', 'print which VFs it would get and the steps'],
      ['prepare --xml vm1.xml --delivery hotplug', 'the wrapper only reserves root ports; `vfpool plug vm1` adds the VFs to the running QEMU'],
    ],
    async run(a: { xml: string; pid?: string; delivery?: 'cmdline' | 'hotplug'; dryRun: boolean; json: boolean }) {
      const pid = a.pid === undefined ? null : parsePid(String(a.pid));
      const spec = parseDomainXml(await readInputFile(a.xml), a.xml);
      const ctx = cliContext('prepare');
      const r = await prepareGuest(ctx, spec, { ...guestOptions('cli', ctx.settings), dryRun: a.dryRun, pid, ...(a.delivery !== undefined ? { delivery: a.delivery } : {}) });
      // A domain with only <vfpool:sriov-nic> still gets a plan, and vfpool-qemu adds its NICs:
      // "nothing to do" would send the reader looking for why its guest has new devices.
      const n = spec.sriovNics.length;
      const nics = n === 0 ? '' : `${n} emulated SR-IOV NIC${n === 1 ? '' : 's'} (${spec.sriovNics.map((x) => `${x.vfs} VF${x.vfs === 1 ? '' : 's'}`).join(', ')})`;
      if (a.json) out(JSON.stringify({ ...r, dryRun: a.dryRun }));
      else if (a.dryRun) {
        out(`plan for prepare of domain ${spec.name} (--dry-run, nothing changed):`);
        const none = nics ? `write the plan by which vfpool-qemu adds its ${nics}; no VF to allocate` : 'nothing to do: the domain asks for no VF';
        (r.plan.length ? r.plan : [none]).forEach((l, i) => out(`  ${i + 1}. ${l}`));
      } else if (r.vfs.length === 0) out(`Domain ${spec.name} asks for no VF from vfpool${nics ? `; vfpool-qemu adds its ${nics}` : ''}`);
      else {
        for (const v of r.vfs) out(`Domain ${spec.name}: VF ${v.vfAddr} (${v.pf} VF ${v.vfIndex}${v.pool ? `, pool ${v.pool}` : ''}${v.netdev ? `, netdev ${v.netdev}` : ''}) mac ${v.mac}${v.vlan !== null ? ` vlan ${v.vlan}` : ''}, guest slot ${v.guestSlot}`);
        if (a.delivery === 'hotplug') out(`Domain ${spec.name}: delivery hotplug: once its QEMU runs (vfpool-qemu), \`vfpool plug ${spec.name}\` device_adds the VFs`);
      }
      return 0;
    },
  },
  {
    name: 'release',
    args: '[domain]',
    describe: 'restore and free a domain\'s VFs (what the qemu hook does at release); idempotent',
    positionals: { domain: { describe: 'the domain whose VFs to release (or give --xml)' } },
    options: {
      xml: { type: 'string', describe: 'take the domain name from this domain XML (- for stdin)' },
      'forget-netdevs': { type: 'boolean', default: false, describe: 'also forget which PCI address each of its netdev= requests resolved to, so the next start looks the netdev up again' },
      ...DRY_RUN,
      ...JSON_OUT,
    },
    examples: [['release vm1', 'restore MAC, VLAN and driver of vm1\'s VFs and free them'], ['release --xml vm1.xml --dry-run', 'print what would be restored']],
    async run(a: { domain?: string; xml?: string; dryRun: boolean; json: boolean; forgetNetdevs: boolean }) {
      if ((a.domain === undefined) === (a.xml === undefined)) throw new BadInputError('name the domain, or give --xml FILE (one of the two)');
      const name = a.xml !== undefined ? parseDomainXml(await readInputFile(a.xml), a.xml).name : parseObjectName(a.domain!, 'domain');
      const ctx = cliContext('release');
      if (a.dryRun) {
        const p = await planReleaseGuest(ctx, name);
        if (a.json) out(JSON.stringify({ ...p, dryRun: true }));
        else {
          out(`plan for release of domain ${name} (--dry-run, nothing changed):`);
          (p.plan.length ? p.plan : ['nothing to do: vfpool holds nothing for it']).forEach((l, i) => out(`  ${i + 1}. ${l}`));
        }
        return 0;
      }
      const r = await releaseGuest(ctx, name, { reason: 'vfpool release', refuseIfRunning: true, forgetNetdevs: a.forgetNetdevs });
      // The records carry the phase they had while being restored; once this returns they are freed.
      if (a.json) out(JSON.stringify({ ...r, released: r.released.map((v) => ({ ...v, phase: 'released' })), dryRun: false }));
      else if (r.released.length + r.vanished.length === 0) out(`Domain ${name} holds no VF (nothing to release)`);
      else {
        for (const v of r.released) out(`Domain ${name}: VF ${v.vfAddr} restored and freed`);
        for (const v of r.vanished) out(`Domain ${name}: VF ${v} is gone from the host; its record was dropped`);
      }
      return 0;
    },
  },
  {
    name: 'reconcile',
    describe: 'free and restore the VFs of guests that no longer run; keep the others; report both',
    options: {
      grace: secondsOption('seconds a libvirt guest may take from prepare to having a QEMU pid', DEFAULT_RECONCILE_GRACE_MS / 1000),
      ...DRY_RUN,
      ...JSON_OUT,
    },
    examples: [['reconcile', 'after a crash or a daemon restart: free what dead guests held'], ['reconcile --dry-run', 'only say what would be freed']],
    async run(a: { grace: string | number; dryRun: boolean; json: boolean }) {
      const graceSeconds = parseSeconds('grace', a.grace, { zeroAllowed: true });
      const ctx = cliContext('reconcile');
      const r = await reconcile(ctx, { libvirtRunDir: guestOptions('cli', ctx.settings).libvirtRunDir, graceMs: graceSeconds * 1000, dryRun: a.dryRun });
      if (a.json) {
        out(JSON.stringify(r));
        return r.failed.length ? 1 : 0;
      }
      const verb = a.dryRun ? 'would free' : 'freed';
      for (const m of r.pools) out(`pool ${m.pool}: ${m.what}`);
      for (const e of r.freed) out(`${verb} ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const e of r.failed) out(`FAILED ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const e of r.kept) out(`kept ${e.vfAddr} of domain ${e.domain}: ${e.reason}`);
      for (const p of r.portsDropped) out(`${a.dryRun ? 'would drop' : 'dropped'} libvirt port of network ${p.network} for domain ${p.domain} (${p.vf ?? '-'}): ${p.reason}`);
      for (const m of r.migrationsDropped) out(`${a.dryRun ? 'would drop' : 'dropped'} the migration record of domain ${m.domain} (${m.role}, ${m.stage}): ${m.reason}`);
      for (const m of r.migrationsKept) out(`kept the migration record of domain ${m.domain} (${m.role}, ${m.stage}): ${m.reason}`);
      for (const l of r.leftovers) out(`pool ${l.pool} (stopped): ${l.what}`);
      out(`${r.kept.length} kept, ${r.freed.length} ${verb}, ${r.failed.length} failed${a.dryRun ? ' (--dry-run, nothing changed)' : ''}`);
      return r.failed.length ? 1 : 0;
    },
  },
];
