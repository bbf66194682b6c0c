import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { BadInputError } from '../errors.js';
import { escapeControl } from './quote.js';

/** An element as fast-xml-parser gives it: attributes under `@_name`, children by tag name. */
export type XmlElement = { [key: string]: unknown };

export const VFPOOL_NS = 'https://vfpool.dev/xmlns/1';

// Repeatable elements are always arrays, whatever their count, so one guest interface and
// ten look the same to the code (STYLE: configure repeatable elements as arrays).
const REPEATABLE = new Set(['pf', 'interface', 'address', 'hostdev', 'sriov-nic', 'vf', 'seclabel', 'label']);

// fast-xml-parser's own limit, named so the message can say it.
const MAX_DEPTH = 100;
// libvirt runs the hooks synchronously: a 10 MB document would hold a guest start for tens of
// seconds of parsing. Real domain XML is a few kB; 20 000 lines of <description> is 2 MB.
// Bytes, as the documented limit says (UTF-8: a character of a <description> in Chinese is 3).
export const MAX_XML_BYTES = 4 * 1048576;
// eslint-disable-next-line no-control-regex
const NOT_XML_CHAR = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/;

// fast-xml-parser (since 5.9) builds an entity decoder, with its entity tables and is-unsafe's
// checks, on every parse unless it is given one: ~4 ms of CPU of a hook call (npm run bench).
// With processEntities off it never asks the decoder to decode, and parseXml refuses a DOCTYPE
// before parsing, so there is nothing to decode: this one leaves every reference as written.
const ENTITIES_LEFT_AS_WRITTEN = {
  setExternalEntities: () => {},
  addInputEntities: () => {},
  reset: () => {},
  decode: (text: string) => text,
  setXmlVersion: () => {},
};

const parser = new XMLParser({
  entityDecoder: ENTITIES_LEFT_AS_WRITTEN,
  maxNestedTags: MAX_DEPTH,
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  // Entities off: hooks run as root on XML from libvirt, and no entity is ever expanded.
  processEntities: false,
  htmlEntities: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (tagName) => REPEATABLE.has(localName(tagName)),
});

export function localName(tag: string): string {
  const i = tag.indexOf(':');
  return i < 0 ? tag : tag.slice(i + 1);
}

