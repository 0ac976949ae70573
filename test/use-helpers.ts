// Shared by the zero-shot, retrieval, probe and CLI tests: a tiny CLIP with a tokenizer trained to
// fit its vocabulary, saved as a tsclip run folder (model.safetensors + merges.txt.gz), and small
// synthetic images and PNG files.
import { vi } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { createCLIP, type CLIP } from '../lib/models/clip.js';
import { resolveConfig } from '../lib/models/config.js';
import { saveModelWeights } from '../lib/train/checkpoint.js';
import { trainBPE, writeMerges } from '../lib/tokenizer/train.js';
import { loadTokenizer } from '../lib/tokenizer/index.js';
import type { ClipTokenizer } from '../lib/tokenizer/tokenizer.js';
import type { RawImage } from '../lib/image/decode.js';
import { rng } from './helpers.js';

export const CAPTIONS = [
  'a photo of a cat', 'a photo of a dog', 'a photo of a puppy', 'a drawing of a bird', 'a red circle', 'a blue square',
  'a cat on a mat', 'a dog on a beach', 'this is a photo of a cat', 'this is a photo of a dog', 'a green triangle',
];

export interface TinyRun {
  dir: string;
  modelPath: string;
  model: CLIP;
  tokenizer: ClipTokenizer;
}

/** A tiny-vit CLIP (vocabulary sized to a BPE trained on CAPTIONS) saved as a run folder in a temp dir. */
export async function tinyRun(seed = 1): Promise<TinyRun> {
  const dir = mkdtempSync(join(tmpdir(), 'tsclip-use-'));
  const merges = trainBPE(CAPTIONS, { vocabSize: 560, minFrequency: 2 });
  await writeMerges(join(dir, 'merges.txt.gz'), merges);
  const tokenizer = await loadTokenizer(join(dir, 'merges.txt.gz'));
  const cfg = resolveConfig('tiny-vit');
  cfg.text.vocabSize = tokenizer.vocabSize;
  const model = createCLIP(cfg, { seed, device: 'cpu' });
  model.eval();
  const modelPath = join(dir, 'model.safetensors');
  await saveModelWeights(model, modelPath);
  return { dir, modelPath, model, tokenizer };
}

/** A seeded random RGB image. */
export function randomImage(seed: number, width = 40, height = 36): RawImage {
  const r = rng(seed);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { data, width, height, channels: 3 };
}

/** Writes n random PNG images (img0.png ...) into dir, returning their paths. */
export async function writeImages(dir: string, n: number, seed = 10, prefix = 'img'): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const img = randomImage(seed + i);
    const p = join(dir, `${prefix}${i}.png`);
    writeFileSync(p, await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer());
    paths.push(p);
  }
  return paths;
}

/** Dot products of unit rows: a [n, D] x b [m, D] -> [n, m] in float64. */
export function cosines(a: Float32Array, b: Float32Array, D: number): number[][] {
  const n = a.length / D, m = b.length / D;
  return Array.from({ length: n }, (_, i) => Array.from({ length: m }, (_, j) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += a[i * D + d] * b[j * D + d];
    return s;
  }));
}

/** Float64 unit-normalisation of each row of x [n, D]. */
export function normalizeRows(x: Float32Array, D: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length / D; i++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += x[i * D + d] ** 2;
    const n = Math.sqrt(s);
    for (let d = 0; d < D; d++) out[i * D + d] = x[i * D + d] / n;
  }
  return out;
}

/** Runs a CLI command function and returns what it printed with console.log (stderr muted). */
export async function capture(fn: () => Promise<void>): Promise<string> {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await fn();
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
  return out.join('\n');
}
