import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { BadInputError, ConflictError, errnoOf } from '../errors.js';
import { parseObjectName } from '../types.js';
import { parsePoolXml, networkElement, poolFromDefinition, poolFromNetwork, type PoolSpec } from '../config/pool-xml.js';
import { fsError } from '../util/fs-errors.js';
import { parseXml, type XmlElement } from '../util/xml.js';
import type { StateStore } from '../state/store.js';
import type { VfpoolState } from '../state/schema.js';

/**
 * Pool definitions: persistent ones in `$VFPOOL_CONFIG_DIR/networks/NAME.xml` (like libvirt's
 * /etc/libvirt/qemu/networks), and transient ones that exist only while a libvirt network that
 * carries a pool in its metadata is running (kept in the state store).
 */
export class PoolRegistry {
  readonly dir: string;
  /** libvirt's own persistent network definitions (virsh net-define), the carriers of pools in their metadata. */
  private readonly libvirtNetworks: string | null;
  constructor(configDir: string, private readonly store: StateStore, libvirtConfDir: string | null = null) {
    this.dir = join(configDir, 'networks');
    this.libvirtNetworks = libvirtConfDir === null ? null : join(libvirtConfDir, 'qemu/networks');
  }

  private fileOf(name: string): string {
    return join(this.dir, `${parseObjectName(name, 'pool name')}.xml`);
  }

  /** The persistent definition's XML, or undefined. */
  readDefinition(name: string): string | undefined {
    try {
      return readFileSync(this.fileOf(name), 'utf8');
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw fsError(err, this.fileOf(name), 'the pool definition', 'VFPOOL_CONFIG_DIR');
    }
  }

  /** The persistent definition, its text and the spec parsed from that same text. */
  definition(name: string): { xml: string; spec: PoolSpec } | undefined {
    const xml = this.readDefinition(name);
    return xml === undefined ? undefined : { xml, spec: parsePoolXml(xml, this.fileOf(name)) };
  }

  /** A pool by name: the running one's definition first (what it was started with), then the file. */
  get(name: string, state: VfpoolState = this.store.read()): PoolSpec {
    const active = state.pools[name];
    if (active) return specFromXml(active.xml, `pool '${name}' (as started)`);
    const xml = this.readDefinition(name);
    if (xml === undefined) this.unknown(name);
    return parsePoolXml(xml, this.fileOf(name));
  }

  /**
   * The error for a name that is neither defined nor running. A stopped libvirt network that
   * carries the pool in its metadata is libvirt's to start, stop and undefine (`virshVerb`):
   * said so, instead of sending the user to define a second copy in vfpool.
   */
  unknown(name: string, virshVerb: 'net-start' | 'net-destroy' | 'net-undefine' | null = null): never {
    const carrier = this.libvirtCarrier(name);
    if (carrier !== null) {
      throw new BadInputError(`pool '${name}' is not vfpool's: the stopped libvirt network '${name}' (${carrier}) carries it in its metadata`,
        virshVerb ? `use \`virsh ${virshVerb} ${name}\`` : `start it with \`virsh net-start ${name}\`; libvirt defines and undefines it (virsh net-edit, net-undefine)`);
    }
    throw new BadInputError(`unknown pool '${name}'`, `define it with \`vfpool net-define FILE\` (no ${this.fileOf(name)})`);
  }

  /** libvirt's definition file of network `name` when it carries a vfpool pool, else null (also when unreadable: not root). */
  private libvirtCarrier(name: string): string | null {
    if (this.libvirtNetworks === null) return null;
    const file = join(this.libvirtNetworks, `${parseObjectName(name, 'pool name')}.xml`);
    try {
      const net = networkElement(parseXml(readFileSync(file, 'utf8'), file), file);
      return poolFromNetwork(net, file, { lenient: true }) ? file : null;
    } catch {
      return null;
    }
  }

  /**
   * What a start of pool `name` starts, and the XML recorded for it: the one decision between a
   * libvirt network's metadata, vfpool's definition file and the XML a running pool was started
   * with. With `network` (libvirt's network hook: the network XML as libvirt runs it), its
   * `<metadata>` pool wins, else the definition file as it is now; without (`vfpool net-start`),
   * the definition file, else the running pool's XML. undefined: no such pool (for the hook: a
   * network that is not vfpool's).
   */
  startSource(name: string, network?: { el: XmlElement; xml: string; where: string }): { spec: PoolSpec; xml: string } | undefined {
    if (network) {
      const fromMeta = poolFromNetwork(network.el, network.where);
      if (fromMeta) return { spec: fromMeta, xml: network.xml };
    }
    // The definition file's text, and the spec parsed from that same text: what is planned is what is recorded.
    const def = this.definition(name);
    if (def || network) return def;
    const active = this.store.read().pools[name];
    return active ? { spec: specFromXml(active.xml, `pool '${name}' (as started)`), xml: active.xml } : undefined;
  }

  /** Validates and stores a definition; returns it. Nothing is written if it does not parse. */
  async define(xml: string, where: string): Promise<PoolSpec> {
    const spec = parsePoolXml(xml, where);
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw fsError(err, this.dir, 'the pool definitions directory', 'VFPOOL_CONFIG_DIR');
    }
    const file = this.fileOf(spec.name);
    // A read-only or full /etc is one line naming the file, not Node's error (write-file-atomic
    // removes its temp file, so nothing is left).
    await writeFileAtomic(file, xml.endsWith('\n') ? xml : xml + '\n', { mode: 0o644 }).catch((err: unknown) => Promise.reject(fsError(err, file, 'the pool definition', 'VFPOOL_CONFIG_DIR')));
    return spec;
  }

  /**
   * The definition file `undefine` would remove, after the checks that refuse it (a dry run
   * makes them too, so it predicts the refusal): a pool with no definition file (unknown, or
   * transient: a libvirt network carries it) and an active pool are refused.
   */
  undefinable(name: string): string {
    const file = this.fileOf(name);
    const active = this.store.read().pools[name];
    if (this.readDefinition(name) === undefined) {
      if (active) throw new BadInputError(`pool '${name}' is transient (no definition file: libvirt network '${name}' carries it)`, `stop it with \`vfpool net-destroy ${name}\` or \`virsh net-destroy ${name}\`; there is nothing to undefine`);
      this.unknown(name, 'net-undefine');
    }
    if (active) throw new ConflictError(`pool '${name}' is active`, `stop it first with \`vfpool net-destroy ${name}\``);
    return file;
  }

  undefine(name: string): void {
    const file = this.undefinable(name);
    try {
      rmSync(file);
    } catch (err) {
      throw fsError(err, file, 'the pool definition', 'VFPOOL_CONFIG_DIR');
    }
  }

  /** Names of every pool, defined or running. */
  names(state: VfpoolState = this.store.read()): string[] {
    let files: string[] = [];
    try {
      files = readdirSync(this.dir).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw fsError(err, this.dir, 'the pool definitions directory', 'VFPOOL_CONFIG_DIR');
    }
    return [...new Set([...files, ...Object.keys(state.pools)])].sort();
  }
}

/** The pool an active pool was started with (state.json): a definition or a libvirt network carrying metadata, read leniently. */
export function specFromXml(xml: string, where: string): PoolSpec {
  const net = networkElement(parseXml(xml, where), where);
  return poolFromNetwork(net, where, { lenient: true }) ?? poolFromDefinition(net, where, { lenient: true });
}
