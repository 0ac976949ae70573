// Zero-shot classification: prompt ensembling against embeddings averaged by hand, scores against
// the model's own forward pass, prompt files, caching, and the transformers.js-shaped pipeline.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor } from '../lib/tensor.js';
import { preprocess } from '../lib/image/preprocess.js';
import { ZeroShotClassifier, averageUnit, softmaxRows, clearPromptCache } from '../lib/zeroshot/classifier.js';
import { DEFAULT_TEMPLATES, loadPromptFile, fillTemplate } from '../lib/zeroshot/templates.js';
import { imageTransformOf } from '../lib/zeroshot/encode.js';
import { findTokenizer, loadForInference } from '../lib/zeroshot/load.js';
import { pipeline } from '../lib/pipeline.js';
import { SHARED } from './helpers.js';
import { tinyRun, randomImage, normalizeRows, type TinyRun } from './use-helpers.js';

let run: TinyRun;
beforeAll(async () => {
  run = await tinyRun();
});
afterAll(() => {
  run.model.dispose();
  rmSync(run.dir, { recursive: true, force: true });
});

/** Unnormalised text embeddings of single prompts, one forward pass each. */
function rawText(texts: string[]): Float32Array[] {
  const L = run.model.config.text.contextLength;
  return texts.map((t) => {
    const ids = run.tokenizer.tokenize([t], { contextLength: L });
    const e = run.model.encodeText(ids);
    const v = e.toArraySync() as Float32Array;
    ids.dispose();
    e.dispose();
    return v;
  });
}

describe('averageUnit and softmaxRows', () => {
  it('averages unit vectors and renormalises, as computed by hand', () => {
    const v = averageUnit([new Float32Array([1, 0, 0]), new Float32Array([0, 1, 0])], 3);
    expect(Array.from(v)).toEqual([Math.fround(Math.SQRT1_2), Math.fround(Math.SQRT1_2), 0]);
    // (0.6, 0.8) + (1, 0) = (1.6, 0.8) -> / sqrt(3.2)
    const w = averageUnit([new Float32Array([0.6, 0.8]), new Float32Array([1, 0])], 2);
    expect(w[0]).toBeCloseTo(1.6 / Math.sqrt(3.2), 6);
    expect(w[1]).toBeCloseTo(0.8 / Math.sqrt(3.2), 6);
  });
  it('softmax of rows', () => {
    const p = softmaxRows(new Float32Array([0, Math.log(3), 1000, 1000]), 2, 2);
    expect(Array.from(p).map((x) => +x.toFixed(6))).toEqual([0.25, 0.75, 0.5, 0.5]);
  });
});

