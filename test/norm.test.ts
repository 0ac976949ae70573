// layerNorm, l2Normalize and softmax against float64 references, gradients against central
// finite differences, and the errors for bad inputs.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';
import { addLayerNorm, layerNorm, l2Normalize, softmax } from '../lib/ops/norm.js';
import { add, mul } from '../lib/ops/elementwise.js';
import { transpose } from '../lib/ops/shape.js';
import { checkOp, expectClose, randArray, tensor, toF64, DEVICE } from './helpers.js';

function layerNormRef(x: Float64Array, w: Float64Array | null, b: Float64Array | null, d: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let mu = 0;
    for (let j = 0; j < d; j++) mu += x[r * d + j];
    mu /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x[r * d + j] - mu) ** 2;
    v /= d;
    const rs = 1 / Math.sqrt(v + eps);
    for (let j = 0; j < d; j++) y[r * d + j] = (x[r * d + j] - mu) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
  }
  return y;
}

function l2Ref(x: Float64Array, d: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[r * d + j] ** 2;
    const n = Math.max(Math.sqrt(s), eps);
    for (let j = 0; j < d; j++) y[r * d + j] = x[r * d + j] / n;
  }
  return y;
}

/** Softmax over the last dim of [batch, sq, sk] with causal visibility and an additive mask. */
function softmaxRef(x: Float64Array, sq: number, sk: number, causal: boolean, mask: Float64Array | null): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / sk; r++) {
    const i = r % sq;
    const vis = causal ? Math.min(sk, Math.max(0, i + sk - sq + 1)) : sk;
    const t: number[] = [];
    for (let j = 0; j < vis; j++) t.push(x[r * sk + j] + (mask ? mask[i * sk + j] : 0));
    const m = Math.max(...t);
    if (vis === 0 || m === -Infinity) continue;
    const e = t.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    for (let j = 0; j < vis; j++) y[r * sk + j] = e[j] / s;
  }
  return y;
}

describe('layerNorm', () => {
  // [300, 7] has enough rows for the weight gradients to be summed from several partial sums.
  const cases: number[][] = [[3, 5], [2, 3, 7], [4, 1], [1, 17], [33], [300, 7]];
  for (const shape of cases) {
    it(`matches the reference and finite differences for ${JSON.stringify(shape)}`, () => {
      const d = shape[shape.length - 1];
      checkOp({
        shapes: [shape, [d], [d]],
        op: ([x, w, b]) => layerNorm(x, w, b),
        ref: ([x, w, b]) => layerNormRef(x, w, b, d, 1e-5),
        seed: shape.length * 10 + d,
      });
    });
  }

  it('works without weight and bias, and with eps', () => {
    checkOp({
      shapes: [[5, 6]],
      op: ([x]) => layerNorm(x, null, null, 1e-3),
      ref: ([x]) => layerNormRef(x, null, null, 6, 1e-3),
    });
  });

  it('handles a wide row (768) with a large mean accurately', () => {
    const x = randArray(4 * 768, 5).map((v) => Math.fround(100 + v));
    const w = randArray(768, 6), b = randArray(768, 7);
    const y = layerNorm(tensor(x, [4, 768]), tensor(w, [768]), tensor(b, [768]));
    expectClose(toF64(y), layerNormRef(x, w, b, 768, 1e-5), 2e-5, 'layerNorm');
  });

  it('reads a non-contiguous input', () => {
    const x = randArray(6 * 5, 8);
    const xt = transpose(tensor(x, [6, 5])); // [5, 6] view
    const w = randArray(6, 9), b = randArray(6, 10);
    const y = layerNorm(xt, tensor(w, [6]), tensor(b, [6]));
    const xc = new Float64Array(30);
    for (let i = 0; i < 5; i++) for (let j = 0; j < 6; j++) xc[i * 6 + j] = x[j * 5 + i];
    expectClose(toF64(y), layerNormRef(xc, w, b, 6, 1e-5), 1e-5);
  });

  it('rejects bad inputs with the op and shapes in the message', () => {
    const x = Tensor.zeros([2, 4], { device: DEVICE });
    expect(() => layerNorm(x, Tensor.zeros([3], { device: DEVICE }), null)).toThrow(/layerNorm: weight float32\[3\] must be \[4\].*float32\[2,4\]/);
    expect(() => layerNorm(x, null, Tensor.zeros([4, 1], { device: DEVICE }))).toThrow(/layerNorm: bias/);
    expect(() => layerNorm(Tensor.zeros([2, 4], { dtype: 'int32', device: DEVICE }), null, null)).toThrow(/layerNorm: input must be float32, got int32\[2,4\]/);
    expect(() => layerNorm(Tensor.zeros([], { device: DEVICE }), null, null)).toThrow(/layerNorm: input must have at least one dimension/);
  });
});

