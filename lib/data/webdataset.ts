// WebDataset shards: .tar files whose entries sharing a key (the path up to the first dot of the
// file name) form one sample, e.g. 000123.jpg + 000123.txt. Streamed shard by shard through a
// shuffle buffer; shards are split across data workers (worker w of W reads shards w, w+W, ...).
// A position is (epoch, samples drawn), and the stream is a function of the seed, so resuming
// replays the draws without decoding them.
import * as path from 'node:path';
import { Random } from '../nn/random.js';
import { readTar } from './tar.js';
import { loadImage, type ImageTransform } from './image.js';
import { DataCounters } from './counters.js';
import type { Batch, BatchSource, DataPosition, DataStats } from './types.js';

const IMAGE_KEYS = ['jpg', 'jpeg', 'png', 'webp'];

/** Expands brace ranges as webdataset does ("data-{000..003}.tar" -> four names) and comma lists. */
export function expandShards(spec: string): string[] {
  if (spec.includes(',')) return spec.split(',').filter(Boolean).flatMap(expandShards);
  const m = /\{(\d+)\.\.(\d+)\}/.exec(spec);
  if (!m) return [spec];
  const out: string[] = [];
  for (let i = Number(m[1]); i <= Number(m[2]); i++) out.push(...expandShards(spec.replace(m[0], String(i).padStart(m[1].length, '0'))));
  return out;
}

export interface RawSample {
  key: string;
  files: Map<string, Uint8Array>;
}

/** Samples of one shard, grouped by key. */
export async function* shardSamples(file: string): AsyncGenerator<RawSample> {
  let cur: RawSample | null = null;
  for await (const e of readTar(file)) {
    const base = path.posix.basename(e.name);
    const dot = base.indexOf('.');
    if (dot <= 0) continue;
    const key = `${path.posix.dirname(e.name)}/${base.slice(0, dot)}`;
    const ext = base.slice(dot + 1).toLowerCase();
    if (!cur || cur.key !== key) {
      if (cur) yield cur;
      cur = { key, files: new Map() };
    }
    cur.files.set(ext, e.data);
  }
  if (cur) yield cur;
}

export interface WebDatasetOptions {
  transform: ImageTransform;
  tokenize: (captions: string[]) => Int32Array;
  contextLength: number;
  batchSize: number;
  seed?: number;
  shuffleBuffer?: number;
  worker?: number;
  workers?: number;
  maxBadFraction?: number;
}

export class WebDatasetSource implements BatchSource {
  readonly batchSize: number;
  readonly shards: string[];
  private readonly count: DataCounters;

  constructor(spec: string | string[], private readonly opts: WebDatasetOptions) {
    const all = Array.isArray(spec) ? spec : expandShards(spec);
    const W = opts.workers ?? 1, w = opts.worker ?? 0;
    if (!(Number.isInteger(W) && W >= 1 && Number.isInteger(w) && w >= 0 && w < W)) throw new Error(`webdataset: worker ${w} of ${W} is not valid`);
    this.shards = all.filter((_, i) => i % W === w);
    if (!this.shards.length) throw new Error(`webdataset: worker ${w} of ${W} gets none of the ${all.length} shards`);
    this.batchSize = opts.batchSize;
    this.count = new DataCounters(all.length === 1 ? all[0] : `${all.length} shards`, opts.maxBadFraction ?? 0.5);
  }

  batchesPerEpoch(): undefined {
    return undefined;
  }

  stats(): DataStats {
    return this.count.snapshot();
  }

  /** The epoch's samples after the shuffle buffer (not decoded). */
  async *stream(epoch: number): AsyncGenerator<RawSample> {
    const r = new Random(((this.opts.seed ?? 0) * 1000003 + epoch * 7919 + 17) >>> 0);
    const order = r.permutation(this.shards.length).map((i) => this.shards[i]);
    const size = Math.max(1, this.opts.shuffleBuffer ?? 1000);
    const buf: RawSample[] = [];
    for (const shard of order) {
      for await (const s of shardSamples(shard)) {
        if (buf.length < size) {
          buf.push(s);
          continue;
        }
        const k = Math.floor(r.next() * size);
        const out = buf[k];
        buf[k] = s;
        yield out;
      }
    }
    while (buf.length) yield buf.splice(Math.floor(r.next() * buf.length), 1)[0];
  }

  private async decode(s: RawSample): Promise<{ image: Float32Array; caption: string } | null> {
    const ext = IMAGE_KEYS.find((k) => s.files.has(k));
    if (!ext) return this.count.bad('sample without an image'), null;
    const txt = s.files.get('txt');
    const caption = txt ? Buffer.from(txt).toString('utf8').trim() : '';
    if (!caption) return this.count.bad('empty caption'), null;
    try {
      const image = await loadImage(s.files.get(ext)!, this.opts.transform);
      this.count.good();
      return { image, caption };
    } catch (e) {
      this.count.bad((e as Error).message);
      return null;
    }
  }

  async *batches(from: DataPosition): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
    let { epoch, cursor } = from;
    const B = this.batchSize, R = this.opts.transform.size, L = this.opts.contextLength;
    for (;;) {
      let drawn = 0, yielded = false;
      const pixels: Float32Array[] = [], captions: string[] = [];
      for await (const s of this.stream(epoch)) {
        if (drawn++ < cursor) continue;
        const t0 = performance.now();
        const ex = await this.decode(s);
        this.count.s.waitMs += performance.now() - t0;
        if (!ex) continue;
        pixels.push(ex.image);
        captions.push(ex.caption);
        if (captions.length === B) {
          const px = new Float32Array(B * 3 * R * R);
          pixels.forEach((p, k) => px.set(p, k * 3 * R * R));
          const caps = captions.splice(0);
          const batch: Batch = { size: B, imageSize: R, contextLength: L, pixels: px, tokens: this.opts.tokenize(caps), captions: caps };
          pixels.length = 0;
          yielded = true;
          yield { batch, next: { epoch, cursor: drawn } };
        }
      }
      if (!yielded && cursor === 0) throw new Error(`webdataset: an epoch gave no full batch of ${B} usable samples`);
      epoch++;
      cursor = 0;
    }
  }
}
