// Feature-cache gradient accumulation equals one large batch; locking towers and WiSE-FT.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';
import { createCLIP, type CLIP } from '../lib/models/clip.js';
import { accumulateGradients } from '../lib/train/accumulate.js';
import { lockImage, lockText, snapshotWeights, wiseFt } from '../lib/train/lock.js';
import { Trainer } from '../lib/train/trainer.js';
import { BatchNorm2d } from '../lib/nn/layers.js';
import { DataLoader } from '../lib/data/loader.js';
import { Random } from '../lib/nn/random.js';
import { DEVICE, relErr } from './helpers.js';
import { MICRO_CONFIG, randomDataset, wordTokenize } from './train-helpers.js';

function batch(n: number, seed: number) {
  const r = new Random(seed);
  const pixels = Tensor.from(r.normalArray(n * 3 * 16 * 16, 1), [n, 3, 16, 16], { device: DEVICE });
  const tok = wordTokenize(8, 64)(Array.from({ length: n }, (_, i) => `red ${['circle', 'square', 'blue', 'big'][i % 4]} ${i} x${i * 7}`));
  return { pixels, tokens: Tensor.from(tok, [n, 8], { device: DEVICE }) };
}

function grads(model: CLIP): Map<string, Float32Array> {
  return new Map(model.namedParameters().filter(([, p]) => p.grad).map(([n, p]) => [n, p.grad!.toArraySync() as Float32Array]));
}

describe('gradient accumulation', () => {
  it('accum-freq 2 with half batches gives the gradient and loss of the full batch', () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 5, device: DEVICE });
    const full = batch(12, 1);
    const lossFull = accumulateGradients(model, [full]);
    const g1 = grads(model);
    for (const p of model.parameters()) { p.grad?.dispose(); p.grad = null; }
    const halves = [0, 6].map((s) => ({
      pixels: Tensor.from((full.pixels.toArraySync() as Float32Array).slice(s * 768, (s + 6) * 768), [6, 3, 16, 16], { device: DEVICE }),
      tokens: Tensor.from((full.tokens.toArraySync() as Int32Array).slice(s * 8, (s + 6) * 8), [6, 8], { device: DEVICE }),
    }));
    const lossAcc = accumulateGradients(model, halves);
    const g2 = grads(model);
    expect(Math.abs(lossAcc - lossFull)).toBeLessThan(1e-5 * Math.abs(lossFull));
    expect([...g2.keys()].sort()).toEqual([...g1.keys()].sort());
    for (const [n, g] of g1) expect(relErr(g2.get(n)!, g), n).toBeLessThan(1e-4);
    // the temperature's gradient is counted once, not once per micro-batch
    expect(relErr(g2.get('logit_scale')!, g1.get('logit_scale')!)).toBeLessThan(1e-4);
    // and it differs from a single half-batch's gradient (the test can tell the two apart)
    for (const p of model.parameters()) { p.grad?.dispose(); p.grad = null; }
    accumulateGradients(model, [halves[0]]);
    expect(relErr(grads(model).get('text_projection')!, g1.get('text_projection')!)).toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('the trainer with accumFreq 2 takes one optimizer step per two loader batches', async () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 5, device: DEVICE });
    const data = new DataLoader(randomDataset(32), { batchSize: 4, contextLength: 8, tokenize: wordTokenize(8, 64) });
    const t = new Trainer(model, { accumFreq: 2, lr: 1e-3 });
    const r = await t.fit(data, { epochs: 1 });
    expect(r.steps).toBe(4);
    expect(t.position).toEqual({ epoch: 0, cursor: 32 });
    model.dispose();
  });
});

describe('locking towers and WiSE-FT', () => {
  it('lockImage freezes the visual tower and its BatchNorm statistics; lockText the text tower', async () => {
    const model = createCLIP('tiny-rn', { seed: 2, device: DEVICE });
    const nImg = lockImage(model);
    expect(nImg).toBe(model.visual.parameters().length);
    expect(model.visual.parameters().every((p) => !p.requiresGrad)).toBe(true);
    const bns = model.visual.modules().filter((m) => m instanceof BatchNorm2d) as BatchNorm2d[];
    expect(bns.length).toBeGreaterThan(0);
    expect(bns.every((b) => b.frozen)).toBe(true);
    const running0 = bns[0].runningMean.toArraySync();
    const t = new Trainer(model, { lr: 1e-3 });
    const names = new Set(t.paramNames);
    expect([...names].some((n) => n.startsWith('visual.'))).toBe(false);
    expect(names.has('logit_scale')).toBe(true);
    // a training-mode forward with frozen BatchNorm leaves the running statistics alone
    model.train();
    const R = 64;
    const x = Tensor.from(new Random(1).normalArray(2 * 3 * R * R, 1), [2, 3, R, R], { device: DEVICE });
    model.encodeImage(x).dispose();
    expect(bns[0].runningMean.toArraySync()).toEqual(running0);
    model.dispose();

    const m2 = createCLIP(MICRO_CONFIG, { seed: 2, device: DEVICE });
    lockText(m2);
    expect(m2.text.parameters().every((p) => !p.requiresGrad)).toBe(true);
    expect(m2.visual.parameters().every((p) => p.requiresGrad)).toBe(true);
    m2.dispose();
  });

  it('wise-ft mixes original and fine-tuned weights: alpha 0 restores, alpha 0.5 averages', () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 3, device: DEVICE });
    const orig = snapshotWeights(model);
    const tuned = new Map<string, Float32Array>();
    const r = new Random(9);
    for (const [n, p] of model.stateDict()) {
      if (p.dtype !== 'float32') continue;
      const v = r.normalArray(p.size, 1);
      tuned.set(n, v);
      model.setTensor(n, v);
    }
    wiseFt(model, orig, 0.5);
    for (const [n, p] of model.stateDict()) {
      if (p.dtype !== 'float32') continue;
      const want = orig.get(n)!.map((o, i) => 0.5 * o + 0.5 * tuned.get(n)![i]);
      expect(relErr(p.toArraySync() as Float32Array, want), n).toBeLessThan(1e-6);
    }
    wiseFt(model, orig, 0);
    for (const [n, p] of model.stateDict()) if (p.dtype === 'float32') expect(p.toArraySync()).toEqual(orig.get(n));
    expect(() => wiseFt(model, orig, 1.5)).toThrow(/alpha/);
    model.dispose();
  });
});
