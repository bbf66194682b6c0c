import { closeSync, constants, fchmodSync, lstatSync, openSync, readdirSync } from 'node:fs';
import { makeDir } from '../util/make-dir.js';
import { BadInputError, errnoOf } from '../errors.js';
import { join } from 'node:path';
import { DEFAULT_LOCK, readJsonFile, removeFile, updateJsonFileLocked, type LockOptions } from '../util/json-file.js';
import { fsError } from '../util/fs-errors.js';
import { normaliseState } from './normalise.js';
import { emptyState, type VfpoolState } from './schema.js';
import { assertStateDirTrusted } from '../util/state-dir-owner.js';

/**
 * The runtime state in `$VFPOOL_STATE_DIR` (default /run/vfpool: VFs vanish at reboot, so does
 * this): the mechanism (lock, atomic write, index markers); what the file holds is schema.ts,
 * and every read goes through `normaliseState` (version check, upgrade). The only write path is
 * `update(fn)`: lock, read, apply, atomic replace, unlock.
 *
 * Beside `state.json` it keeps `index/pool.NAME` and `index/domain.NAME` marker files: the
 * hook shims test them with plain `[ -e ]` to decide, without starting Node, whether a call
 * concerns vfpool at all. Markers are a superset of the truth: added before the state that
 * needs them is written, removed after the state that dropped them is written.
 *
 * Every write records the host's boot (`bootOf`: the kernel's boot_id). A file of an earlier
 * boot, which a state directory on persistent storage keeps across a reboot, describes VFs,
 * pools and QEMU processes that all ended with that boot (VFs exist only once `sriov_numvfs` is
 * written again, with none of vfpool's settings): it reads as empty, as /run/vfpool would be,
 * and its first write replaces it and removes its markers.
 */
export class StateStore {
  readonly file: string;
  readonly indexDir: string;
  constructor(
    readonly dir: string,
    private readonly lock: LockOptions = DEFAULT_LOCK,
    /** The host's boot now (Host.bootId); null: unknown, every file is taken as this boot's. */
    readonly bootOf: () => string | null = () => null,
  ) {
    this.file = join(dir, 'state.json');
    this.indexDir = join(dir, 'index');
  }

