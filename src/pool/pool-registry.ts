import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { BadInputError, ConflictError, errnoOf } from '../errors.js';
import { parseObjectName } from '../types.js';
import { parsePoolXml, networkElement, poolFromDefinition, poolFromNetwork, type PoolSpec } from '../config/pool-xml.js';
import { parseXml } from '../util/xml.js';
import type { StateStore, VfpoolState } from './state-store.js';

/**
 * Pool definitions: persistent ones in `$VFPOOL_CONFIG_DIR/networks/NAME.xml` (like libvirt's
 * /etc/libvirt/qemu/networks), and transient ones that exist only while a libvirt network that
 * carries a pool in its metadata is running (kept in the state store).
 */
export class PoolRegistry {
  readonly dir: string;
  constructor(configDir: string, private readonly store: StateStore) {
    this.dir = join(configDir, 'networks');
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
      throw err;
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
    if (xml === undefined) {
      throw new BadInputError(`unknown pool '${name}'`, `define it with \`vfpool net-define FILE\` (no ${this.fileOf(name)})`);
    }
    return parsePoolXml(xml, this.fileOf(name));
  }

  /** Validates and stores a definition; returns it. Nothing is written if it does not parse. */
  async define(xml: string, where: string): Promise<PoolSpec> {
    const spec = parsePoolXml(xml, where);
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(this.fileOf(spec.name), xml.endsWith('\n') ? xml : xml + '\n', { mode: 0o644 });
    return spec;
  }

  undefine(name: string): void {
    const file = this.fileOf(name);
    if (this.readDefinition(name) === undefined) throw new BadInputError(`unknown pool '${name}'`, `no ${file}`);
    if (this.store.read().pools[name]) {
      throw new ConflictError(`pool '${name}' is active`, `stop it first with \`vfpool net-destroy ${name}\``);
    }
    rmSync(file);
  }

  /** Names of every pool, defined or running. */
  names(state: VfpoolState = this.store.read()): string[] {
    let files: string[] = [];
    try {
      files = readdirSync(this.dir).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
    return [...new Set([...files, ...Object.keys(state.pools)])].sort();
  }
}

/** A pool from XML that is either a definition file or a libvirt network carrying metadata. */
export function specFromXml(xml: string, where: string): PoolSpec {
  const net = networkElement(parseXml(xml, where), where);
  return poolFromNetwork(net, where) ?? poolFromDefinition(net, where);
}
