// Zero-shot evaluation: embed images and candidate captions, pick the caption with the highest
// cosine similarity, count the hits.
import { embedPixelArray, embedTokenArray } from '../zeroshot/encode.js';
import type { CLIP } from '../models/clip.js';
import type { Dataset } from '../data/types.js';

/** L2-normalised embeddings of host images [n, 3, R, R] (in chunks), as one host array [n, D]. */
export function embedImages(model: CLIP, pixels: Float32Array, n: number, R: number, chunk = 256): Float32Array {
  const out = new Float32Array(n * model.config.embedDim);
  const plane = 3 * R * R;
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    out.set(embedPixelArray(model, pixels.subarray(s * plane, (s + m) * plane), m), s * model.config.embedDim);
  }
  return out;
}

/** L2-normalised embeddings of token rows [n, L], as one host array [n, D]. */
export function embedTexts(model: CLIP, tokens: Int32Array, n: number, L: number, chunk = 512): Float32Array {
  const out = new Float32Array(n * model.config.embedDim);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    out.set(embedTokenArray(model, tokens.subarray(s * L, (s + m) * L), m), s * model.config.embedDim);
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


export interface RetrievalResult {
  imageToTextR1: number;
  imageToTextR5: number;
  textToImageR1: number;
  textToImageR5: number;
  n: number;
}

/** Recall@1/@5 of matching pairs among the first n examples of a dataset, both directions. */
export async function retrieval(model: CLIP, ds: Dataset, n: number, tokenize: (c: string[]) => Int32Array, contextLength: number): Promise<RetrievalResult> {
  n = Math.min(n, ds.length);
  const R = ds.imageSize, D = model.config.embedDim;
  const px = new Float32Array(n * 3 * R * R);
  const captions: string[] = [];
  for (let i = 0; i < n; i++) {
    const ex = await ds.get(i);
    if (!ex) throw new Error(`evaluation data ${ds.name}: example ${i} is unreadable`);
    px.set(ex.image, i * 3 * R * R);
    captions.push(ex.caption);
  }
  const img = embedImages(model, px, n, R);
  const txt = embedTexts(model, tokenize(captions), n, contextLength);
  const rank = (q: Float32Array, keys: Float32Array, i: number) => {
    let s0 = 0;
    for (let d = 0; d < D; d++) s0 += q[i * D + d] * keys[i * D + d];
    let above = 0;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      let s = 0;
      for (let d = 0; d < D; d++) s += q[i * D + d] * keys[j * D + d];
      if (s > s0) above++;
    }
    return above;
  };
  let i1 = 0, i5 = 0, t1 = 0, t5 = 0;
  for (let i = 0; i < n; i++) {
    const ri = rank(img, txt, i), rt = rank(txt, img, i);
    if (ri < 1) i1++;
    if (ri < 5) i5++;
    if (rt < 1) t1++;
    if (rt < 5) t5++;
  }
  return { imageToTextR1: i1 / n, imageToTextR5: i5 / n, textToImageR1: t1 / n, textToImageR5: t5 / n, n };
}
