// Model FLOPs: hand-counted small configurations, a count taken from the instantiated model's own
// parameter shapes, and the published figures (open_clip's docs/model_profile.csv, ../shared/ANCHORS.md).
import { describe, expect, it } from 'vitest';
import { createCLIP } from '../lib/models/clip.js';
import { resolveConfig, type VitConfig } from '../lib/models/config.js';
import { forwardFlops, imageFlops, resnetFlops, textFlops, trainStepFlops, vitFlops } from '../lib/train/flops.js';

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

describe('flops: hand counts', () => {
  it('tiny-vit image tower: patch conv + 3 blocks of 65 tokens + projection', () => {
    // 32x32 image, patch 4 -> 64 patches + class token = 65 tokens, width 96, MLP 384, embed 64
    const conv = 64 * (3 * 4 * 4) * 96; // 294,912
    const block = 4 * 65 * 96 * 96 + 2 * 65 * 96 * 384 + 2 * 65 * 65 * 96; // 2,396,160 + 4,792,320 + 811,200
    const macs = conv + 3 * block + 96 * 64;
    expect(macs).toBe(24_300_096);
    expect(imageFlops(resolveConfig('tiny-vit'))).toBe(2 * macs);
  });

  it('tiny-vit text tower at 12 tokens: causal attention counts the 78 pairs on and below the diagonal', () => {
    const t = resolveConfig('tiny-vit').text; // width 96, MLP 384, 3 layers, embed 64
    const block = 4 * 12 * 96 * 96 + 2 * 12 * 96 * 384 + 2 * 78 * 96;
    expect(textFlops(t, 64, 12)).toBe(2 * (3 * block + 96 * 64));
    // the default is the whole context (32)
    expect(textFlops(t, 64)).toBe(2 * (3 * (4 * 32 * 96 * 96 + 2 * 32 * 96 * 384 + 2 * 528 * 96) + 96 * 64));
  });

  it('tiny-rn: stem, four single-block stages, attention pooling', () => {
    const stem = 32 * 32 * 3 * 8 * 9 + 32 * 32 * 8 * 8 * 9 + 32 * 32 * 8 * 16 * 9; // at 32x32 after the stride-2 conv
    const layer1 = 16 * 16 * (16 * 16 + 16 * 16 * 9) + 16 * 16 * 16 * 64 * 2; // conv1, conv2; conv3 and downsample at 16x16
    // stages 2-4: conv1 and conv2 before the pool, conv3 and the downsample after it
    const stage = (h: number, cin: number, p: number) => h * h * (cin * p + p * p * 9) + (h / 2) ** 2 * (p * 4 * p + cin * 4 * p);
    const pool = 512 * 512 + 2 * 5 * 512 * 512 + 2 * 5 * 512 + 512 * 64; // q (mean token), k and v (5 tokens), attention, c_proj
    const macs = stem + layer1 + stage(16, 64, 32) + stage(8, 128, 64) + stage(4, 256, 128) + pool;
    expect(macs).toBe(17_101_824);
    expect(imageFlops(resolveConfig('tiny-rn'))).toBe(2 * macs);
  });

  it('the logits matrix and the training step of a batch', () => {
    const cfg = resolveConfig('tiny-vit');
    const f = forwardFlops(cfg, 5, { textLength: 7 });
    expect(f.image).toBe(5 * imageFlops(cfg));
    expect(f.text).toBe(5 * textFlops(cfg.text, 64, 7));
    expect(f.logits).toBe(2 * 5 * 5 * 64);
    expect(f.total).toBe(f.image + f.text + f.logits);
    const s = trainStepFlops(cfg, 5, { textLength: 7 });
    // backward = 2x forward, except the patch embedding's gradient with respect to the pixels
    expect(s.image).toBe(3 * f.image - 5 * 2 * 294_912);
    expect(s.text).toBe(3 * f.text);
    expect(s.logits).toBe(3 * f.logits);
    expect(s.total).toBe(s.image + s.text + s.logits);
  });
});

describe('flops: from the model\'s parameter shapes', () => {
  // Every weight element of a linear layer is one multiply-add per token; attention adds 2 * pairs * width per layer.
  const linearWeights = (params: [string, { shape: number[] }][], prefix: string) =>
    params.filter(([n, p]) => n.startsWith(prefix) && /(in_proj_weight|out_proj\.weight|c_fc\.weight|c_proj\.weight)$/.test(n)).reduce((a, [, p]) => a + numel(p.shape), 0);

  for (const name of ['tiny-vit', 'small-vit']) {
    it(`${name}: both towers`, () => {
      const cfg = resolveConfig(name);
      const v = cfg.vision as VitConfig;
      const model = createCLIP(cfg, { device: 'cpu' });
      try {
        const params = model.namedParameters().map(([n, p]) => [n, { shape: [...p.shape] }] as [string, { shape: number[] }]);
        const get = (n: string) => params.find(([k]) => k === n)![1].shape;
        const patches = (v.imageSize / v.patchSize) ** 2, S = get('visual.positional_embedding')[0];
        expect(S).toBe(patches + 1);
        const img = patches * numel(get('visual.conv1.weight')) + S * linearWeights(params, 'visual.transformer.')
          + v.layers * 2 * S * S * v.width + numel(get('visual.proj'));
        expect(imageFlops(cfg)).toBe(2 * img);
        const L = 9;
        const txt = L * linearWeights(params, 'transformer.') + cfg.text.layers * 2 * ((L * (L + 1)) / 2) * cfg.text.width + numel(get('text_projection'));
        expect(textFlops(cfg.text, cfg.embedDim, L)).toBe(2 * txt);
      } finally {
        model.dispose();
      }
    });
  }
});