describe('ZeroShotClassifier', () => {
  it('ensembles every synonym through every template: mean of unit embeddings, renormalised', () => {
    const templates = ['a photo of a {}', 'a drawing of a {}'];
    const classes = ['cat', ['dog', 'puppy']];
    const zs = ZeroShotClassifier.create(run.model, run.tokenizer, classes, templates, { cache: false });
    const D = run.model.config.embedDim;
    expect(zs.labels).toEqual(['cat', 'dog']);
    const groups = [['a photo of a cat', 'a drawing of a cat'], ['a photo of a dog', 'a drawing of a dog', 'a photo of a puppy', 'a drawing of a puppy']];
    groups.forEach((texts, k) => {
      const units = rawText(texts).map((v) => normalizeRows(v, D));
      const mean = new Float64Array(D);
      for (const u of units) for (let d = 0; d < D; d++) mean[d] += u[d] / units.length;
      const norm = Math.hypot(...mean);
      for (let d = 0; d < D; d++) expect(zs.weights[k * D + d]).toBeCloseTo(mean[d] / norm, 5);
    });
  });

  it('scores images as softmax of the logits CLIP.forward gives (one name, one template)', async () => {
    const labels = ['cat', 'dog', 'bird'];
    const zs = ZeroShotClassifier.create(run.model, run.tokenizer, labels, ['a photo of a {}']);
    const images = [randomImage(1), randomImage(2), randomImage(3)];
    const px = await preprocess(images, imageTransformOf(run.model));
    const L = run.model.config.text.contextLength;
    const ids = run.tokenizer.tokenize(labels.map((l) => `a photo of a ${l}`), { contextLength: L });
    const out = run.model.forward(px, ids);
    const ref = out.logitsPerImage.toArraySync() as Float32Array;
    const lg = zs.logits(await (async () => {
      const { embedPixels } = await import('../lib/zeroshot/encode.js');
      return embedPixels(run.model, px);
    })());
    for (let i = 0; i < ref.length; i++) expect(lg[i]).toBeCloseTo(ref[i], 4);
    const probs = softmaxRows(ref, 3, 3);
    const byTensor = await zs.classify(px);
    const byInputs = await zs.classify(images);
    expect(byTensor.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      const want = labels.map((label, k) => ({ label, score: probs[i * 3 + k] })).sort((a, b) => b.score - a.score);
      expect(byTensor[i].map((p) => p.label)).toEqual(want.map((p) => p.label));
      byTensor[i].forEach((p, j) => expect(p.score).toBeCloseTo(want[j].score, 5));
      byInputs[i].forEach((p, j) => expect(p.score).toBeCloseTo(byTensor[i][j].score, 6));
      expect(byTensor[i][0].score).toBeGreaterThanOrEqual(byTensor[i][1].score);
    }
    expect((await zs.classify(images, { topK: 2 }))[0].length).toBe(2);
    for (const t of [px, ids, out.logitsPerImage, out.logitsPerText, out.imageEmbeds, out.textEmbeds]) t.dispose();
  });

  it('caches prompt embeddings per model and tokenizer', () => {
    clearPromptCache(run.model);
    const spy = vi.spyOn(run.model, 'encodeText');
    ZeroShotClassifier.create(run.model, run.tokenizer, ['cat', 'dog'], DEFAULT_TEMPLATES);
    const calls = spy.mock.calls.length;
    expect(calls).toBeGreaterThan(0);
    const again = ZeroShotClassifier.create(run.model, run.tokenizer, ['dog', 'cat'], DEFAULT_TEMPLATES);
    expect(spy.mock.calls.length).toBe(calls);
    expect(again.labels).toEqual(['dog', 'cat']);
    spy.mockRestore();
  });

  it('rejects bad classes, templates and mismatched tokenizers', async () => {
    expect(() => ZeroShotClassifier.create(run.model, run.tokenizer, [], DEFAULT_TEMPLATES)).toThrow(/non-empty list of class names/);
    expect(() => ZeroShotClassifier.create(run.model, run.tokenizer, ['cat'], ['a photo'])).toThrow(/no "\{\}"/);
    expect(() => ZeroShotClassifier.create(run.model, run.tokenizer, [['cat', '']], DEFAULT_TEMPLATES)).toThrow(/synonyms/);
    const px = Tensor.zeros([1, 3, 8, 8]);
    const zs = ZeroShotClassifier.create(run.model, run.tokenizer, ['cat'], DEFAULT_TEMPLATES);
    await expect(zs.classify(px)).rejects.toThrow(/32x32/);
    px.dispose();
  });

  it('fills "{}" everywhere it appears', () => {
    expect(fillTemplate('{} or not {}', 'cat')).toBe('cat or not cat');
  });
});

