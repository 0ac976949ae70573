// `npm run bench -- fashion-mnist [--minutes M] [--steps N]`: trains a small CLIP on Fashion-MNIST
// with captions made from class names and templates (labels are never used as targets), then
// prints zero-shot top-1 on the 10,000 test images and a linear probe's top-1 on the frozen image
// features, with the training time. Targets: zero-shot >= 85%, linear probe >= 89%, within 15 min.
// Needs the dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist) or --dir.
import { createCLIP, type CLIP } from '../lib/models/clip.js';
import { resolveConfig } from '../lib/models/config.js';
import { FashionMnistDataset, FASHION_CLASSES, FASHION_TEMPLATES, FASHION_MNIST_DIR } from '../lib/data/fashion-mnist.js';
import { DataLoader } from '../lib/data/loader.js';
import { Trainer } from '../lib/train/trainer.js';
import { loadTrainedCLIP, saveModelWeights } from '../lib/train/checkpoint.js';
import { embedImages, embedTexts } from '../lib/train/evaluate.js';
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

function allImages(ds: FashionMnistDataset, n: number): Float32Array {
  const R = ds.imageSize, out = new Float32Array(n * 3 * R * R);
  for (let i = 0; i < n; i++) out.set(ds.image(i), i * 3 * R * R);
  return out;
}

/** Multinomial logistic regression on fixed features (full-batch gradient descent with momentum, L2). */
function linearProbe(xTr: Float32Array, yTr: Uint8Array, xTe: Float32Array, yTe: Uint8Array, D: number, C: number, init: Float32Array, epochs = 500): number {
  // Starts from the zero-shot classifier (class embeddings, scaled as the logit scale would), so
  // the fitted probe begins where zero-shot is and gradient descent on the labels refines it.
  const nTr = yTr.length;
  const W = new Float64Array(C * (D + 1)), V = new Float64Array(W.length);
  for (let c = 0; c < C; c++) for (let d = 0; d < D; d++) W[c * (D + 1) + d] = 30 * init[c * D + d];
  const lr = 4, mom = 0.9, l2 = 1e-5;
  const p = new Float64Array(C);
  for (let ep = 0; ep < epochs; ep++) {
    const G = new Float64Array(W.length);
    for (let i = 0; i < nTr; i++) {
      let mx = -Infinity;
      for (let c = 0; c < C; c++) {
        let z = W[c * (D + 1) + D];
        for (let d = 0; d < D; d++) z += W[c * (D + 1) + d] * xTr[i * D + d];
        p[c] = z;
        mx = Math.max(mx, z);
      }
      let s = 0;
      for (let c = 0; c < C; c++) s += (p[c] = Math.exp(p[c] - mx));
      for (let c = 0; c < C; c++) {
        const g = p[c] / s - (c === yTr[i] ? 1 : 0);
        for (let d = 0; d < D; d++) G[c * (D + 1) + d] += g * xTr[i * D + d];
        G[c * (D + 1) + D] += g;
      }
    }
    for (let k = 0; k < W.length; k++) {
      V[k] = mom * V[k] - lr * (G[k] / nTr + l2 * W[k]);
      W[k] += V[k];
    }
  }
  let hits = 0;
  for (let i = 0; i < yTe.length; i++) {
    let best = -Infinity, arg = 0;
    for (let c = 0; c < C; c++) {
      let z = W[c * (D + 1) + D];
      for (let d = 0; d < D; d++) z += W[c * (D + 1) + d] * xTe[i * D + d];
      if (z > best) { best = z; arg = c; }
    }
    if (arg === yTe[i]) hits++;
  }
  return hits / yTe.length;
}

function zeroShot(model: CLIP, tok: ClipTokenizer, img: Float32Array, labels: Uint8Array): { acc: number; cls: Float32Array } {
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
  return { acc: hits / labels.length, cls };
}

async function main() {
  const { flags } = parseArgs(process.argv.slice(2), {
    minutes: { type: 'number', default: 14, help: 'training time limit' },
    steps: { type: 'number', default: 2400, help: 'optimizer steps (the schedule length)' },
    'batch-size': { type: 'number', default: 128, help: 'batch size' },
    lr: { type: 'number', default: 2e-3, help: 'peak learning rate' },
    'probe-train': { type: 'number', default: 20000, help: 'training images for the linear probe' },
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
  const D = cfg.embedDim;
  const teImg = embedImages(model, allImages(test, test.length), test.length, 28);
  const { acc: zs, cls } = zeroShot(model, tok, teImg, test.labels);
  const nProbe = Math.min(flags['probe-train'] as number, train.length);
  const trImg = embedImages(model, allImages(train, nProbe), nProbe, 28);
  const probe = linearProbe(trImg, train.labels.subarray(0, nProbe), teImg, test.labels, D, 10, cls);
  console.log(JSON.stringify({
    bench: 'fashion-mnist', zeroShotTop1: zs, linearProbeTop1: probe, targets: { zeroShot: 0.85, linearProbe: 0.89 },
    steps: r.steps, trainSeconds: +trainSeconds.toFixed(0), totalSeconds: +((performance.now() - t0) / 1000).toFixed(0),
    dataWaitFraction: +r.dataWaitFraction.toFixed(3), probeTrainImages: nProbe,
  }));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
