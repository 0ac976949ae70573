// The ViT's pre-projection representation (what a linear probe may read): encodeImage is exactly
// pooled @ proj, and pooled is ln_post's output (per row: zero mean, unit variance before its gain
// and bias).
import { describe, expect, it } from 'vitest';
import { createCLIP } from '../lib/models/clip.js';
import { VisionTransformer } from '../lib/models/vit.js';
import { fillFrom } from '../lib/ops/inplace.js';
import { noGrad } from '../lib/autograd.js';
import { tidy } from '../lib/tensor.js';
import { DEVICE, randArray, tensor, toF64 } from './helpers.js';

describe('VisionTransformer.pooled', () => {
  it('is the representation the projection maps to the embedding, after ln_post', () => {
    const model = createCLIP('tiny-vit', { seed: 3, device: DEVICE });
    const visual = model.visual as VisionTransformer;
    const W = visual.config.width, E = model.config.embedDim, R = visual.config.imageSize, B = 3;
    // A non-trivial ln_post gain and bias, so that the check below sees them.
    const gain = randArray(W, 5, 0.5, 2), bias = randArray(W, 6, -1, 1);
    fillFrom(visual.lnPost.weight, Float32Array.from(gain));
    fillFrom(visual.lnPost.bias, Float32Array.from(bias));
    noGrad(() => tidy(() => {
      const px = tensor(randArray(B * 3 * R * R, 7), [B, 3, R, R]);
      const pooled = visual.pooled(px);
      expect(pooled.shape).toEqual([B, W]);
      const p = toF64(pooled), proj = toF64(visual.proj), emb = toF64(model.encodeImage(px));
      for (let b = 0; b < B; b++) {
        for (let e = 0; e < E; e++) {
          let s = 0;
          for (let w = 0; w < W; w++) s += p[b * W + w] * proj[w * E + e];
          expect(emb[b * E + e]).toBeCloseTo(s, 4);
        }
        const z = Array.from({ length: W }, (_, w) => (p[b * W + w] - bias[w]) / gain[w]);
        const mean = z.reduce((a, v) => a + v, 0) / W, variance = z.reduce((a, v) => a + (v - mean) ** 2, 0) / W;
        expect(Math.abs(mean)).toBeLessThan(1e-4);
        expect(variance).toBeCloseTo(1, 3);
      }
    }));
    expect(() => visual.pooled(tensor(new Float64Array(2 * R * R), [2, 1, R, R]))).toThrow(/expected pixels \[B,3,H,W\]/);
    model.dispose();
  });
});
