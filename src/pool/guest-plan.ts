import { monotonicMs, processStartTicks, selfStartTicks } from '../util/process.js';
import { BadInputError, ConflictError } from '../errors.js';
import type { DomainSpec } from '../config/domain-xml.js';
import { domainRequests, type VfRequest } from './requests.js';
import { modeUsesVfio, type PoolSpec } from '../config/pool-xml.js';
import type { PoolMode } from '../types.js';
import { knownVfNetdevs, pickVfs, poolMembers, resolveNamedVf, type Member, type ResolvedRequest } from './allocation.js';
import type { Context } from './context.js';
import type { Allocation, VfpoolState } from '../state/schema.js';
import { whereOf, type GuestOptions } from './guest-model.js';
import { HostReads, readVfFacts } from './vf-facts.js';
import { planVfConfigure, savedFromFacts, type VfFacts, type VfWant } from './vf-plan.js';
import type { VfStep } from './vf-steps.js';
import { vfSettingsOf } from '../vf-settings.js';
import { interruptedChange } from './pool-changes.js';
import { activeSpec } from './pf-identity.js';

/** The planning half of prepare: which VF serves each request, and the steps that configure it. */

/**
 * The pool a name refers to in this state, or undefined if there is none by that name; for one
 * pass (a domain's requests, one planPrepare) the pool names are listed and each definition
 * parsed once, however many requests name it.
 */
function poolLookup(ctx: Context, state: VfpoolState): (name: string) => PoolSpec | undefined {
  let names: string[] | undefined;
  const memo = new Map<string, PoolSpec | undefined>();
  return (name) => {
    if (!memo.has(name)) {
      names ??= ctx.registry.names(state);
      memo.set(name, names.includes(name) ? ctx.registry.get(name, state) : undefined);
    }
    return memo.get(name);
  };
}

/** The VF requests of a domain, validated against the pools that exist now. */
export function requestsOf(ctx: Context, spec: DomainSpec, state: VfpoolState = ctx.store.read()): VfRequest[] {
  const lookupPool = poolLookup(ctx, state);
  return domainRequests(spec, (name) => lookupPool(name)?.mode);
}

/**
 * A request by pool (`vfpool:hostdev pool=`, a hybrid pool's `<interface>`) needs the pool
 * started: libvirt refuses a guest on a network that is not active, and a pool that is only
 * defined has made no promise about its VFs (their count, their vfio binding, the in-use guard
 * of its stop). A device named without pool= asks for no pool.
 */
export function checkPoolsActive(requests: VfRequest[], state: VfpoolState): void {
  for (const r of requests) {
    if (r.pool === null) continue;
    const p = state.pools[r.pool];
    if (p === undefined) {
      throw new ConflictError(`${r.field}: pool '${r.pool}' is not active`, `start it with \`vfpool net-start ${r.pool}\``);
    }
    // A start or stop whose vfpool was killed half-way (a live one is "try again": changingPfs)
    // is not a running pool: reconcile undoes such a start (libvirt, whose net-start failed,
    // holds the network inactive) and finishes such a stop. A VF handed out meanwhile would
    // be left in a stopped pool.
    const change = interruptedChange(p);
    if (change !== null) {
      const start = change.kind === 'starting';
      throw new ConflictError(
        `${r.field}: pool '${r.pool}' is not active: its ${start ? 'start' : 'stop'} was interrupted (vfpool pid ${change.worker} is gone)`,
        start ? `run \`vfpool reconcile\` (it undoes the start), then start the pool again` : 'run `vfpool reconcile` (it finishes the stop)',
      );
    }
  }
}

/**
 * One MAC per PF: the PF's embedded switch hands a frame to the one VF with its destination
 * MAC, so a second VF of that PF with the same MAC gets nothing. domainRequests refuses a MAC
 * twice in one domain; this is another domain's VF, vfpool's or one libvirt's network handed
 * out. Per state: a migration's destination reserving the source's MAC is another host.
 */
async function checkMacFreeOnPf(state: VfpoolState, domain: string, r: VfRequest, m: Member, reads: HostReads): Promise<void> {
  const held = state.allocations.find((a) => a.owner.domain !== domain && a.pf === m.pf && a.mac === r.mac);
  let where = held ? `VF ${held.vfAddr} (${held.pf} VF ${held.vfIndex}) of domain '${held.owner.domain}'` : null;
  if (where === null) {
    // Already read while picking (reads is the pass's memo).
    const ofPf = new Set<string>((await reads.listVfs(m.pf)).map((v) => v.address));
    const port = state.ports.find((p) => p.domain !== domain && p.mac === r.mac && p.vfAddr !== null && ofPf.has(p.vfAddr));
    if (port) where = `VF ${port.vfAddr} (${m.pf}) of domain '${port.domain}', through libvirt network '${port.network}'`;
  }
  let hint = 'give this guest another MAC, or stop that domain first';
  if (where === null) {
    // What the PF has now, whoever set it: libvirt's own <interface type='hostdev'> of another
    // guest, a container's CNI, a person. Already read for the VF's facts (reads is the memo).
    for (const [index, link] of await reads.getVfLinks(m.pf)) {
      if (index === m.vf.index || link.mac !== r.mac) continue;
      const other = (await reads.listVfs(m.pf)).find((v) => v.index === index);
      where = `VF ${other?.address ?? '?'} (${m.pf} VF ${index}) as its MAC, set outside vfpool`;
      hint = `give this guest another MAC, or, if nothing uses that VF, clear its MAC (\`ip link set ${m.pf} vf ${index} mac 00:00:00:00:00:00\`)`;
      break;
    }
  }
  if (where !== null) {
    throw new ConflictError(`${r.field}: mac '${r.mac}' is already on ${where}, and PF ${m.pf} forwards a MAC to one VF only`, hint);
  }
}

