// Zero-shot classification with prompt ensembling, as in the CLIP paper: every class name (and
// synonym) goes through every template; the unit-length text embeddings of a class are averaged
// and renormalised into one classifier row. Images are scored by softmax(exp(logit_scale) * cos).
import { Tensor } from '../tensor.js';
import type { ImageInput } from '../image/decode.js';
import type { CLIP } from '../models/clip.js';
import type { ClipTokenizer } from '../tokenizer/tokenizer.js';
import { checkClasses, checkTemplates, DEFAULT_TEMPLATES, fillTemplate, loadPromptFile, type ClassName } from './templates.js';
import { checkTokenizerFits, embedImages, embedPixels, embedTexts, logitScaleOf } from './encode.js';

export interface Prediction {
  label: string;
  score: number;
}

export interface ZeroShotOptions {
  /** Texts embedded at once (default 256). */
  batchSize?: number;
  /** Reuse prompt embeddings computed before for this model and tokenizer (default true; frozen weights only). */
  cache?: boolean;
}

export interface ClassifyOptions {
  /** Keep the k best classes per image (default: all). */
  topK?: number;
  /** Images embedded at once (default 32). */
  batchSize?: number;
}

// Prompt text -> unit embedding, per model and tokenizer. Weak keys: a disposed model takes its cache along.
const textCache = new WeakMap<CLIP, WeakMap<ClipTokenizer, Map<string, Float32Array>>>();
const MAX_CACHED = 200_000;

/** Forgets cached prompt embeddings of a model (call after changing its weights). */
export function clearPromptCache(model: CLIP): void {
  textCache.delete(model);
}

/** Unit embeddings of prompts, embedding only those not cached yet. */
export function embedPrompts(model: CLIP, tokenizer: ClipTokenizer, prompts: readonly string[], opts: ZeroShotOptions = {}): Float32Array[] {
  const D = model.config.embedDim;
  if (opts.cache === false) {
    const flat = embedTexts(model, tokenizer, prompts, opts.batchSize);
    return prompts.map((_, i) => flat.subarray(i * D, (i + 1) * D));
  }
  let byTok = textCache.get(model);
  if (!byTok) textCache.set(model, (byTok = new WeakMap()));
  let cache = byTok.get(tokenizer);
  if (!cache) byTok.set(tokenizer, (cache = new Map()));
  const missing = [...new Set(prompts.filter((p) => !cache!.has(p)))];
  if (missing.length) {
    if (cache.size + missing.length > MAX_CACHED) cache.clear();
    const flat = embedTexts(model, tokenizer, missing, opts.batchSize);
    missing.forEach((p, i) => cache!.set(p, flat.slice(i * D, (i + 1) * D)));
  }
  return prompts.map((p) => cache!.get(p)!);
}

/** Mean of unit vectors, renormalised to unit length (float64 sums). */
export function averageUnit(vectors: readonly Float32Array[], D: number): Float32Array {
  const acc = new Float64Array(D);
  for (const v of vectors) for (let d = 0; d < D; d++) acc[d] += v[d];
  let norm = 0;
  for (let d = 0; d < D; d++) norm += acc[d] * acc[d];
  norm = Math.sqrt(norm);
  const out = new Float32Array(D);
  if (norm > 0) for (let d = 0; d < D; d++) out[d] = acc[d] / norm;
  return out;
}

/** Softmax of each row of logits [n, k] (in place on a copy). */
export function softmaxRows(logits: Float32Array, n: number, k: number): Float32Array {
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, logits[i * k + j]);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += Math.exp(logits[i * k + j] - max);
    for (let j = 0; j < k; j++) out[i * k + j] = Math.exp(logits[i * k + j] - max) / sum;
  }
  return out;
}

export class ZeroShotClassifier {
  /** The first name of each class. */
  readonly labels: string[];
  /** exp(logit_scale) of the model when the classifier was built. */
  readonly scale: number;

  private constructor(
    readonly model: CLIP,
    readonly classes: ClassName[],
    readonly templates: string[],
    /** Unit-length class embeddings [K, D], row per class. */
    readonly weights: Float32Array,
  ) {
    this.labels = classes.map((c) => (typeof c === 'string' ? c : c[0]));
    this.scale = logitScaleOf(model);
  }

  get numClasses(): number {
    return this.labels.length;
  }