describe('addLayerNorm (the residual add fused into the norm)', () => {
  // Both outputs in one checked function: 0.7 * (x + r) + layerNorm(x + r).
  for (const [rows, d] of [[3, 5], [10, 130], [7, 33]]) {
    it(`[${rows},${d}]: the sum and its norm, and gradients through both to x, r, w and b`, () => {
      checkOp({
        shapes: [[rows, d], [rows, d], [d], [d]],
        op: ([x, r, w, b]) => {
          const { sum, normed } = addLayerNorm(x, r, w, b);
          return add(mul(sum, 0.7), normed);
        },
        ref: ([x, r, w, b]) => {
          const s = x.map((v, i) => v + r[i]);
          const y = layerNormRef(s, w, b, d, 1e-5);
          return y.map((v, i) => v + 0.7 * s[i]);
        },
        fwdTol: 2e-5,
        gradTol: 2e-3,
      });
    });
  }

  it('equals add then layerNorm, bit for bit, on a non-contiguous residual', () => {
    const x = tensor(randArray(24, 3), [4, 6]);
    const rt = tensor(randArray(24, 4), [6, 4]);
    const r = transpose(rt);
    const w = tensor(randArray(6, 5), [6]), b = tensor(randArray(6, 6), [6]);
    const { sum, normed } = addLayerNorm(x, r, w, b);
    const s2 = add(x, r);
    expect(Array.from(toF64(sum))).toEqual(Array.from(toF64(s2)));
    expect(Array.from(toF64(normed))).toEqual(Array.from(toF64(layerNorm(s2, w, b))));
  });

  it('rejects a residual of another shape', () => {
    const x = Tensor.zeros([2, 4], { device: DEVICE });
    expect(() => addLayerNorm(x, Tensor.zeros([2, 3], { device: DEVICE }), null, null)).toThrow(/addLayerNorm: residual float32\[2,3\] must have the input's shape float32\[2,4\]/);
  });
});

describe('l2Normalize', () => {
  for (const shape of [[3, 5], [2, 2, 9], [1, 1], [7]]) {
    it(`matches the reference and finite differences for ${JSON.stringify(shape)}`, () => {
      const d = shape[shape.length - 1];
      checkOp({
        shapes: [shape],
        op: ([x]) => l2Normalize(x),
        ref: ([x]) => l2Ref(x, d, 1e-12),
        seed: 3 + d,
      });
    });
  }

  it('uses eps as the denominator for rows shorter than eps (with its gradient)', () => {
    // Row 0 has norm ~0.05 < eps = 0.1, row 1 a norm ~1.3 > eps.
    const x = Float64Array.from([0.03, -0.02, 0.03, 0.7, -0.8, 0.6]);
    checkOp({
      shapes: [[2, 3]],
      inputs: [x],
      op: ([t]) => l2Normalize(t, 0.1),
      ref: ([t]) => l2Ref(t, 3, 0.1),
    });
  });

  it('rejects bad inputs', () => {
    expect(() => l2Normalize(Tensor.zeros([2], { dtype: 'int32', device: DEVICE }))).toThrow(/l2Normalize: input must be float32/);
    expect(() => l2Normalize(Tensor.zeros([2], { device: DEVICE }), -1)).toThrow(/l2Normalize: eps/);
  });
});

describe('softmax', () => {
  const cases: { shape: number[]; causal: boolean; mask?: boolean }[] = [
    { shape: [3, 5], causal: false },
    { shape: [13], causal: false },
    { shape: [2, 4, 4], causal: true },
    { shape: [2, 3, 6], causal: true }, // Sq < Sk: query i sees keys up to i + 3
    { shape: [2, 5, 3], causal: true }, // Sq > Sk: the first two rows see nothing
    { shape: [2, 2, 3, 5], causal: false, mask: true },
    { shape: [3, 4, 7], causal: true, mask: true },
  ];
  for (const c of cases) {
    it(`matches the reference and finite differences for ${JSON.stringify(c.shape)} causal=${c.causal} mask=${!!c.mask}`, () => {
      const sk = c.shape[c.shape.length - 1];
      const sq = c.shape.length >= 2 ? c.shape[c.shape.length - 2] : 1;
      const shapes = c.mask ? [c.shape, [sq, sk]] : [c.shape];
      const inputs = shapes.map((s, i) => randArray(s.reduce((a, b) => a * b, 1), 40 + i, -2, 2));
      if (c.mask) {
        // Hide a few positions entirely; the rest get a finite additive bias.
        inputs[1][1] = -Infinity;
        inputs[1][sk + 2] = -Infinity;
      }
      checkOp({
        shapes,
        inputs,
        op: (ts) => softmax(ts[0], { causal: c.causal, mask: ts[1] ?? null }),
        ref: (xs) => softmaxRef(xs[0], sq, sk, c.causal, xs[1] ?? null),
      });
    });
  }

  it('gives zeros for a row whose mask hides every key', () => {
    const mask = Tensor.from(new Float32Array([-Infinity, -Infinity, 0, 0]), [2, 2], { device: DEVICE });
    const y = softmax(tensor([1, 2, 3, 4], [2, 2]), { mask });
    const out = toF64(y);
    expect(Array.from(out.slice(0, 2))).toEqual([0, 0]);
    expectClose(out.slice(2), [1 / (1 + Math.E), Math.E / (1 + Math.E)], 1e-6);
  });

  it('is stable for large logits and handles wide rows', () => {
    // Rounded to float32 first, so that the reference sees exactly the values the kernel sees.
    const x = randArray(3 * 1000, 11, -50, 50).map((v, i) => Math.fround(i % 7 === 0 ? v + 1000 : v));
    const y = softmax(tensor(x, [3, 1000]));
    expectClose(toF64(y), softmaxRef(x, 1, 1000, false, null), 1e-5);
  });

  it('rejects bad inputs', () => {
    const x = Tensor.zeros([2, 3, 4], { device: DEVICE });
    expect(() => softmax(x, { mask: Tensor.zeros([4, 3], { device: DEVICE }) })).toThrow(/softmax: mask float32\[4,3\] must be \[3,4\] for input float32\[2,3,4\]/);
    expect(() => softmax(Tensor.zeros([2], { dtype: 'uint8', device: DEVICE }))).toThrow(/softmax: input must be float32/);
  });
});
