// A few worker threads that make examples (decode + preprocess) while the main thread computes.
// Jobs go to the least busy thread and each answer settles the promise of its own job, so a caller
// that awaits them in its own order gets results that do not depend on which thread was faster.
// Threads are unref'd while idle (an abandoned pool never keeps the process alive) and close()
// lets them finish what they are running and exit on their own.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
// sharp must be loaded by the main thread before any worker loads it: otherwise a worker's exit
// unloads libvips from under the others (sharp's note on worker threads).
import 'sharp';
import type { Example } from './types.js';
import { jobLabel, transferablesOf, type ExampleJob } from './jobs.js';
import { workerScript } from './worker-script.js';

/** A worker thread died (not a bad example: the run stops). */
export class DataWorkerError extends Error {}

/** Default worker threads: one core is left to the step, at most 4 (at least 1). */
export function defaultWorkerThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

interface Job {
  id: number;
  label: string;
  resolve: (ex: Example | null) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** Unanswered jobs in the order posted; a thread runs its oldest first. */
  jobs: Map<number, Job>;
  exitCode: number | null;
  exited: Promise<number>;
}

export interface PoolOptions {
  /** Jobs a thread runs at once (default 2: one decoding while another is being resized). */
  concurrency?: number;
  /** The worker's JavaScript (default: workerScript()). */
  script?: string;
}

export class DecodePool {
  readonly size: number;
  readonly script: string;
  private readonly slots: Slot[] = [];
  private readonly concurrency: number;
  private nextId = 0;
  private failure: DataWorkerError | null = null;
  private closing: Promise<number[]> | null = null;

  constructor(threads: number, opts: PoolOptions = {}) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`DecodePool: threads must be an integer >= 1, got ${threads}`);
    this.size = threads;
    this.concurrency = opts.concurrency ?? 2;
    this.script = opts.script ?? workerScript();
    for (let k = 0; k < threads; k++) this.slots.push(this.spawn(k));
  }

  private spawn(k: number): Slot {
    const worker = new Worker(this.script, { workerData: { concurrency: this.concurrency } });
    worker.unref();
    let onExit!: (code: number) => void;
    const slot: Slot = { worker, jobs: new Map(), exitCode: null, exited: new Promise((r) => (onExit = r)) };
    worker.on('message', (m: { id: number; image?: Float32Array; caption?: string; none?: boolean; error?: string; fatal?: string }) => {
      if (m.fatal !== undefined) return this.fail(k, m.fatal, m.id);
      const job = slot.jobs.get(m.id);
      if (!job) return;
      slot.jobs.delete(m.id);
      if (!slot.jobs.size && !this.closing) worker.unref(); // while closing it stays held until it exits
      if (m.error !== undefined) job.reject(new Error(m.error));
      else job.resolve(m.none ? null : { image: m.image!, caption: m.caption ?? '' });
    });
    // A thread's error is acted on at its exit, by which time the messages it posted before dying
    // (the job that killed it) have been read.
    let error: string | undefined;
    worker.on('error', (e) => (error ??= e.message));
    worker.on('messageerror', (e) => this.fail(k, `a message could not be read (${e.message})`));
    worker.on('exit', (code) => {
      slot.exitCode = code;
      if (!this.closing || error !== undefined) this.fail(k, error ?? `the thread exited with code ${code}`);
      // Jobs the thread dropped when it was closed.
      for (const job of slot.jobs.values()) job.reject(new Error('data worker threads closed'));
      slot.jobs.clear();
      onExit(code);
    });
    return slot;
  }

  /**
   * A thread died: its jobs, and every later one, fail with an error naming what it was preparing
   * (the job that killed it when known, else the ones it was running: its oldest unanswered).
   */
  private fail(k: number, why: string, culprit?: number): void {
    const slot = this.slots[k];
    const known = culprit === undefined ? undefined : slot.jobs.get(culprit);
    const running = known ? [known.label] : [...slot.jobs.values()].slice(0, this.concurrency).map((j) => j.label);
    const what = running.length ? ` while preparing ${running.join(' or ')}` : '';
    const err = new DataWorkerError(`data worker thread ${k + 1} of ${this.size} stopped${what}: ${why}`);
    this.failure ??= err;
    for (const job of slot.jobs.values()) job.reject(err);
    slot.jobs.clear();
  }

  /** Runs a job on the least busy thread; a job's own failure rejects with its Error (the message made where it failed). */
  run(job: ExampleJob): Promise<Example | null> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new Error('data worker threads closed'));
    let slot = this.slots[0];
    for (const s of this.slots) if (s.jobs.size < slot.jobs.size) slot = s;
    const id = this.nextId++;
    return new Promise<Example | null>((resolve, reject) => {
      slot.worker.postMessage({ type: 'job', id, job }, transferablesOf(job));
      if (!slot.jobs.size) slot.worker.ref();
      slot.jobs.set(id, { id, label: jobLabel(job), resolve, reject });
    });
  }

  /** Stops the threads: jobs not started are dropped, running ones finish; resolves to the exit codes (0: ended on their own). */
  close(): Promise<number[]> {
    this.closing ??= Promise.all(this.slots.map((s) => {
      if (s.exitCode !== null) return s.exited;
      // Held (ref'd) until it exits, so the process waits for it; terminated if it does not end.
      s.worker.ref();
      const timer = setTimeout(() => void s.worker.terminate(), 10_000);
      timer.unref();
      s.worker.postMessage({ type: 'close' });
      return s.exited.finally(() => clearTimeout(timer));
    }));
    return this.closing;
  }
}
