// Normalised embeddings on the host: images and texts through a CLIP in batches, as [n, D] rows of
// unit length. Shared by zero-shot classification, retrieval and the linear probe.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { l2Normalize } from '../ops/norm.js';
import { preprocess } from '../image/preprocess.js';
import type { ImageInput } from '../image/decode.js';
import { CLIP_MEAN, CLIP_STD } from '../models/config.js';
import type { CLIP } from '../models/clip.js';
import type { ClipTokenizer } from '../tokenizer/tokenizer.js';

/** The image transform a model expects: its resolution, and its mean/std (CLIP's by default). */
export function imageTransformOf(model: CLIP): { size: number; mean: number[]; std: number[] } {
  return { size: model.config.vision.imageSize, mean: [...(model.config.mean ?? CLIP_MEAN)], std: [...(model.config.std ?? CLIP_STD)] };
}

/** Throws when the tokenizer can produce ids the model's embedding table does not have. */
export function checkTokenizerFits(model: CLIP, tokenizer: ClipTokenizer): void {
  if (tokenizer.vocabSize > model.config.text.vocabSize) {
    throw new Error(`the tokenizer has ${tokenizer.vocabSize} tokens but the model's text tower only ${model.config.text.vocabSize}; ` +
      `use the tokenizer the model was trained with`);
  }
}

/** Unit-length image embeddings of pixels [N, 3, R, R] (already preprocessed), in batches. */
export function embedPixels(model: CLIP, pixels: Tensor, batchSize = 64): Float32Array {
  if (!(pixels instanceof Tensor) || pixels.ndim !== 4 || pixels.shape[1] !== 3) {
    throw new Error(`embedPixels: expected pixels [N, 3, R, R], got ${pixels instanceof Tensor ? pixels.describe() : typeof pixels}`);
  }
  const R = model.config.vision.imageSize;
  if (pixels.shape[2] !== R || pixels.shape[3] !== R) {
    throw new Error(`embedPixels: the model takes ${R}x${R} images, got ${pixels.describe()}`);
  }
  const n = pixels.shape[0], D = model.config.embedDim;
  const out = new Float32Array(n * D);
  const host = pixels.toArraySync() as Float32Array;
  const plane = 3 * R * R;
  for (let s = 0; s < n; s += batchSize) {
    const m = Math.min(batchSize, n - s);
    out.set(embedPixelArray(model, host.subarray(s * plane, (s + m) * plane), m), s * D);
  }
  return out;
}

/** Unit-length embeddings of m host images [m, 3, R, R] (one batch). */
export function embedPixelArray(model: CLIP, pixels: Float32Array, m: number): Float32Array {
  const R = Math.round(Math.sqrt(pixels.length / (3 * m))); // the images' own size
  return noGrad(() => tidy(() => {
    const x = Tensor.from(pixels, [m, 3, R, R], { device: model.device });
    return l2Normalize(model.encodeImage(x)).toArraySync() as Float32Array;
  }));
}

/** Unit-length embeddings of m host token rows [m, L] (one batch). */
export function embedTokenArray(model: CLIP, tokens: Int32Array, m: number): Float32Array {
  const L = tokens.length / m;
  return noGrad(() => tidy(() => {
    const t = Tensor.from(tokens, [m, L], { device: model.device });
    return l2Normalize(model.encodeText(t)).toArraySync() as Float32Array;
  }));
}

/** Unit-length embeddings of image files / bytes / decoded pixels, preprocessed for the model. */
export async function embedImages(model: CLIP, images: readonly ImageInput[], batchSize = 32): Promise<Float32Array> {
  const D = model.config.embedDim;
  const out = new Float32Array(images.length * D);
  const tf = imageTransformOf(model);
  for (let s = 0; s < images.length; s += batchSize) {
    const px = await preprocess(images.slice(s, s + batchSize), tf);
    try {
      out.set(embedPixels(model, px, batchSize), s * D);
    } finally {
      px.dispose();
    }
  }
  return out;
}

/** Unit-length text embeddings (over-long texts are cut to the model's context length). */
export function embedTexts(model: CLIP, tokenizer: ClipTokenizer, texts: readonly string[], batchSize = 256): Float32Array {
  checkTokenizerFits(model, tokenizer);
  const L = model.config.text.contextLength, D = model.config.embedDim;
  const out = new Float32Array(texts.length * D);
  for (let s = 0; s < texts.length; s += batchSize) {
    const chunk = texts.slice(s, s + batchSize);
    const ids = tokenizer.tokenizeToArray(chunk, { contextLength: L, truncate: true });
    out.set(embedTokenArray(model, ids, chunk.length), s * D);
  }
  return out;
}

/** The model's temperature as a multiplier: exp(logit_scale), as in CLIP.forward. */
export function logitScaleOf(model: CLIP): number {
  return Math.exp(model.logitScale.item());
}