function wantOf(r: VfRequest, mode: PoolMode): VfWant {
  return { ...vfSettingsOf(r), mac: r.mac, vfio: modeUsesVfio(mode) };
}

export interface PlannedVf {
  rr: ResolvedRequest;
  member: Member;
  facts: VfFacts;
  steps: VfStep[];
  record: Allocation;
  where: string;
}

/**
 * Picks and plans, against `state` (the locked state for real, a plain read for --dry-run).
 * Throws before anything is written when a request cannot be served. Nothing changes the host
 * during the pass, so each PF is read once (`HostReads`) and each pool looked up once.
 */
export async function planPrepare(ctx: Context, spec: DomainSpec, requests: VfRequest[], state: VfpoolState, opts: GuestOptions, pid: number | null): Promise<PlannedVf[]> {
  checkPoolsActive(requests, state);
  const reads = new HostReads(ctx.host);
  const lookupPool = poolLookup(ctx, state);
  // Read as consumed: a first-fit pick reads the PFs up to the first free VF (each PF once: `reads`).
  const known = knownVfNetdevs(state);
  // A running pool's PFs are the devices it started on, whatever they are called now.
  const members = async function* (pool: PoolSpec) {
    yield* poolMembers(ctx.host, await activeSpec(ctx.host, state, pool), known, reads);
  };
  const resolved: ResolvedRequest[] = [];
  for (const asked of requests) {
    const pool = asked.pool ? lookupPool(asked.pool) ?? null : null;
    // The pool's network-level <vlan> is the VF's unless the request names its own, as libvirt
    // gives a network's <vlan> to each of its interfaces that has none.
    const r: VfRequest = asked.vlan === null && pool !== null && pool.vlan !== null ? { ...asked, vlan: pool.vlan } : asked;
    if (r.pool && !pool) throw new BadInputError(`${r.field}: unknown pool '${r.pool}'`, 'define it with `vfpool net-define FILE`');
    const mode: PoolMode = pool?.mode ?? 'hostdev';
    const bound = r.netdev ? (state.bindings.find((b) => b.domain === spec.name && b.netdev === r.netdev)?.vfAddr ?? null) : null;
    const named = r.netdev !== null || r.address !== null ? await resolveNamedVf(ctx.host, r, bound, spec.name, reads, known) : null;
    resolved.push({ request: r, pool, mode, named });
  }
  // The VFs the domain's own XML gives it through libvirt: PCI devices, and macvtap lower devices.
  const own = [...(spec.libvirtPciDevices ?? [])];
  for (const d of spec.libvirtDirectNetdevs ?? []) {
    const address = await ctx.host.netdevDevice(d.netdev);
    if (address !== null) own.push({ field: d.field, address });
  }
  const picked = await pickVfs(ctx.host, state, resolved, members, spec.name, own);
  const now = new Date().toISOString();
  const planned: PlannedVf[] = [];
  for (const rr of resolved) {
    const member = picked.get(rr.request.index)!;
    await checkMacFreeOnPf(state, spec.name, rr.request, member, reads);
    const where = whereOf(spec.name, rr.pool?.name ?? null, { pf: member.pf, vfIndex: member.vf.index, vfAddr: member.vf.address });
    const facts = await readVfFacts(ctx.host, member.pf, member.vf.address, reads);
    const { steps, applied } = planVfConfigure(facts, wantOf(rr.request, rr.mode), where);
    const r = rr.request;
    planned.push({
      rr,
      member,
      facts,
      steps,
      where,
      record: {
        pool: rr.pool?.name ?? null,
        mode: rr.mode,
        pf: member.pf,
        vfIndex: member.vf.index,
        vfAddr: member.vf.address,
        netdev: member.vf.netdev,
        iommuGroup: member.vf.iommuGroup,
        owner: { domain: spec.name, uuid: spec.uuid, pid, ...(pid !== null ? { pidStart: processStartTicks(pid) } : {}), via: opts.via, daemon: opts.daemon ?? null, ...(opts.daemon ? { daemonStart: processStartTicks(opts.daemon) } : {}) },
        mac: r.mac,
        vlan: r.vlan,
        alias: `vfpool-vf${r.index}`,
        pairedMac: r.pairedMac,
        phase: 'preparing',
        worker: process.pid,
        workerStart: selfStartTicks(),
        saved: savedFromFacts(facts),
        applied,
        vfioOwner: null,
        guestSlot: r.index,
        requestedNetdev: r.netdev,
        requested: vfSettingsOf(r),
        createdAt: now,
        createdMonoMs: monotonicMs(),
        lastError: null,
      },
    });
  }
  return planned;
}

