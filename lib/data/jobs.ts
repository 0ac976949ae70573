// The work of making one example, as a plain description (structured-cloneable, so it can be posted
// to a worker thread) and the one function that does it. A dataset's get(i) and a worker run the
// same code on the same description, which is what makes batches bit-identical with or without
// worker threads.
import { readFileSync } from 'node:fs';
import type { Example } from './types.js';
import { loadImage, type ImageTransform } from './image.js';
import { ShapesDataset, type ShapesOptions } from './shapes.js';
import { greyImage } from './fashion-mnist.js';

export type ExampleJob =
  /** An image file; the caption given, or read from captionFile (a folder's cat.txt). */
  | { op: 'file'; file: string; caption?: string; captionFile?: string; transform: ImageTransform }
  /** Encoded image bytes (a WebDataset sample) and its caption. */
  | { op: 'bytes'; label: string; bytes: Uint8Array; caption: string; transform: ImageTransform }
  /** Scene `index` of a ShapesDataset with these options. */
  | { op: 'shapes'; options: ShapesOptions; index: number }
  /** A grey [side, side] uint8 image scaled to [3, size, size] (Fashion-MNIST). */
  | { op: 'grey'; label: string; pixels: Uint8Array; side: number; size: number; mean: readonly number[]; std: readonly number[]; caption: string };

export const JOB_OPS: ReadonlySet<string> = new Set(['file', 'bytes', 'shapes', 'grey']);

/** What a job is about, for errors: its file, or its dataset and index. */
export function jobLabel(job: ExampleJob): string {
  switch (job.op) {
    case 'file': return job.file;
    case 'shapes': return `shapes #${job.index}`;
    default: return (job as { label?: string }).label ?? `a '${(job as { op: string }).op}' job`;
  }
}

/** Buffers a job owns whole (moved to the worker, not copied). */
export function transferablesOf(job: ExampleJob): ArrayBuffer[] {
  const a = job.op === 'bytes' ? job.bytes : job.op === 'grey' ? job.pixels : null;
  return a && ownsBuffer(a) ? [a.buffer as ArrayBuffer] : [];
}

/** True when the view covers all of a plain (not shared) ArrayBuffer, so the buffer can be transferred. */
export function ownsBuffer(a: ArrayBufferView): boolean {
  return a.buffer instanceof ArrayBuffer && a.byteOffset === 0 && a.byteLength === a.buffer.byteLength;
}

/** A folder or CSV example: an empty caption gives an example the loader skips without decoding. */
export async function fileExample(job: Extract<ExampleJob, { op: 'file' }>): Promise<Example> {
  let caption = job.caption;
  if (caption === undefined) {
    try {
      caption = readFileSync(job.captionFile ?? '', 'utf8').trim();
    } catch {
      throw new Error(`${job.file}: no caption file`);
    }
  }
  if (!caption) return { image: new Float32Array(0), caption: '' };
  return { image: await loadImage(job.file, job.transform), caption };
}

export async function runJob(job: ExampleJob): Promise<Example | null> {
  switch (job.op) {
    case 'file': return fileExample(job);
    case 'bytes': return { image: await loadImage(job.bytes, job.transform), caption: job.caption };
    case 'shapes': return new ShapesDataset(job.options).get(job.index);
    case 'grey': return { image: greyImage(job.pixels, 0, job.side, job.size, job.mean, job.std), caption: job.caption };
    default: throw new Error(`unknown example job '${(job as { op: string }).op}'`);
  }
}
