// Batches from an indexed dataset: a seeded shuffle per epoch (so a position -- epoch and cursor --
// is all a resumed run needs), bad examples skipped and counted, a run of mostly bad data stopped,
// and the next batches assembled ahead of the consumer. With worker threads, the examples of the
// next batches are decoded and preprocessed there while the main thread computes; results are
// taken in the order of the epoch, so a seed gives the same batches with any number of threads.
import { Random } from '../nn/random.js';
import type { Batch, BatchSource, DataPosition, DataStats, Dataset, Example } from './types.js';
import { DataCounters, type CountDelta } from './counters.js';
import { Lookahead, serveBatches, type Made } from './ahead.js';
import { DataWorkerError, DecodePool } from './pool.js';

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
  /**
   * Worker threads decoding and preprocessing examples (default 0: all on the main thread). Only
   * datasets with a job() (all of lib/data's) use them.
   */
  workerThreads?: number;
}

/** The order of the dataset's indices in an epoch: a function of the seed and the epoch only. */
export function epochOrder(length: number, seed: number, epoch: number, shuffle: boolean): number[] {
  if (!shuffle) return [...Array(length).keys()];
  return new Random((seed * 1000003 + epoch * 7919 + 1) >>> 0).permutation(length);
}

/** Checks a worker-thread count: an integer >= 0. */
export function checkWorkerThreads(n: number | undefined, who: string): number {
  const v = n ?? 0;
  if (!Number.isInteger(v) || v < 0) throw new Error(`${who}: worker threads must be an integer >= 0, got ${n}`);
  return v;
}

interface Slot {
  epoch: number;
  pos: number;
  index: number;
}

/** Every (epoch, position, dataset index) from a position on, over epoch ends. */
function* slots(length: number, seed: number, shuffle: boolean, from: DataPosition): Generator<Slot> {
  for (let epoch = from.epoch, pos = from.cursor; ; epoch++, pos = 0) {
    const order = epochOrder(length, seed, epoch, shuffle);
    for (; pos < order.length; pos++) yield { epoch, pos, index: order[pos] };
  }
}

/** A batch assembled ahead, with what assembling it counted; or the error that stopped it. */

export class DataLoader implements BatchSource {
  readonly batchSize: number;
  readonly workerThreads: number;
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
    this.workerThreads = checkWorkerThreads(opts.workerThreads, 'DataLoader');
    this.count = new DataCounters(dataset.name, opts.maxBadFraction ?? 0.5);
  }

  batchesPerEpoch(): number {
    return Math.floor(this.dataset.length / this.batchSize);
  }

  /** Counts of the batches handed out so far (not of those assembled ahead). */
  stats(): DataStats {
    return this.count.snapshot();
  }

  private start(index: number, pool: DecodePool | null): Promise<Example | null> {
    return new Promise((resolve) => resolve(pool ? pool.run(this.dataset.job!(index)) : this.dataset.get(index)));
  }

  /** The example, or null after counting why it cannot be used; a dead worker thread throws. */
  private async accept(result: Promise<Example | null>, delta: CountDelta, guard: DataCounters): Promise<Example | null> {
    const bad = (reason: string) => {
      delta.bad.push(reason);
      guard.bad(reason);
      return null;
    };
    let ex: Example | null;
    try {
      ex = await result;
    } catch (e) {
      if (e instanceof DataWorkerError) throw e;
      return bad((e as Error).message);
    }
    const R = this.dataset.imageSize;
    if (!ex) return bad('unreadable example');
    if (!ex.caption || !ex.caption.trim()) return bad('empty caption');
    if (!(ex.image instanceof Float32Array) || ex.image.length !== 3 * R * R) return bad(`image is not 3x${R}x${R}`);
    delta.good++;
    guard.good();
    return ex;
  }

  async *batches(from: DataPosition): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
    const B = this.batchSize, R = this.dataset.imageSize, L = this.opts.contextLength;
    const pool = this.workerThreads > 0 && typeof this.dataset.job === 'function' ? new DecodePool(this.workerThreads) : null;
    // With threads, enough examples are in flight to keep them busy through a step; on the main
    // thread each example is read when the batch being assembled needs it.
    const ahead = new Lookahead(slots(this.dataset.length, this.seed, this.shuffle, from), (s) => this.start(s.index, pool), pool ? this.prefetch * B : 1);
    // Counts made while assembling, in order (the check for mostly bad data happens here); the
    // public counts are added when a batch is handed out.
    const guard = new DataCounters(this.dataset.name, this.opts.maxBadFraction ?? 0.5);
    let epoch = from.epoch;
    const make = async (): Promise<Made> => {
      const delta: CountDelta = { good: 0, bad: [] };
      try {
        const pixels = new Float32Array(B * 3 * R * R);
        const captions: string[] = [];
        let batchEpoch = epoch;
        for (;;) {
          const { item, result } = await ahead.next();
          if (item.epoch !== batchEpoch) {
            // The epoch ran out before the batch was full: its tail is dropped, and a batch that
            // a whole further epoch cannot fill means the data has too few usable examples.
            if (item.epoch - epoch >= 2) throw new Error(`data ${this.dataset.name}: a whole epoch gave no full batch of ${B} usable examples`);
            captions.length = 0;
            batchEpoch = item.epoch;
          }
          const ex = await this.accept(result, delta, guard);
          if (!ex) continue;
          pixels.set(ex.image, captions.length * 3 * R * R);
          captions.push(ex.caption);
          if (captions.length === B) {
            const tokens = this.opts.tokenize(captions);
            if (tokens.length !== B * L) throw new Error(`DataLoader: the tokenizer gave ${tokens.length} ids for ${B} captions of ${L}`);
            epoch = item.epoch;
            return { batch: { size: B, imageSize: R, contextLength: L, pixels, tokens, captions }, next: { epoch, cursor: item.pos + 1 }, delta };
          }
        }
      } catch (error) {
        return { error, delta };
      }
    };
    yield* serveBatches(make, this.prefetch, this.count, {
      stop: async () => {
        ahead.stop();
        await pool?.close();
      },
      close: () => ahead.close(),
    });
  }
}
