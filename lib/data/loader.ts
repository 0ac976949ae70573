// Batches from an indexed dataset: a seeded shuffle per epoch (so a position -- epoch and cursor --
// is all a resumed run needs), bad examples skipped and counted, a run of mostly bad data stopped,
// and the next batches assembled ahead of the consumer.
import { Random } from '../nn/random.js';
import type { Batch, BatchSource, DataPosition, DataStats, Dataset, Example } from './types.js';
import { DataCounters } from './counters.js';

export interface LoaderOptions {
  batchSize: number;
  /** Captions -> token rows of contextLength (the model's tokenizer). */
  tokenize: (captions: string[]) => Int32Array;
  contextLength: number;
  seed?: number;
  shuffle?: boolean;
  /** Batches assembled ahead of the consumer (default 2). */
  prefetch?: number;
  /** Stop when more than this fraction of the examples tried so far were bad (default 0.5). */
  maxBadFraction?: number;
}

/** The order of the dataset's indices in an epoch: a function of the seed and the epoch only. */
export function epochOrder(length: number, seed: number, epoch: number, shuffle: boolean): number[] {
  if (!shuffle) return [...Array(length).keys()];
  return new Random((seed * 1000003 + epoch * 7919 + 1) >>> 0).permutation(length);
}

export class DataLoader implements BatchSource {
  readonly batchSize: number;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly prefetch: number;
  private readonly count: DataCounters;

  constructor(readonly dataset: Dataset, private readonly opts: LoaderOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`DataLoader: batch size must be an integer >= 1, got ${opts.batchSize}`);
    if (dataset.length < opts.batchSize) {
      throw new Error(`DataLoader: dataset ${dataset.name} has ${dataset.length} examples, fewer than one batch of ${opts.batchSize}`);
    }
    this.batchSize = opts.batchSize;
    this.seed = opts.seed ?? 0;
    this.shuffle = opts.shuffle ?? true;
    this.prefetch = Math.max(1, opts.prefetch ?? 2);
    this.count = new DataCounters(dataset.name, opts.maxBadFraction ?? 0.5);
  }

  batchesPerEpoch(): number {
    return Math.floor(this.dataset.length / this.batchSize);
  }

  stats(): DataStats {
    return this.count.snapshot();
  }

  private bad(reason: string): void {
    this.count.bad(reason);
  }

  private async load(index: number): Promise<Example | null> {
    let ex: Example | null;
    try {
      ex = await this.dataset.get(index);
    } catch (e) {
      this.bad((e as Error).message);
      return null;
    }
    const R = this.dataset.imageSize;
    if (!ex) {
      this.bad('unreadable example');
      return null;
    }
    if (!ex.caption || !ex.caption.trim()) {
      this.bad('empty caption');
      return null;
    }
    if (!(ex.image instanceof Float32Array) || ex.image.length !== 3 * R * R) {
      this.bad(`image is not 3x${R}x${R}`);
      return null;
    }
    this.count.good();
    return ex;
  }

  /** Fills one batch from the order starting at cursor; null when the epoch cannot fill another. */
  private async assemble(order: number[], cursor: number): Promise<{ batch: Batch; cursor: number } | null> {
    const B = this.batchSize, R = this.dataset.imageSize, L = this.opts.contextLength;
    const pixels = new Float32Array(B * 3 * R * R);
    const captions: string[] = [];
    while (captions.length < B) {
      if (cursor >= order.length) return null;
      const ex = await this.load(order[cursor++]);
      if (!ex) continue;
      pixels.set(ex.image, captions.length * 3 * R * R);
      captions.push(ex.caption);
    }
    const tokens = this.opts.tokenize(captions);
    if (tokens.length !== B * L) throw new Error(`DataLoader: the tokenizer gave ${tokens.length} ids for ${B} captions of ${L}`);
    return { batch: { size: B, imageSize: R, contextLength: L, pixels, tokens, captions }, cursor };
  }

  async *batches(from: DataPosition): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
    let { epoch, cursor } = from;
    let order = epochOrder(this.dataset.length, this.seed, epoch, this.shuffle);
    // Producer: a chain of promises assembled ahead, each starting once the previous one is done.
    const next = async (): Promise<{ batch: Batch; next: DataPosition }> => {
      for (let tries = 0; tries < 2; tries++) {
        const r = await this.assemble(order, cursor);
        if (r) {
          cursor = r.cursor;
          return { batch: r.batch, next: { epoch, cursor } };
        }
        epoch++;
        cursor = 0;
        order = epochOrder(this.dataset.length, this.seed, epoch, this.shuffle);
      }
      throw new Error(`data ${this.dataset.name}: a whole epoch gave no full batch of ${this.batchSize} usable examples`);
    };
    const queue: Promise<{ batch: Batch; next: DataPosition }>[] = [];
    let tail: Promise<unknown> = Promise.resolve();
    const enqueue = () => {
      const p = tail.then(next);
      p.catch(() => {});
      tail = p;
      queue.push(p);
    };
    for (let i = 0; i < this.prefetch; i++) enqueue();
    for (;;) {
      const t0 = performance.now();
      const item = await queue.shift()!;
      this.count.s.waitMs += performance.now() - t0;
      enqueue();
      yield item;
    }
  }
}
