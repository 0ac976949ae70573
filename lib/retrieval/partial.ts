// Resumable embedding: rows are appended to OUT.partial.jsonl as they are computed (vectors as
// base64 float32), so an interrupted run picks up where it stopped. A torn last line is dropped.
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { EntryKind } from './store.js';

export interface PartialHeader {
  model: string;
  dim: number;
}

export interface PartialRow {
  id: string;
  kind: EntryKind;
  text?: string;
  vector: Float32Array;
}

export function partialPathFor(out: string): string {
  return `${out}.partial.jsonl`;
}

function encode(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
}

function decode(s: string, dim: number): Float32Array {
  const b = Buffer.from(s, 'base64');
  if (b.length !== dim * 4) throw new Error(`vector of ${b.length} bytes, expected ${dim * 4}`);
  const out = new Float32Array(dim);
  new Uint8Array(out.buffer).set(b);
  return out;
}

export class PartialFile {
  readonly rows = new Map<string, PartialRow>();

  private constructor(readonly file: string, readonly header: PartialHeader) {}

  static key(kind: EntryKind, id: string): string {
    return `${kind}\u0000${id}`;
  }

  /** Opens (resuming) or starts the partial file; a header that does not match is an error. */
  static open(file: string, header: PartialHeader): PartialFile {
    const p = new PartialFile(file, header);
    if (!existsSync(file)) {
      writeFileSync(file, JSON.stringify(header) + '\n');
      return p;
    }
    const lines = readFileSync(file, 'utf8').split('\n');
    let head: PartialHeader;
    try {
      head = JSON.parse(lines[0]);
    } catch {
      throw new Error(`${file}: not a partial embedding file (delete it to start over)`);
    }
    if (head.model !== header.model || head.dim !== header.dim) {
      throw new Error(`${file}: an unfinished run with another model (${head.model}, ${head.dim} dims); delete it or pass --restart`);
    }
    let good = lines[0].length + 1;
    for (let i = 1; i < lines.length; i++) {
      if (!lines[i]) continue;
      try {
        const r = JSON.parse(lines[i]) as { id: string; kind: EntryKind; text?: string; v: string };
        p.rows.set(PartialFile.key(r.kind, r.id), { id: r.id, kind: r.kind, text: r.text, vector: decode(r.v, header.dim) });
        good += lines[i].length + 1;
      } catch {
        break; // a torn last line: rewrite the file without it
      }
    }
    const text = readFileSync(file, 'utf8');
    if (good < text.length) writeFileSync(file, text.slice(0, good));
    else if (!text.endsWith('\n')) appendFileSync(file, '\n');
    return p;
  }

  has(kind: EntryKind, id: string): boolean {
    return this.rows.has(PartialFile.key(kind, id));
  }

  append(rows: PartialRow[]): void {
    const lines = rows.map((r) => JSON.stringify({ id: r.id, kind: r.kind, ...(r.text !== undefined ? { text: r.text } : {}), v: encode(r.vector) }) + '\n');
    appendFileSync(this.file, lines.join(''));
    for (const r of rows) this.rows.set(PartialFile.key(r.kind, r.id), r);
  }

  remove(): void {
    rmSync(this.file, { force: true });
  }
}
