// Fashion-MNIST from its IDX files (gzipped or not; Debian's dataset-fashion-mnist installs them in
// /usr/share/datasets/fashion-mnist/). Captions come from the class names and templates, so a
// model learns without the labels; the labels are kept for zero-shot and linear-probe evaluation.
import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import * as path from 'node:path';
import { Random } from '../nn/random.js';
import type { Dataset, Example } from './types.js';
import type { ExampleJob } from './jobs.js';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_CLASSES = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot'];
export const FASHION_TEMPLATES = [
  'a photo of a {}.', 'a black and white photo of a {}.', 'a picture of a {}.', 'a low resolution photo of a {}.',
  'a {}.', 'a photo of the {}.', 'a grayscale image of a {}.', 'an image of a {}.',
];

/** Parses an IDX file (magic 0x00000803 images or 0x00000801 labels) as its dims and bytes. */
export function parseIdx(bytes: Uint8Array, file: string): { dims: number[]; data: Uint8Array } {
  const buf = bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) {
    throw new Error(`${file}: not an unsigned-byte IDX file (magic ${Array.from(buf.subarray(0, 4)).map((b) => b.toString(16).padStart(2, '0')).join('')})`);
  }
  const nd = buf[3];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims = Array.from({ length: nd }, (_, i) => view.getUint32(4 + 4 * i));
  const start = 4 + 4 * nd;
  const n = dims.reduce((a, b) => a * b, 1);
  if (buf.length - start < n) throw new Error(`${file}: truncated: header says ${dims.join('x')} = ${n} bytes, found ${buf.length - start}`);
  return { dims, data: buf.subarray(start, start + n) };
}

function findFile(dir: string, base: string): string {
  for (const name of [`${base}.gz`, base, base.replace('-idx', '.idx')]) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`Fashion-MNIST: ${base}(.gz) not found in ${dir} (install the dataset-fashion-mnist package or pass the directory)`);
}

export interface FashionOptions {
  dir?: string;
  split: 'train' | 'test';
  imageSize?: number;
  mean?: readonly number[];
  std?: readonly number[];
  seed?: number;
}

export class FashionMnistDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly imageSize: number;
  readonly labels: Uint8Array;
  private readonly pixels: Uint8Array;
  private readonly side: number;

  constructor(private readonly opts: FashionOptions) {
    const dir = opts.dir ?? FASHION_MNIST_DIR;
    const prefix = opts.split === 'train' ? 'train' : 't10k';
    const imgFile = findFile(dir, `${prefix}-images-idx3-ubyte`);
    const labFile = findFile(dir, `${prefix}-labels-idx1-ubyte`);
    const img = parseIdx(readFileSync(imgFile), imgFile);
    const lab = parseIdx(readFileSync(labFile), labFile);
    if (img.dims.length !== 3 || img.dims[1] !== img.dims[2]) throw new Error(`${imgFile}: expected [n, side, side] images, found ${img.dims.join('x')}`);
    if (lab.dims.length !== 1 || lab.dims[0] !== img.dims[0]) throw new Error(`${labFile}: ${lab.dims.join('x')} labels for ${img.dims[0]} images`);
    this.pixels = img.data;
    this.labels = lab.data;
    this.side = img.dims[1];
    this.length = img.dims[0];
    this.imageSize = opts.imageSize ?? this.side;
    this.name = `fashion-mnist-${opts.split}`;
  }

  /** Caption i: a template (chosen by index and seed) filled with the class name. */
  caption(i: number): string {
    const t = FASHION_TEMPLATES[Math.floor(new Random(((this.opts.seed ?? 0) * 7919 + i) >>> 0).next() * FASHION_TEMPLATES.length)];
    return t.replace('{}', FASHION_CLASSES[this.labels[i]]);
  }

  private get mean(): readonly number[] {
    return this.opts.mean ?? [0.286, 0.286, 0.286];
  }
  private get std(): readonly number[] {
    return this.opts.std ?? [0.353, 0.353, 0.353];
  }

  /** Grey [side, side] -> [3, R, R] (nearest-neighbour scaling), normalised. */
  image(i: number): Float32Array {
    return greyImage(this.pixels, i * this.side * this.side, this.side, this.imageSize, this.mean, this.std);
  }

  /** Example i for a worker thread: its own copy of the image's bytes, not the whole set's. */
  job(i: number): ExampleJob {
    const n = this.side * this.side;
    return {
      op: 'grey', label: `${this.name} #${i}`, pixels: this.pixels.slice(i * n, (i + 1) * n), side: this.side, size: this.imageSize,
      mean: this.mean, std: this.std, caption: this.caption(i),
    };
  }

  get(i: number): Example {
    return { image: this.image(i), caption: this.caption(i) };
  }
}

/** Grey pixels [S, S] at `base` -> [3, R, R] float32 (nearest-neighbour scaling), (v - mean) / std. */
export function greyImage(pixels: Uint8Array, base: number, S: number, R: number, mean: readonly number[], std: readonly number[]): Float32Array {
  const n = R * R;
  const out = new Float32Array(3 * n);
  for (let y = 0; y < R; y++) {
    const sy = Math.min(S - 1, Math.floor(((y + 0.5) * S) / R));
    for (let x = 0; x < R; x++) {
      const v = pixels[base + sy * S + Math.min(S - 1, Math.floor(((x + 0.5) * S) / R))] / 255;
      for (let c = 0; c < 3; c++) out[c * n + y * R + x] = (v - mean[c]) / std[c];
    }
  }
  return out;
}
