// Working ahead of the consumer, in order. Lookahead starts the work for the next `depth` items of
// a sequence (examples for the worker threads) and hands them back in sequence order; Prefetch
// keeps `depth` batches being assembled one after another while the consumer computes.
import type { DataCounters, CountDelta } from './counters.js';
import type { Batch, DataPosition } from './types.js';

export class Lookahead<I, R> {
  private readonly queue: { item: I; result: Promise<R> }[] = [];
  private stopped = false;

  constructor(
    private readonly items: Iterator<I> | AsyncIterator<I>,
    private readonly start: (item: I) => Promise<R>,
    private readonly depth: number,
  ) {}

  /** The next item and its (started) work; the queue is topped up to `depth` first. */
  async next(): Promise<{ item: I; result: Promise<R> }> {
    while (!this.stopped && this.queue.length < this.depth) {
      const r = await this.items.next();
      if (r.done) break;
      const result = this.start(r.value);
      result.catch(() => {}); // awaited in order later, or dropped at the end
      this.queue.push({ item: r.value, result });
    }
    if (this.stopped) throw new Error('data: read after the end of the run');
    const head = this.queue.shift();
    if (!head) throw new Error('data: the sequence of examples ended');
    return head;
  }

  /** No more work is started; later next() calls fail. */
  stop(): void {
    this.stopped = true;
  }

  /** Waits for the work already started and closes the sequence (its files). */
  async close(): Promise<void> {
    this.stop();
    await Promise.allSettled(this.queue.splice(0).map((q) => q.result));
    await this.items.return?.();
  }
}

export class Prefetch<T> {
  private readonly queue: Promise<T>[] = [];
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly make: () => Promise<T>, private readonly depth: number) {
    for (let i = 0; i < depth; i++) this.enqueue();
  }

  private enqueue(): void {
    const p = this.tail.then(this.make);
    p.catch(() => {});
    this.tail = p;
    this.queue.push(p);
  }

  /** The oldest batch; another is queued once it has been handed over. */
  async take(): Promise<T> {
    const v = await this.queue.shift()!;
    this.enqueue();
    return v;
  }

  /** Resolves once every batch started has settled. */
  settled(): Promise<void> {
    return this.tail.then(() => {}, () => {});
  }
}

/** A batch made ahead, or the error that stopped it, with the counts it adds when handed over. */
export type Made = { batch: Batch; next: DataPosition; delta: CountDelta } | { error: unknown; delta: CountDelta };

/**
 * Serves batches from `make`, `depth` ahead, as a loader's iterator: the time the step waits for
 * each is counted, its counts applied when it is handed over, and `close` runs when the consumer
 * stops (or an error ends the stream) after every batch started has settled.
 */
export async function* serveBatches(make: () => Promise<Made>, depth: number, count: DataCounters, close: {
  /** Stops new work (and the worker threads) before the started batches settle. */
  stop(): Promise<void>;
  close(): Promise<void>;
}): AsyncGenerator<{ batch: Batch; next: DataPosition }> {
  const batches = new Prefetch(make, depth);
  try {
    for (;;) {
      const t0 = performance.now();
      const made = await batches.take();
      count.s.waitMs += performance.now() - t0;
      count.apply(made.delta);
      if ('error' in made) throw made.error;
      yield { batch: made.batch, next: made.next };
    }
  } finally {
    await close.stop();
    await batches.settled();
    await close.close();
  }
}
