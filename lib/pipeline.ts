// transformers.js's pipeline API for zero-shot image classification, so code written for it runs
// here by changing the import:
//   const classifier = await pipeline('zero-shot-image-classification', 'path/to/model');
//   const out = await classifier('cat.jpg', ['cat', 'dog'], { hypothesis_template: 'a photo of a {}' });
//   // [{ score: 0.97, label: 'cat' }, { score: 0.03, label: 'dog' }]   (an array of these for an array of images)
import type { Device } from './tensor.js';
import type { ImageInput } from './image/decode.js';
import type { CLIP } from './models/clip.js';
import type { ClipTokenizer } from './tokenizer/tokenizer.js';
import { ZeroShotClassifier } from './zeroshot/classifier.js';
import { embedImages } from './zeroshot/encode.js';
import { loadForInference, tokenizerFor } from './zeroshot/load.js';

export interface ZeroShotImageClassificationOutput {
  score: number;
  label: string;
}

export interface ZeroShotImageClassificationCallOptions {
  /** Each label is put into this sentence at "{}" (default "This is a photo of {}", as transformers.js). */
  hypothesis_template?: string;
}

export interface ZeroShotImageClassificationPipeline {
  (images: ImageInput, candidateLabels: string[], options?: ZeroShotImageClassificationCallOptions): Promise<ZeroShotImageClassificationOutput[]>;
  (images: ImageInput[], candidateLabels: string[], options?: ZeroShotImageClassificationCallOptions): Promise<ZeroShotImageClassificationOutput[][]>;
  readonly task: 'zero-shot-image-classification';
  readonly model: CLIP;
  readonly tokenizer: ClipTokenizer;
  dispose(): Promise<void>;
}

export interface PipelineOptions {
  device?: Device | 'auto';
  /** A tokenizer or its path (default: found beside the checkpoint). */
  tokenizer?: string | ClipTokenizer;
}

export const DEFAULT_HYPOTHESIS_TEMPLATE = 'This is a photo of {}';

/** Builds a pipeline from a checkpoint path (any format tsclip reads) or a loaded model. */
export async function pipeline(task: 'zero-shot-image-classification', model: string | CLIP, options: PipelineOptions = {}): Promise<ZeroShotImageClassificationPipeline> {
  if (task !== 'zero-shot-image-classification') {
    throw new Error(`pipeline: unsupported task "${String(task)}"; tsclip provides 'zero-shot-image-classification'`);
  }
  let clip: CLIP, tokenizer: ClipTokenizer, owned: boolean;
  if (typeof model === 'string') {
    ({ model: clip, tokenizer } = await loadForInference(model, options));
    owned = true;
  } else {
    if (options.tokenizer === undefined) throw new Error('pipeline: a loaded model needs options.tokenizer (a tokenizer or its path)');
    clip = model;
    tokenizer = await tokenizerFor('(model)', clip, options.tokenizer);
    owned = false;
  }

  const call = async (images: ImageInput | ImageInput[], candidateLabels: string[], opts: ZeroShotImageClassificationCallOptions = {}) => {
    if (!Array.isArray(candidateLabels) || candidateLabels.length === 0 || !candidateLabels.every((l) => typeof l === 'string')) {
      throw new Error('zero-shot-image-classification: candidate labels must be a non-empty array of strings');
    }
    const template = opts.hypothesis_template ?? DEFAULT_HYPOTHESIS_TEMPLATE;
    // As transformers.js: the first "{}" takes the label, one prompt per label (no ensembling).
    const classes = candidateLabels.map((l) => [template.replace('{}', l)]);
    const zs = ZeroShotClassifier.create(clip, tokenizer, classes, ['{}']);
    const isBatched = Array.isArray(images);
    const list = isBatched ? images : [images];
    const emb = await embedImages(clip, list);
    const K = candidateLabels.length;
    const probs = zs.probabilities(emb, list.length);
    const out = list.map((_, i) =>
      candidateLabels.map((label, k) => ({ score: probs[i * K + k], label })).sort((a, b) => b.score - a.score));
    return isBatched ? out : out[0];
  };
  const fn = call as unknown as ZeroShotImageClassificationPipeline;
  Object.defineProperties(fn, {
    task: { value: task, enumerable: true },
    model: { value: clip, enumerable: true },
    tokenizer: { value: tokenizer, enumerable: true },
    dispose: { value: async () => { if (owned) clip.dispose(); }, enumerable: false },
  });
  return fn;
}