describe('flops: published figures', () => {
  it('ViT-B/32 image forward at 224 is 4.41 GMACs (8.82 GFLOP)', () => {
    const cfg = resolveConfig('ViT-B-32');
    expect(imageFlops(cfg)).toBe(2 * 4_408_811_520);
    expect((imageFlops(cfg) / 1e9).toFixed(2)).toBe('8.82');
  });

  it('open_clip\'s image GFLOPs of the ViTs', () => {
    const published: [string, string][] = [['ViT-B/16', '35.13'], ['ViT-L/14', '162.03'], ['ViT-H/14', '334.59'], ['ViT-L/14@336px', '381.92']];
    for (const [name, g] of published) expect((imageFlops(resolveConfig(name)) / 1e9).toFixed(2), name).toBe(g);
  });

  it('open_clip\'s text GFLOPs count the full causal square; the masked half is the difference', () => {
    for (const [name, g] of [['ViT-B/32', '5.96'], ['ViT-L/14', '13.30'], ['ViT-H/14', '47.09']] as const) {
      const t = resolveConfig(name).text;
      const masked = t.layers * 2 * ((77 * 76) / 2) * t.width; // pairs above the diagonal, MACs of both attention matmuls
      expect(((textFlops(t, resolveConfig(name).embedDim) + 2 * masked) / 1e9).toFixed(2), name).toBe(g);
    }
  });

  it('open_clip\'s ResNet GFLOPs come from an attention pool that queried every position', () => {
    // Their profile ran all H*W+1 queries (the original code) and kept the first; this count, like
    // the model here, queries the mean token only. Adding back the other queries' q projection,
    // attention and output projection gives the published figure.
    for (const [name, g] of [['RN50', '12.22'], ['RN101', '19.54'], ['RN50x4', '42.56'], ['RN50x16', '149.39'], ['RN50x64', '529.11']] as const) {
      const cfg = resolveConfig(name);
      if (cfg.vision.kind !== 'resnet') throw new Error('expected a ResNet');
      const C = cfg.vision.width * 32, T = (Math.floor(cfg.vision.imageSize / 32)) ** 2 + 1;
      const extra = (T - 1) * C * C + 2 * (T * T - T) * C + (T - 1) * C * cfg.embedDim;
      expect(((resnetFlops(cfg.vision, cfg.embedDim) + 2 * extra) / 1e9).toFixed(2), name).toBe(g);
    }
  });

  it('a ViT-B/32 training step at batch 256 with 20-token captions', () => {
    const cfg = resolveConfig('ViT-B/32');
    const text20 = 2 * (12 * (4 * 20 * 512 * 512 + 2 * 20 * 512 * 2048 + 2 * 210 * 512) + 512 * 512);
    expect(text20).toBe(2 * 757_817_344);
    const s = trainStepFlops(cfg, 256, { textLength: 20 });
    expect(s.text).toBe(3 * 256 * text20);
    expect(s.image).toBe(256 * (3 * 2 * 4_408_811_520 - 2 * 115_605_504));
    expect(s.logits).toBe(3 * 2 * 256 * 256 * 512);
    // 30.77 GFLOP per pair; at 77 tokens 43.89, where ANCHORS.md's 3 x (8.82 + 5.96) = 44.34 also
    // counts the masked half of causal attention and the pixels' gradient through the patch conv
    expect(s.total / 256 / 1e9).toBeCloseTo(30.769, 3);
    expect(trainStepFlops(cfg, 256).total / 256 / 1e9).toBeCloseTo(43.885, 3);
  });

  it('non-square ViT inputs count their own patch grid', () => {
    const v = { ...(resolveConfig('ViT-B/32').vision as VitConfig), imageWidth: 320 }; // 7 x 10 patches
    const S = 71;
    expect(vitFlops(v, 512)).toBe(2 * (70 * 3072 * 768 + 12 * (4 * S * 768 * 768 + 2 * S * 768 * 3072 + 2 * S * S * 768) + 768 * 512));
  });
});

describe('flops: bad input', () => {
  it('names the problem', () => {
    const cfg = resolveConfig('tiny-vit');
    expect(() => textFlops(cfg.text, 64, 33)).toThrow(/text length 33 exceeds the context length 32/);
    expect(() => textFlops(cfg.text, 64, 0)).toThrow(/text length must be a positive integer, got 0/);
    expect(() => forwardFlops(cfg, 2.5)).toThrow(/batch must be a positive integer, got 2.5/);
    expect(() => trainStepFlops(cfg, 4, { textLength: 40 })).toThrow(/exceeds the context length/);
  });
});
