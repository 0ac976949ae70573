// An embedding index on disk: the vectors as one safetensors tensor "embeddings" [N, D] (float32,
// unit rows) and, beside it, a JSONL file with one {id, kind, text?} line per row.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/fsutil.js';
import { toFloat32 } from '../io/raw.js';
import { topK } from './metrics.js';

export type EntryKind = 'image' | 'text';

export interface IndexEntry {
  id: string;
  kind: EntryKind;
  /** The caption, for text entries. */
  text?: string;
}

export interface SearchHit extends IndexEntry {
  score: number;
  index: number;
}

export const INDEX_META_KEY = 'tsclip.index';

/** The JSONL file that holds an index's ids: emb.safetensors -> emb.jsonl. */
export function idsPathFor(file: string): string {
  return file.replace(/\.safetensors$/i, '') + '.jsonl';
}

export class EmbeddingIndex {
  constructor(
    readonly entries: IndexEntry[],
    /** Unit rows [N, D]. */
    readonly vectors: Float32Array,
    readonly dim: number,
    /** Free-form facts about how the index was made (model path, image size). */
    readonly info: Record<string, unknown> = {},
  ) {
    if (vectors.length !== entries.length * dim) throw new Error(`EmbeddingIndex: ${entries.length} entries need ${entries.length * dim} values, got ${vectors.length}`);
  }

  get size(): number {
    return this.entries.length;
  }

  vector(i: number): Float32Array {
    return this.vectors.subarray(i * this.dim, (i + 1) * this.dim);
  }

  /** Row of an id (of a kind, when given), or -1. */
  find(id: string, kind?: EntryKind): number {
    return this.entries.findIndex((e) => e.id === id && (!kind || e.kind === kind));
  }

  /** The k entries most similar to a unit query vector, of one kind when given. */
  search(query: Float32Array, k: number, opts: { kind?: EntryKind; exclude?: number } = {}): SearchHit[] {
    if (query.length !== this.dim) throw new Error(`search: the query has ${query.length} dimensions, the index ${this.dim}`);
    return topK(query, this.vectors, this.dim, k, (i) => (!opts.kind || this.entries[i].kind === opts.kind) && i !== opts.exclude)
      .map(({ index, score }) => ({ ...this.entries[index], score, index }));
  }

  async write(file: string): Promise<void> {
    const N = this.size;
    const data = new Uint8Array(this.vectors.buffer, this.vectors.byteOffset, this.vectors.byteLength);
    await writeSafetensors(file, { embeddings: { dtype: 'F32', shape: [N, this.dim], data } }, { [INDEX_META_KEY]: JSON.stringify(this.info) });
    await writeFileAtomic(idsPathFor(file), [Buffer.from(this.entries.map((e) => JSON.stringify(e)).join('\n') + (N ? '\n' : ''), 'utf8')]);
  }

  static async read(file: string): Promise<EmbeddingIndex> {
    if (!existsSync(file)) throw new Error(`index ${file}: no such file`);
    const st = await readSafetensors(file);
    const raw = st.tensors.get('embeddings');
    if (!raw || raw.shape.length !== 2) throw new Error(`index ${file}: no 2-d "embeddings" tensor (is it an index written by tsclip embed?)`);
    const [N, D] = raw.shape;
    const idsFile = idsPathFor(file);
    if (!existsSync(idsFile)) throw new Error(`index ${file}: the ids file ${idsFile} is missing`);
    const lines = (await readFile(idsFile, 'utf8')).split('\n').filter((l) => l.trim() !== '');
    if (lines.length !== N) throw new Error(`index ${file}: ${N} vectors but ${lines.length} ids in ${idsFile}`);
    const entries = lines.map((l, i) => {
      try {
        const e = JSON.parse(l) as IndexEntry;
        if (typeof e.id !== 'string' || (e.kind !== 'image' && e.kind !== 'text')) throw new Error('needs "id" and "kind" (image or text)');
        return e;
      } catch (err) {
        throw new Error(`${idsFile}:${i + 1}: ${(err as Error).message}`);
      }
    });
    let info: Record<string, unknown> = {};
    try {
      info = JSON.parse(st.metadata[INDEX_META_KEY] ?? '{}');
    } catch {
      // an index from elsewhere: no facts about its making
    }
    return new EmbeddingIndex(entries, toFloat32(raw), D, info);
  }
}