/** Parses and checks well-formedness; `what` names the input in errors ("network XML in FILE"). */
export function parseXml(text: string, what: string): XmlElement {
  // A UTF-16 unit is 1 to 3 bytes of UTF-8 (a surrogate pair, two units, 4): only a text that
  // may be over the limit is counted, so the few kB of a hook call cost nothing more.
  const bytes = text.length * 3 > MAX_XML_BYTES ? Buffer.byteLength(text, 'utf8') : text.length;
  if (bytes > MAX_XML_BYTES) {
    throw new BadInputError(
      `${what}: ${(bytes / 1048576).toFixed(1)} MiB of XML, more than vfpool reads (${MAX_XML_BYTES / 1048576} MiB)`,
      'libvirt domain and network XML is a few kB; check the input',
    );
  }
  // XML 1.0 allows no C0 control but tab, LF and CR (nor U+FFFE/U+FFFF); fast-xml-parser
  // passes a NUL in text through, and a name holding one would end a C string in libvirt.
  const bad = NOT_XML_CHAR.exec(text);
  if (bad) {
    const line = text.slice(0, bad.index).split('\n').length;
    const code = `U+${bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
    throw new BadInputError(`${what}: character ${code} at line ${line} is not allowed in XML`, 'remove it; libvirt never writes one');
  }
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) {
    throw new BadInputError(`${what}: DOCTYPE and ENTITY declarations are not accepted`, 'remove them; libvirt XML never has them');
  }
  const valid = XMLValidator.validate(text);
  if (valid !== true) {
    throw new BadInputError(`${what}: not well-formed XML at line ${valid.err.line}: ${escapeControl(valid.err.msg)}`);
  }
  try {
    return parser.parse(text) as XmlElement;
  } catch (err) {
    // The validator accepts what the parser then refuses; fast-xml-parser stops at 100 levels.
    const msg = err instanceof Error ? err.message : String(err);
    if (/nested/i.test(msg)) {
      throw new BadInputError(`${what}: elements nested more than ${MAX_DEPTH} deep`, 'libvirt XML is never that deep; check the input');
    }
    throw new BadInputError(`${what}: cannot be read as XML: ${msg}`);
  }
}

/** The element itself as an object: `<x/>` parses to '' and text-only elements to strings. */
export function asElement(v: unknown): XmlElement {
  if (v && typeof v === 'object' && !Array.isArray(v)) return v as XmlElement;
  if (typeof v === 'string' && v !== '') return { '#text': v };
  return {};
}

export function children(el: XmlElement, tag: string): XmlElement[] {
  const v = el[tag];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(asElement);
}

export function child(el: XmlElement, tag: string): XmlElement | undefined {
  return el[tag] === undefined ? undefined : children(el, tag)[0];
}

export function attr(el: XmlElement | undefined, name: string): string | undefined {
  const v = el?.[`@_${name}`];
  return typeof v === 'string' ? v : undefined;
}

export function text(el: XmlElement | undefined, tag: string): string | undefined {
  const v = el?.[tag];
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && '#text' in v) return String((v as XmlElement)['#text']);
  return undefined;
}

/**
 * The namespace URI a prefix ('' for the default namespace) means on `el`, by XML's scoping
 * rule: the nearest declaration, on the element itself or else on its ancestors (`scope`,
 * nearest first). libvirt re-serialises `<metadata>` with the declaration on the element, but
 * an author may declare `xmlns:vfpool` once on `<domain>` or `<network>`, and XML says it applies.
 */
function resolvePrefix(prefix: string, el: XmlElement, scope: XmlElement[]): string | undefined {
  const name = prefix ? `xmlns:${prefix}` : 'xmlns';
  for (const e of [el, ...scope]) {
    const declared = attr(e, name);
    if (declared !== undefined) return declared;
  }
  return undefined;
}

/**
 * The child of `<metadata>` in vfpool's namespace, whatever prefix the author (or libvirt,
 * which re-serialises metadata) gave it and wherever it was declared: `scope` is `<metadata>`'s
 * ancestors, nearest first (`[domain]`). Returns the element and a function that maps local
 * names to the prefixed keys used inside it.
 */
export function findNsElement(
  parent: XmlElement | undefined,
  local: string,
  scope: XmlElement[] = [],
  ns = VFPOOL_NS,
): { el: XmlElement; tag: (l: string) => string } | undefined {
  if (!parent) return undefined;
  for (const key of Object.keys(parent)) {
    if (key.startsWith('@_') || localName(key) !== local) continue;
    const prefix = key.includes(':') ? key.slice(0, key.indexOf(':')) : '';
    for (const el of children(parent, key)) {
      if (resolvePrefix(prefix, el, [parent, ...scope]) === ns) return { el, tag: (l) => (prefix ? `${prefix}:${l}` : l) };
    }
  }
  return undefined;
}

/**
 * A child of `<metadata>` named `local` in a namespace that is vfpool's URI mistyped (it names
 * `vfpool.dev/xmlns` but is not vfpool's: `http://` for `https://`, another version). libvirt
 * keeps it verbatim and vfpool, which matches by URI, would not see it at all, so the guest would
 * start without what it asks for. The prefix does not count: `vfpool:` bound to another
 * project's URI is that project's. Its element name and URI.
 */
export function misnamedNsElement(parent: XmlElement | undefined, local: string, scope: XmlElement[] = []): { key: string; ns: string } | undefined {
  if (!parent) return undefined;
  for (const key of Object.keys(parent)) {
    if (key.startsWith('@_') || localName(key) !== local) continue;
    const prefix = key.includes(':') ? key.slice(0, key.indexOf(':')) : '';
    for (const el of children(parent, key)) {
      const ns = resolvePrefix(prefix, el, [parent, ...scope]) ?? '';
      if (ns !== VFPOOL_NS && ns.includes('vfpool.dev/xmlns')) return { key, ns };
    }
  }
  return undefined;
}
