// A parsed XML element that remembers which of its children the converter
// looked at, so that everything it did not look at can be reported as
// unsupported (one line per element) instead of being silently dropped.

import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { UserError } from '../user-error.js';

export class XmlElement {
  readonly children: XmlElement[] = [];
  /** Set once the converter has read the element. */
  used = false;

  constructor(
    readonly name: string,
    readonly path: string,
    private readonly attrs: Readonly<Record<string, string>>,
    readonly text: string,
  ) {}

  attr(name: string): string | undefined {
    return this.attrs[name];
  }

  hasAttr(name: string): boolean {
    return Object.hasOwn(this.attrs, name);
  }

  /** The first child of that name (marked used), if any. */
  child(name: string): XmlElement | undefined {
    return this.all(name)[0];
  }

  /** Every child of that name, in document order, marked used. */
  all(name: string): XmlElement[] {
    const out = this.children.filter((c) => c.name === name);
    for (const c of out) c.used = true;
    return out;
  }

  /** Marks children, and all under them, as read (elements with no effect on the command line). */
  ignore(...names: string[]): void {
    for (const n of names) for (const c of this.all(n)) c.consumeAll();
  }

  /** Marks this element and everything under it as read. */
  consumeAll(): void {
    this.used = true;
    for (const c of this.children) c.consumeAll();
  }

  /** Paths of the elements nobody read (the outermost of each subtree). */
  unread(): string[] {
    const out: string[] = [];
    for (const c of this.children) {
      if (!c.used) out.push(c.path);
      else out.push(...c.unread());
    }
    return out;
  }
}

type Ordered = Record<string, unknown> & { ':@'?: Record<string, string> };

function build(node: Ordered, parentPath: string): XmlElement | undefined {
  const name = Object.keys(node).find((k) => k !== ':@');
  if (name === undefined || name === '#text' || name.startsWith('?')) return undefined;
  const path = `${parentPath}/${name}`;
  const body = (node[name] as Ordered[]) ?? [];
  const text = body.filter((b) => '#text' in b).map((b) => String(b['#text'])).join('');
  const el = new XmlElement(name, path, node[':@'] ?? {}, text.trim());
  for (const b of body) {
    const c = build(b, path);
    if (c) el.children.push(c);
  }
  return el;
}

/** Parses a document; its root element (already marked used). */
export function parseXml(source: string, what: string): XmlElement {
  const valid = XMLValidator.validate(source);
  if (valid !== true) throw new UserError(`${what}: not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const parser = new XMLParser({
    preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '',
    parseTagValue: false, parseAttributeValue: false, trimValues: true, processEntities: true,
    ignoreDeclaration: true, ignorePiTags: true, commentPropName: false,
  });
  const doc = parser.parse(source) as Ordered[];
  const roots = doc.map((n) => build(n, '')).filter((e): e is XmlElement => e !== undefined);
  if (roots.length !== 1) throw new UserError(`${what}: expected one root element`);
  roots[0].used = true;
  return roots[0];
}
