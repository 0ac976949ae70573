// WebDataset shards: .tar files whose entries sharing a key (the path up to the first dot of the
// file name) form one sample, e.g. 000123.jpg + 000123.txt. Streamed shard by shard through a
// shuffle buffer; shards are split across data workers (worker w of W reads shards w, w+W, ...).
// A position is (epoch, samples drawn), and the stream is a function of the seed, so resuming
// replays the draws without decoding them. Images are decoded on worker threads when asked
// (workerThreads), the encoded bytes moved to them, and taken back in the order drawn.
import * as path from 'node:path';
import { Random } from '../nn/random.js';
import { readTar } from './tar.js';
import type { ImageTransform } from './image.js';
import { DataCounters, type CountDelta } from './counters.js';
import { runJob, type ExampleJob } from './jobs.js';
import { Lookahead, serveBatches, type Made } from './ahead.js';
import { DataWorkerError, DecodePool } from './pool.js';
import { checkWorkerThreads } from './loader.js';
import type { Batch, BatchSource, DataPosition, DataStats, Example } from './types.js';

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
  /** The shard it came from. */
  shard?: string;
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
      cur = { key, files: new Map(), shard: file };
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
  /** Batches assembled ahead of the consumer (default 2). */
  prefetch?: number;
  /** Threads decoding images (default 0: the main thread). Not `workers`, which splits shards. */
  workerThreads?: number;
}

interface Draw {
  epoch: number;
  /** Samples drawn in the epoch, this one included. */
  drawn: number;
  sample: RawSample;
}


export class WebDatasetSource implements BatchSource {
  readonly batchSize: number;
  readonly shards: string[];
  readonly workerThreads: number;
  private readonly count: DataCounters;
  private readonly name: string;

  constructor(spec: string | string[], private readonly opts: WebDatasetOptions) {
    const all = Array.isArray(spec) ? spec : expandShards(spec);
    const W = opts.workers ?? 1, w = opts.worker ?? 0;
    if (!(Number.isInteger(W) && W >= 1 && Number.isInteger(w) && w >= 0 && w < W)) throw new Error(`webdataset: worker ${w} of ${W} is not valid`);
    this.shards = all.filter((_, i) => i % W === w);
    if (!this.shards.length) throw new Error(`webdataset: worker ${w} of ${W} gets none of the ${all.length} shards`);
    this.batchSize = opts.batchSize;
    this.workerThreads = checkWorkerThreads(opts.workerThreads, 'webdataset');
    this.name = all.length === 1 ? all[0] : `${all.length} shards`;
    this.count = new DataCounters(this.name, opts.maxBadFraction ?? 0.5);
  }

  batchesPerEpoch(): undefined {
    return undefined;
  }

  /** Counts of the batches handed out so far (not of those assembled ahead). */
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

  /** Draws from a position on, over epoch ends; an epoch read from its start that has no sample at all stops. */
  private async *draws(from: DataPosition): AsyncGenerator<Draw> {
    for (let epoch = from.epoch, cursor = from.cursor; ; epoch++, cursor = 0) {
      let drawn = 0;
      for await (const sample of this.stream(epoch)) {
        if (drawn++ < cursor) continue;
        yield { epoch, drawn, sample };
      }
      if (drawn === 0) throw new Error(`webdataset: an epoch gave no full batch of ${this.batchSize} usable samples`);
    }
  }

  /** Starts decoding a sample's image; a sample without an image or caption fails with the reason. */
  private start(s: RawSample, pool: DecodePool | null): Promise<Example | null> {
    const ext = IMAGE_KEYS.find((k) => s.files.has(k));
    if (!ext) return Promise.reject(new Error('sample without an image'));
    const txt = s.files.get('txt');
    const caption = txt ? Buffer.from(txt).toString('utf8').trim() : '';
    if (!caption) return Promise.reject(new Error('empty caption'));
    const job: ExampleJob = { op: 'bytes', label: `${s.shard ?? this.name}: ${s.key}`, bytes: s.files.get(ext)!, caption, transform: this.opts.transform };
    return pool ? pool.run(job) : runJob(job);
  }

  async *batches(from: DataPosition): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
    const B = this.batchSize, R = this.opts.transform.size, L = this.opts.contextLength;
    const prefetch = Math.max(1, this.opts.prefetch ?? 2);
    const pool = this.workerThreads > 0 ? new DecodePool(this.workerThreads) : null;
    const ahead = new Lookahead(this.draws(from), (d) => this.start(d.sample, pool), pool ? prefetch * B : 1);
    const guard = new DataCounters(this.name, this.opts.maxBadFraction ?? 0.5);
    // The epoch being read, whether it was read from its start, and whether it gave a batch.
    let epoch = from.epoch, fromStart = from.cursor === 0, gave = false;
    const make = async (): Promise<Made> => {
      const delta: CountDelta = { good: 0, bad: [] };
      const bad = (reason: string) => {
        delta.bad.push(reason);
        guard.bad(reason);
      };
      try {
        const pixels = new Float32Array(B * 3 * R * R);
        const captions: string[] = [];
        for (;;) {
          const { item, result } = await ahead.next();
          if (item.epoch !== epoch) {
            if (fromStart && !gave) throw new Error(`webdataset: an epoch gave no full batch of ${B} usable samples`);
            // The tail of an epoch that does not fill a batch is dropped.
            captions.length = 0;
            epoch = item.epoch;
            fromStart = true;
            gave = false;
          }
          let ex: Example | null;
          try {
            ex = await result;
          } catch (e) {
            if (e instanceof DataWorkerError) throw e;
            bad((e as Error).message);
            continue;
          }
          if (!ex || ex.image.length !== 3 * R * R) {
            bad(`image is not 3x${R}x${R}`);
            continue;
          }
          delta.good++;
          guard.good();
          pixels.set(ex.image, captions.length * 3 * R * R);
          captions.push(ex.caption);
          if (captions.length === B) {
            gave = true;
            return { batch: { size: B, imageSize: R, contextLength: L, pixels, tokens: this.opts.tokenize(captions), captions }, next: { epoch, cursor: item.drawn }, delta };
          }
        }
      } catch (error) {
        return { error, delta };
      }
    };
    yield* serveBatches(make, prefetch, this.count, {
      stop: async () => {
        ahead.stop();
        await pool?.close();
      },
      close: () => ahead.close(),
    });
  }
}