  get dim(): number {
    return this.model.config.embedDim;
  }

  /** Builds the class embeddings: every name of a class through every template, averaged. */
  static create(model: CLIP, tokenizer: ClipTokenizer, classNames: readonly ClassName[], templates: readonly string[] = DEFAULT_TEMPLATES, opts: ZeroShotOptions = {}): ZeroShotClassifier {
    checkClasses(classNames, 'ZeroShotClassifier: classes');
    checkTemplates(templates, 'ZeroShotClassifier: templates');
    checkTokenizerFits(model, tokenizer);
    const D = model.config.embedDim;
    const perClass = classNames.map((c) => (typeof c === 'string' ? [c] : [...c]).flatMap((name) => templates.map((t) => fillTemplate(t, name))));
    const flat = embedPrompts(model, tokenizer, perClass.flat(), opts);
    const weights = new Float32Array(classNames.length * D);
    let at = 0;
    perClass.forEach((prompts, k) => {
      weights.set(averageUnit(flat.slice(at, at + prompts.length), D), k * D);
      at += prompts.length;
    });
    return new ZeroShotClassifier(model, classNames.map((c) => (typeof c === 'string' ? c : [...c])), [...templates], weights);
  }

  /** A classifier from a prompt file of {classes, templates} ("FILE#task" picks one task). */
  static async fromPromptFile(model: CLIP, tokenizer: ClipTokenizer, file: string, opts: ZeroShotOptions & { task?: string } = {}): Promise<ZeroShotClassifier> {
    const set = await loadPromptFile(file, opts.task);
    return ZeroShotClassifier.create(model, tokenizer, set.classes, set.templates, opts);
  }

  /** Logits [n, K] = scale * cos for unit image embeddings [n, D]. */
  logits(imageEmbeds: Float32Array, n = imageEmbeds.length / this.dim): Float32Array {
    const D = this.dim, K = this.numClasses;
    if (imageEmbeds.length !== n * D) throw new Error(`ZeroShotClassifier.logits: expected ${n} x ${D} values, got ${imageEmbeds.length}`);
    const out = new Float32Array(n * K);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < K; k++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += imageEmbeds[i * D + d] * this.weights[k * D + d];
        out[i * K + k] = this.scale * dot;
      }
    }
    return out;
  }

  /** Class probabilities [n, K] for unit image embeddings. */
  probabilities(imageEmbeds: Float32Array, n = imageEmbeds.length / this.dim): Float32Array {
    return softmaxRows(this.logits(imageEmbeds, n), n, this.numClasses);
  }

  /** The best class index of each image. */
  predict(imageEmbeds: Float32Array, n = imageEmbeds.length / this.dim): Int32Array {
    const K = this.numClasses, lg = this.logits(imageEmbeds, n);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (lg[i * K + k] > lg[i * K + best]) best = k;
      out[i] = best;
    }
    return out;
  }

  /** Sorted predictions of images given as unit embeddings. */
  rank(imageEmbeds: Float32Array, n = imageEmbeds.length / this.dim, topK = this.numClasses): Prediction[][] {
    const K = this.numClasses, p = this.probabilities(imageEmbeds, n);
    return Array.from({ length: n }, (_, i) =>
      this.labels.map((label, k) => ({ label, score: p[i * K + k] })).sort((a, b) => b.score - a.score).slice(0, topK));
  }

  /**
   * Classifies images: preprocessed pixels [N, 3, R, R], or paths / bytes / decoded images
   * (preprocessed with the model's transform). One sorted list per image.
   */
  async classify(images: Tensor | ImageInput | readonly ImageInput[], opts: ClassifyOptions = {}): Promise<Prediction[][]> {
    const topK = opts.topK ?? this.numClasses;
    if (!Number.isInteger(topK) || topK < 1) throw new Error(`classify: topK must be a positive integer, got ${topK}`);
    let emb: Float32Array;
    if (images instanceof Tensor) {
      emb = embedPixels(this.model, images, opts.batchSize ?? 32);
    } else {
      const list = Array.isArray(images) ? (images as readonly ImageInput[]) : [images as ImageInput];
      emb = await embedImages(this.model, list, opts.batchSize ?? 32);
    }
    return this.rank(emb, emb.length / this.dim, topK);
  }
}
