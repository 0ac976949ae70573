// Zero-shot evaluation: embed images and candidate captions, pick the caption with the highest
// cosine similarity, count the hits.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { l2Normalize } from '../ops/norm.js';
import type { CLIP } from '../models/clip.js';
import type { Dataset } from '../data/types.js';

/** L2-normalised embeddings of host images [n, 3, R, R] (in chunks), as one host array [n, D]. */
export function embedImages(model: CLIP, pixels: Float32Array, n: number, R: number, chunk = 256): Float32Array {
  const D = model.config.embedDim;
  const out = new Float32Array(n * D);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    const part = noGrad(() => tidy(() => {
      const x = Tensor.from(pixels.subarray(s * 3 * R * R, (s + m) * 3 * R * R), [m, 3, R, R], { device: model.device });
      return l2Normalize(model.encodeImage(x)).toArraySync() as Float32Array;
    }));
    out.set(part, s * D);
  }
  return out;
}

/** L2-normalised embeddings of token rows [n, L], as one host array [n, D]. */
export function embedTexts(model: CLIP, tokens: Int32Array, n: number, L: number, chunk = 512): Float32Array {
  const D = model.config.embedDim;
  const out = new Float32Array(n * D);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    const part = noGrad(() => tidy(() => {
      const t = Tensor.from(tokens.subarray(s * L, (s + m) * L), [m, L], { device: model.device });
      return l2Normalize(model.encodeText(t)).toArraySync() as Float32Array;
    }));
    out.set(part, s * D);
  }
  return out;
}

/** Index of the row of `cands` [k, D] most similar to `q` [D] (both normalised). */
export function argmaxCosine(q: Float32Array, qOff: number, cands: Float32Array, k: number, D: number, cOff = 0): number {
  let best = -Infinity, arg = 0;
  for (let j = 0; j < k; j++) {
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[qOff + d] * cands[cOff + j * D + d];
    if (dot > best) {
      best = dot;
      arg = j;
    }
  }
  return arg;
}

/** Images of a dataset's first n examples as one host array. */
export async function datasetImages(ds: Dataset, n: number): Promise<Float32Array> {
  const R = ds.imageSize;
  const px = new Float32Array(n * 3 * R * R);
  for (let i = 0; i < n; i++) {
    const ex = await ds.get(i);
    if (!ex) throw new Error(`evaluation data ${ds.name}: example ${i} is unreadable`);
    px.set(ex.image, i * 3 * R * R);
  }
  return px;
}

