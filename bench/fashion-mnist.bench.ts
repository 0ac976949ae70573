// `npm run bench -- fashion-mnist [--minutes M] [--steps N]`: trains a small CLIP on Fashion-MNIST
// with captions made from class names and templates (labels are never used as targets), then
// prints zero-shot top-1 on the 10,000 test images and linear-probe top-1 (lib/probe: the L2
// strength chosen on a validation split of the training images) on two frozen image features, the
// pooled representation before the projection and the normalised embedding, with the times.
// Targets: zero-shot >= 85%, linear probe >= 89%, trained within 15 min.
// Needs the dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist) or --dir.
import { createCLIP, type CLIP } from '../lib/models/clip.js';
import { resolveConfig } from '../lib/models/config.js';
import { FashionMnistDataset, FASHION_CLASSES, FASHION_TEMPLATES, FASHION_MNIST_DIR } from '../lib/data/fashion-mnist.js';
import { DataLoader } from '../lib/data/loader.js';
import { Trainer } from '../lib/train/trainer.js';
import { loadTrainedCLIP, saveModelWeights } from '../lib/train/checkpoint.js';
import { embedTexts } from '../lib/train/evaluate.js';
import { VisionTransformer } from '../lib/models/vit.js';
import { Tensor, tidy } from '../lib/tensor.js';
import { noGrad } from '../lib/autograd.js';
import * as ops from '../lib/ops/index.js';
import { l2Normalize } from '../lib/ops/norm.js';
import { linearProbe, type Features } from '../lib/probe/index.js';
import { splitValidation } from '../lib/probe/data.js';
import { trainBPE } from '../lib/tokenizer/train.js';
import { BYTE_ORDER, BYTE_TO_CHAR } from '../lib/tokenizer/bytes.js';
import { END_OF_WORD, EOT_TEXT, SOT_TEXT } from '../lib/tokenizer/bpe.js';
import { ClipTokenizer } from '../lib/tokenizer/tokenizer.js';
import { parseArgs } from '../lib/cli/args.js';

const L = 16;

function tokenizerFor(captions: string[]): ClipTokenizer {
  const merges = trainBPE(captions, { vocabSize: 700, minFrequency: 1 });
  const bytes = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]);
  return new ClipTokenizer({ tokens: [...bytes, ...bytes.map((c) => c + END_OF_WORD), ...merges.map(([a, b]) => a + b), SOT_TEXT, EOT_TEXT], merges, source: 'fashion captions' });
}

/**
 * Frozen features of the first n images, from one pass of the image tower: the pooled
 * representation before the projection ([n, width]) and the unit-length embedding ([n, embedDim]).
 */
function imageFeatures(model: CLIP, ds: FashionMnistDataset, n: number, chunk = 256): { pooled: Float32Array; embedding: Float32Array } {
  const visual = model.visual;
  if (!(visual instanceof VisionTransformer)) throw new Error('fashion-mnist bench: expects a ViT image tower');
  const W = visual.config.width, D = model.config.embedDim, R = ds.imageSize, plane = 3 * R * R;
  const pooled = new Float32Array(n * W), embedding = new Float32Array(n * D), pixels = new Float32Array(chunk * plane);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    for (let j = 0; j < m; j++) pixels.set(ds.image(s + j), j * plane);
    noGrad(() => tidy(() => {
      const p = visual.pooled(Tensor.from(pixels.subarray(0, m * plane), [m, 3, R, R], { device: model.device }));
      pooled.set(p.toArraySync() as Float32Array, s * W);
      embedding.set(l2Normalize(ops.matmul(p, visual.proj)).toArraySync() as Float32Array, s * D);
    }));
  }
  return { pooled, embedding };
}

interface ProbeReport { dim: number; lambda: number; valTop1: number; testTop1: number; seconds: number }

/**
 * lib/probe's protocol on one kind of feature: the L2 strength chosen on a validation split (a
 * fifth) of the training images, the classifier refitted on all of them, scored on the test set.
 * L-BFGS stops after `maxIter` iterations (sweep and refit): below lambda ~1e-3 the fits need ~1000
 * to converge while the validation accuracy there is flat to 0.1%; 300 picks the same lambda as
 * 1000 here and keeps each feature's probe under a minute on 2 cores.
 */
function probeOn(trX: Float32Array, trY: Uint8Array, teX: Float32Array, teY: Uint8Array, maxIter: number): ProbeReport {
  const t0 = performance.now(), dim = trX.length / trY.length;
  const all: Features = { x: trX, y: trY, n: trY.length, dim };
  const { train, val } = splitValidation(all, 0.2, 0);
  const r = linearProbe(train, val, FASHION_CLASSES.length, { x: teX, y: teY, n: teY.length, dim }, { maxIter });
  const valTop1 = r.sweep.find((p) => p.lambda === r.lambda)!.valAccuracy;
  return { dim, lambda: +r.lambda.toPrecision(3), valTop1, testTop1: r.testAccuracy!, seconds: +((performance.now() - t0) / 1000).toFixed(1) };
}

