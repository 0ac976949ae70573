// Retrieval evaluation and the shapes zero-shot evaluation on trained and untrained models.
import { describe, expect, it } from 'vitest';
import { createCLIP } from '../lib/models/clip.js';
import { DataLoader } from '../lib/data/loader.js';
import { Trainer } from '../lib/train/trainer.js';
import { retrieval } from '../lib/train/evaluate.js';
import { lossCurveSvg } from '../lib/train/progress.js';
import { DEVICE } from './helpers.js';
import { MICRO_CONFIG, randomDataset, wordTokenize } from './train-helpers.js';

describe('retrieval', () => {
  it('recall rises from chance to near 1 once the model memorises 16 pairs', async () => {
    const ds = randomDataset(16);
    const tok = wordTokenize(8, 64);
    const model = createCLIP(MICRO_CONFIG, { seed: 11, device: DEVICE });
    const before = await retrieval(model, ds, 16, tok, 8);
    expect(before.n).toBe(16);
    expect(before.imageToTextR1).toBeLessThan(0.5);
    const t = new Trainer(model, { lr: 3e-3, warmup: 0, schedule: 'constant', weightDecay: 0 });
    await t.fit(new DataLoader(ds, { batchSize: 16, contextLength: 8, tokenize: tok }), { steps: 60 });
    const after = await retrieval(model, ds, 16, tok, 8);
    expect(after.imageToTextR1).toBeGreaterThan(0.8);
    expect(after.textToImageR1).toBeGreaterThan(0.8);
    expect(after.imageToTextR5).toBeGreaterThanOrEqual(after.imageToTextR1);
    model.dispose();
  });

  it('the loss plot is an SVG path through every step, later records replacing earlier ones', () => {
    const svg = lossCurveSvg([[1, 4], [2, 3], [3, 2.5], [3, 2]]);
    expect(svg.startsWith('<svg')).toBe(true);
    const d = /<path d="([^"]+)"/.exec(svg)![1];
    expect(d.split(/[ML]/).filter(Boolean).length).toBe(3);
  });
});