const PROMPTS = join(SHARED, 'clip-data', 'zeroshot_prompts.json');
describe.skipIf(!existsSync(PROMPTS))('prompt files (../shared/clip-data missing: skipped)', () => {
  it('reads one task of a multi-task file, with synonyms', async () => {
    const cifar = await loadPromptFile(`${PROMPTS}#cifar10`);
    expect(cifar.classes.length).toBe(10);
    expect(cifar.templates.every((t) => t.includes('{}'))).toBe(true);
    await expect(loadPromptFile(PROMPTS)).rejects.toThrow(/pick one with FILE#task/);
    await expect(loadPromptFile(PROMPTS, 'nope')).rejects.toThrow(/no task "nope"/);
    const zs = await ZeroShotClassifier.fromPromptFile(run.model, run.tokenizer, PROMPTS, { task: 'cifar10' });
    expect(zs.numClasses).toBe(10);
    const D = zs.dim;
    for (let k = 0; k < 10; k++) expect(Math.hypot(...zs.weights.subarray(k * D, (k + 1) * D))).toBeCloseTo(1, 5);
  });
});

describe('finding the tokenizer beside a checkpoint', () => {
  it('uses the run folder merges file and refuses a model without one', async () => {
    expect(findTokenizer(run.modelPath)).toBe(join(run.dir, 'merges.txt.gz'));
    expect(findTokenizer(run.dir)).toBe(join(run.dir, 'merges.txt.gz'));
    const { model, tokenizer } = await loadForInference(run.dir);
    expect(tokenizer.vocabSize).toBe(run.tokenizer.vocabSize);
    model.dispose();
    await expect(loadForInference(join(run.dir, 'missing.safetensors'))).rejects.toThrow(/no such file/);
  });
});

describe('pipeline("zero-shot-image-classification") (transformers.js call shape)', () => {
  it('one image -> [{score, label}] sorted; an array of images -> an array of those', async () => {
    const classifier = await pipeline('zero-shot-image-classification', run.dir, { device: 'cpu' });
    const labels = ['cat', 'dog', 'bird'];
    const one = await classifier(randomImage(5), labels);
    expect(Array.isArray(one)).toBe(true);
    expect(one.length).toBe(3);
    for (const r of one) expect(Object.keys(r).sort()).toEqual(['label', 'score']);
    expect(one.map((r) => r.label).sort()).toEqual([...labels].sort());
    for (let i = 1; i < one.length; i++) expect(one[i - 1].score).toBeGreaterThanOrEqual(one[i].score);
    expect(one.reduce((a, r) => a + r.score, 0)).toBeCloseTo(1, 5);

    const many = await classifier([randomImage(5), randomImage(6)], labels, { hypothesis_template: 'a photo of a {}' });
    expect(many.length).toBe(2);
    for (const list of many) expect(list.length).toBe(3);
    // Scores are the softmax of the model's logits for the filled-in template.
    const px = await preprocess([randomImage(5), randomImage(6)], imageTransformOf(classifier.model));
    const ids = classifier.tokenizer.tokenize(labels.map((l) => `a photo of a ${l}`), { contextLength: classifier.model.config.text.contextLength });
    const out = classifier.model.forward(px, ids);
    const probs = softmaxRows(out.logitsPerImage.toArraySync() as Float32Array, 2, 3);
    many.forEach((list, i) => list.forEach((r) => expect(r.score).toBeCloseTo(probs[i * 3 + labels.indexOf(r.label)], 5)));
    // The default template is transformers.js's "This is a photo of {}".
    const ids2 = classifier.tokenizer.tokenize(labels.map((l) => `This is a photo of ${l}`), { contextLength: classifier.model.config.text.contextLength });
    const out2 = classifier.model.forward(px.view([1, 3, 32, 32], [3072, 1024, 32, 1], 0), ids2);
    const p2 = softmaxRows(out2.logitsPerImage.toArraySync() as Float32Array, 1, 3);
    one.forEach((r) => expect(r.score).toBeCloseTo(p2[labels.indexOf(r.label)], 5));
    await expect(classifier(randomImage(5), [])).rejects.toThrow(/candidate labels/);
    await classifier.dispose();
  });
  it('refuses other tasks', async () => {
    await expect(pipeline('image-classification' as 'zero-shot-image-classification', run.dir)).rejects.toThrow(/unsupported task/);
  });
});
