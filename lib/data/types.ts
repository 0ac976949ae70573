// What the trainer consumes: examples (a preprocessed image and a caption) from an indexed dataset,
// grouped by a loader into host-side batches of pixels and token ids.
import type { ExampleJob } from './jobs.js';

/** One training pair: pixels float32 [3, R, R] (already normalised) and its caption. */
export interface Example {
  image: Float32Array;
  caption: string;
}

/**
 * A dataset addressed by index. get() returns null (or throws) for an example that cannot be used
 * (a missing or corrupt image, an empty caption); the loader skips and counts it.
 */
export interface Dataset {
  readonly name: string;
  readonly length: number;
  /** Side of the square images get() returns. */
  readonly imageSize: number;
  get(index: number): Example | null | Promise<Example | null>;
  /**
   * The work of get(index) as a job a worker thread can run (see jobs.ts): the loader's worker
   * threads decode only datasets that have it; others are read on the main thread.
   */
  job?(index: number): ExampleJob;
}

/** Host-side batch: pixels [size, 3, R, R] and tokens [size, contextLength]. */
export interface Batch {
  size: number;
  imageSize: number;
  contextLength: number;
  pixels: Float32Array;
  tokens: Int32Array;
  captions: string[];
}

/** Where a run stands in its data: the epoch and how many entries of its order were consumed. */
export interface DataPosition {
  epoch: number;
  cursor: number;
}

/** Anything the trainer can draw batches from, resumable at a DataPosition. */
export interface BatchSource {
  readonly batchSize: number;
  /** Batches per epoch when known. */
  batchesPerEpoch(): number | undefined;
  /** Yields batches from `from` on, with the position after each; runs over epoch ends. */
  batches(from: DataPosition): AsyncIterable<{ batch: Batch; next: DataPosition }>;
  /** Counters for the log (bad examples skipped, time waiting). */
  stats(): DataStats;
}

export interface DataStats {
  examples: number;
  skipped: number;
  skippedReasons: Record<string, number>;
  /** Milliseconds the consumer waited for a batch that was not ready yet. */
  waitMs: number;
}