  /**
   * Creates the directory 0700 (state holds saved MACs and who owns what: root's business), or
   * leaves it 0711 once a domain's QEMU plan lives under it (writeDomainPlan): the QEMU user
   * must traverse it to reach qemu/NAME/. Seen in the lab under libvirt: resetting it to 0700 at
   * `start begin` (a state write between prepare and QEMU's exec) hid the plan from the wrapper,
   * which then added nothing, and `started` found no root port to hotplug the VF into.
   * A symlink is refused, never followed: chmod through it would change its target (`/tmp`
   * losing its sticky bit), and whoever can replace the link redirects root's writes.
   */
  ensureDir(): void {
    assertStateDirTrusted(this.dir);
    for (const [dir, what] of [[this.dir, 'the state directory'], [this.indexDir, 'the state index directory']] as const) {
      try {
        makeDir(dir, 0o700);
        const st = lstatSync(dir);
        if (st.isSymbolicLink()) {
          throw new BadInputError(`${what} ${dir} is a symbolic link; vfpool does not follow links in its state directory`, 'point VFPOOL_STATE_DIR at the real directory');
        }
        if (!st.isDirectory()) throw new BadInputError(`${what} ${dir} exists and is not a directory`, 'remove or rename it, or point VFPOOL_STATE_DIR elsewhere');
        // O_NOFOLLOW|O_DIRECTORY: the chmod is of this directory, even if it were swapped for a link since the lstat.
        const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
        try {
          const mode = st.mode & 0o777;
          if (mode !== 0o700 && !(mode === 0o711 && dir === this.dir)) fchmodSync(fd, 0o700);
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        if (errnoOf(err) === 'ELOOP') throw new BadInputError(`${what} ${dir} is a symbolic link; vfpool does not follow links in its state directory`, 'point VFPOOL_STATE_DIR at the real directory');
        throw fsError(err, dir, what, 'VFPOOL_STATE_DIR');
      }
    }
  }

  /** The state, upgraded to the current version; empty when there is no file yet, or it is of an earlier boot. */
  read(): VfpoolState {
    return this.readOfBoot().state;
  }

  /**
   * The state, and the boot of the file read when it was an earlier one (then the state is
   * empty). A file that records no boot (written before it was kept) is taken as this boot's.
   */
  readOfBoot(): { state: VfpoolState; earlierBoot: string | null } {
    assertStateDirTrusted(this.dir);
    return this.readFileOfBoot();
  }

  /** readOfBoot, without the owner check: for update(), whose ensureDir made it. */
  private readFileOfBoot(): { state: VfpoolState; earlierBoot: string | null } {
    const raw = readJsonFile<unknown>(this.file, 'the state file', 'VFPOOL_STATE_DIR');
    // An empty state is this boot's: what its first write records.
    const fresh = () => ({ ...emptyState(), boot: this.bootOf() });
    if (raw === undefined) return { state: fresh(), earlierBoot: null };
    const state = normaliseState(raw, this.file);
    const now = state.boot === null ? null : this.bootOf();
    if (now === null || state.boot === now) return { state, earlierBoot: null };
    return { state: fresh(), earlierBoot: state.boot };
  }

  async update<R>(fn: (s: VfpoolState) => Promise<R> | R): Promise<R> {
    this.ensureDir();
    let earlierBoot: string | null = null;
    return updateJsonFileLocked<VfpoolState, R>(
      this.file,
      () => {
        const read = this.readFileOfBoot();
        earlierBoot = read.earlierBoot;
        return read.state;
      },
      async (current) => {
        const before = this.markersOf(current);
        const result = await fn(current);
        const after = this.markersOf(current);
        for (const m of after) if (!before.has(m)) this.touchMarker(m);
        // An earlier boot's markers name pools and domains of that boot: none is this state's.
        const stale = earlierBoot === null ? [...before].filter((m) => !after.has(m)) : readdirSync(this.indexDir).filter((m) => !after.has(m));
        current.boot = this.bootOf();
        return { next: current, result, afterWrite: () => stale.forEach((m) => removeFile(join(this.indexDir, m))) };
      },
      this.lock,
      0o600,
      'state',
    );
  }

  private markersOf(s: VfpoolState): Set<string> {
    const m = new Set<string>();
    for (const name of Object.keys(s.pools)) m.add(`pool.${name}`);
    for (const a of s.allocations) m.add(`domain.${a.owner.domain}`);
    for (const p of s.ports) m.add(`domain.${p.domain}`);
    return m;
  }

  /** An empty marker; a symlink planted in its place is not followed (O_NOFOLLOW: ELOOP, reported). */
  private touchMarker(m: string): void {
    const file = join(this.indexDir, m);
    try {
      closeSync(openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600));
    } catch (err) {
      throw fsError(err, file, 'the index marker', 'VFPOOL_STATE_DIR');
    }
  }

  /**
   * Rebuilds the markers from the state (reconcile, and after a crash between the two writes),
   * under the lock: a prepare that runs meanwhile adds its marker before its state, and a
   * rebuild from an older read would delete it (markers must stay a superset of the state).
   */
  async rebuildIndex(): Promise<void> {
    await this.update((state) => {
      const want = this.markersOf(state);
      for (const m of want) this.touchMarker(m);
      for (const f of readdirSync(this.indexDir)) if (!want.has(f)) removeFile(join(this.indexDir, f));
    });
  }
}

/**
 * The store as a dry run sees it: `update` applies its function to a fresh read and keeps
 * nothing (no lock, no write, no index marker, no directory made), so a dry run can go through
 * the real run's code, its checks included, and change nothing.
 */
export class DryRunStateStore extends StateStore {
  /** The dry run of `store`: the same directory and boot. */
  static of(store: StateStore): DryRunStateStore {
    return new DryRunStateStore(store.dir, DEFAULT_LOCK, store.bootOf);
  }

  override ensureDir(): void {}
  override async update<R>(fn: (s: VfpoolState) => Promise<R> | R): Promise<R> {
    return fn(this.read());
  }
  override async rebuildIndex(): Promise<void> {}
}