function zeroShot(model: CLIP, tok: ClipTokenizer, img: Float32Array, labels: Uint8Array): number {
  const D = model.config.embedDim, C = FASHION_CLASSES.length, T = FASHION_TEMPLATES.length;
  const caps = FASHION_CLASSES.flatMap((c) => FASHION_TEMPLATES.map((t) => t.replace('{}', c)));
  const txt = embedTexts(model, tok.tokenizeToArray(caps, { contextLength: L }), C * T, L);
  // Prompt ensembling: the mean of each class's template embeddings, renormalised.
  const cls = new Float32Array(C * D);
  for (let c = 0; c < C; c++) {
    for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) cls[c * D + d] += txt[(c * T + t) * D + d];
    const n = Math.hypot(...cls.subarray(c * D, (c + 1) * D));
    for (let d = 0; d < D; d++) cls[c * D + d] /= n;
  }
  let hits = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = -Infinity, arg = 0;
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += img[i * D + d] * cls[c * D + d];
      if (s > best) { best = s; arg = c; }
    }
    if (arg === labels[i]) hits++;
  }
  return hits / labels.length;
}

async function main() {
  const { flags } = parseArgs(process.argv.slice(2), {
    minutes: { type: 'number', default: 14, help: 'training time limit' },
    steps: { type: 'number', default: 3000, help: 'optimizer steps (the schedule length)' },
    'batch-size': { type: 'number', default: 128, help: 'batch size' },
    lr: { type: 'number', default: 2e-3, help: 'peak learning rate' },
    'probe-train': { type: 'number', default: 60000, help: 'training images for the linear probe (a fifth of them choose its L2 strength)' },
    'probe-iters': { type: 'number', default: 300, help: 'L-BFGS iterations at most per probe fit' },
    dir: { type: 'string', default: FASHION_MNIST_DIR, help: 'IDX directory' },
    save: { type: 'string', help: 'write the trained model here' },
    load: { type: 'string', help: 'evaluate this trained model instead of training' },
  });
  const dir = flags.dir as string;
  const train = new FashionMnistDataset({ dir, split: 'train', imageSize: 28 });
  const test = new FashionMnistDataset({ dir, split: 'test', imageSize: 28 });
  const captions = FASHION_CLASSES.flatMap((c) => FASHION_TEMPLATES.map((t) => t.replace('{}', c)));
  const tok = tokenizerFor(captions);
  const cfg = resolveConfig('tiny-vit');
  cfg.vision.imageSize = 28;
  cfg.text.vocabSize = tok.vocabSize;
  cfg.text.contextLength = L;
  const model = flags.load ? await loadTrainedCLIP(flags.load as string) : createCLIP(cfg, { seed: 0 });
  const data = new DataLoader(train, { batchSize: flags['batch-size'] as number, contextLength: L, tokenize: (c) => tok.tokenizeToArray(c, { contextLength: L }) });
  const trainer = new Trainer(model, { lr: flags.lr as number, warmup: 100, weightDecay: 0.1, gradClipNorm: 1 });
  const limit = (flags.minutes as number) * 60_000, t0 = performance.now();
  trainer.on('step', (m) => {
    if (performance.now() - t0 > limit) trainer.stop();
    if (m.step % 100 === 0) console.error(`step ${m.step}  loss ${m.loss.toFixed(3)}  ${m.samplesPerSec.toFixed(0)} samples/s  ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  });
  const r = flags.load ? { steps: 0, dataWaitFraction: 0 } : await trainer.fit(data, { steps: flags.steps as number });
  if (flags.save) await saveModelWeights(model, flags.save as string);
  const trainSeconds = (performance.now() - t0) / 1000;
  model.eval();
  const te = imageFeatures(model, test, test.length);
  const zs = zeroShot(model, tok, te.embedding, test.labels);
  const nProbe = Math.min(flags['probe-train'] as number, train.length);
  const tf = performance.now();
  const tr = imageFeatures(model, train, nProbe);
  const featureSeconds = (performance.now() - tf) / 1000;
  const trY = train.labels.subarray(0, nProbe);
  // Both frozen features are probed; the one with the better validation accuracy is the result.
  const probes = {
    pooled: probeOn(tr.pooled, trY, te.pooled, test.labels, flags['probe-iters'] as number),
    embedding: probeOn(tr.embedding, trY, te.embedding, test.labels, flags['probe-iters'] as number),
  };
  const chosen = probes.pooled.valTop1 >= probes.embedding.valTop1 ? 'pooled' : 'embedding';
  console.log(JSON.stringify({
    bench: 'fashion-mnist', zeroShotTop1: zs, linearProbeTop1: probes[chosen].testTop1, probeFeatures: chosen, targets: { zeroShot: 0.85, linearProbe: 0.89 },
    steps: r.steps, trainSeconds: +trainSeconds.toFixed(0), totalSeconds: +((performance.now() - t0) / 1000).toFixed(0),
    dataWaitFraction: +r.dataWaitFraction.toFixed(3), probeTrainImages: nProbe, featureSeconds: +featureSeconds.toFixed(1), probes,
  }));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
