// Linear probe: the objective's gradient against finite differences, L-BFGS against known minima,
// the fitted classifier against Newton's method in float64, and the lambda sweep's protocol.
import { describe, expect, it } from 'vitest';
import { minimizeLbfgs } from '../lib/probe/lbfgs.js';
import { fitLogisticRegression, logisticObjective, GemmObjective, type Features } from '../lib/probe/logreg.js';
import { sweepLambda, linearProbe } from '../lib/probe/sweep.js';
import { rng } from './helpers.js';

/** Gaussian-ish blobs: class c centred at a random point, unit-ish noise. */
function blobs(n: number, K: number, D: number, seed: number, spread = 0.6): Features {
  const r = rng(seed), c = rng(99);
  const centres = Array.from({ length: K }, () => Array.from({ length: D }, () => 2 * c() - 1));
  const x = new Float32Array(n * D), y: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = i % K;
    y.push(k);
    for (let d = 0; d < D; d++) x[i * D + d] = centres[k][d] + spread * (r() + r() + r() - 1.5);
  }
  return { x, y, n, dim: D };
}

describe('L-BFGS', () => {
  it('finds the minimum of the Rosenbrock function and of a quadratic', () => {
    const rosen = (p: Float64Array, g: Float64Array) => {
      const [a, b] = p;
      g[0] = -2 * (1 - a) - 400 * a * (b - a * a);
      g[1] = 200 * (b - a * a);
      return (1 - a) ** 2 + 100 * (b - a * a) ** 2;
    };
    const r = minimizeLbfgs(rosen, Float64Array.from([-1.2, 1]), { maxIter: 500, gradTol: 1e-9 });
    expect(r.x[0]).toBeCloseTo(1, 5);
    expect(r.x[1]).toBeCloseTo(1, 5);
    // sum_i i * (x_i - i)^2 has its minimum at x_i = i
    const quad = (p: Float64Array, g: Float64Array) => {
      let f = 0;
      p.forEach((v, i) => { f += (i + 1) * (v - i) ** 2; g[i] = 2 * (i + 1) * (v - i); });
      return f;
    };
    const q = minimizeLbfgs(quad, new Float64Array(20), { gradTol: 1e-10, fTol: 0 });
    q.x.forEach((v, i) => expect(v).toBeCloseTo(i, 7));
    expect(q.converged).toBe(true);
  });
});

describe('multinomial logistic regression', () => {
  it('gradient matches central finite differences', () => {
    const data = blobs(23, 3, 4, 1);
    const K = 3, size = K * 4 + K;
    const r = rng(5);
    const p = Float64Array.from({ length: size }, () => r() - 0.5);
    const g = new Float64Array(size), tmp = new Float64Array(size);
    logisticObjective(p, g, data, K, 0.3);
    const h = 1e-6;
    for (let j = 0; j < size; j++) {
      const a = Float64Array.from(p), b = Float64Array.from(p);
      a[j] += h;
      b[j] -= h;
      const fd = (logisticObjective(a, tmp, data, K, 0.3) - logisticObjective(b, tmp, data, K, 0.3)) / (2 * h);
      expect(g[j]).toBeCloseTo(fd, 6);
    }
  });

  it('reaches the optimum Newton\'s method finds (two classes, one feature, hand-sized)', () => {
    // Binary case with softmax over two classes: only w1 - w0 and b1 - b0 are identified, the L2
    // penalty splits them evenly, so w0 = -w1, b0 = -b1 (b is unpenalised, both biases start at 0).
    const data: Features = { x: Float32Array.from([-2, -1, -0.5, 0.3, 0.5, 1, 2, -0.2]), y: [0, 0, 1, 0, 1, 1, 1, 1], n: 8, dim: 1 };
    const lambda = 0.1;
    const m = fitLogisticRegression(data, 2, lambda, { gradTol: 1e-12 });
    // Newton on (w, c) with logit difference 2w x + 2c, penalty lambda * w^2 (two weights of size w).
    let w = 0, c = 0;
    for (let it = 0; it < 50; it++) {
      let gw = lambda * 2 * w, gc = 0, hww = 2 * lambda, hwc = 0, hcc = 0;
      for (let i = 0; i < 8; i++) {
        const x = data.x[i], p = 1 / (1 + Math.exp(-(2 * w * x + 2 * c))), r = (p - data.y[i]) / 8;
        gw += 2 * r * x; gc += 2 * r;
        const s = (4 * p * (1 - p)) / 8;
        hww += s * x * x; hwc += s * x; hcc += s;
      }
      const det = hww * hcc - hwc * hwc;
      w -= (hcc * gw - hwc * gc) / det;
      c -= (hww * gc - hwc * gw) / det;
    }
    expect(m.params[1]).toBeCloseTo(w, 6);
    expect(m.params[0]).toBeCloseTo(-w, 6);
    expect(m.params[3] - m.params[2]).toBeCloseTo(2 * c, 6);
  });

  it('separates blobs; rejects labels out of range', () => {
    const train = blobs(300, 4, 6, 2), test = blobs(200, 4, 6, 3);
    const m = fitLogisticRegression(train, 4, 1e-3);
    expect(m.accuracy(test)).toBeGreaterThan(0.9);
    expect(() => fitLogisticRegression({ ...train, y: Array.from(train.y, () => 7) }, 4, 1)).toThrow(/label 7 of row 0 is not a class in \[0, 4\)/);
  });
});

describe('the objective on the native gemm', () => {
  it('matches the float64 objective and gradient, and fits the same classifier', () => {
    const data = blobs(2003, 7, 37, 8, 1.5), K = 7, size = K * 37 + K;
    const r = rng(9);
    const p = Float64Array.from({ length: size }, () => 2 * (r() - 0.5));
    const g64 = new Float64Array(size), g32 = new Float64Array(size);
    const fast = new GemmObjective(data, K);
    try {
      const f64 = logisticObjective(p, g64, data, K, 0.01), f32 = fast.evaluate(p, g32, 0.01);
      expect(Math.abs(f32 - f64)).toBeLessThan(1e-5 * Math.abs(f64));
      let worst = 0, scale = 0;
      for (let j = 0; j < size; j++) {
        worst = Math.max(worst, Math.abs(g32[j] - g64[j]));
        scale = Math.max(scale, Math.abs(g64[j]));
      }
      expect(worst).toBeLessThan(1e-5 * scale);
      // Confident scores (true-class probabilities that underflow to 0) keep the loss finite.
      const big = p.map((v) => 300 * v);
      const b64 = logisticObjective(big, g64, data, K, 0), b32 = fast.evaluate(big, g32, 0);
      expect(Number.isFinite(b32)).toBe(true);
      expect(Math.abs(b32 - b64)).toBeLessThan(1e-5 * b64);
    } finally {
      fast.dispose();
    }
    const a = fitLogisticRegression(data, K, 1e-2, { gemm: true }), b = fitLogisticRegression(data, K, 1e-2, { gemm: false });
    let diff = 0, norm = 0;
    for (let j = 0; j < size; j++) {
      diff = Math.max(diff, Math.abs(a.params[j] - b.params[j]));
      norm = Math.max(norm, Math.abs(b.params[j]));
    }
    expect(diff).toBeLessThan(1e-3 * norm);
    expect(a.accuracy(data)).toBeCloseTo(b.accuracy(data), 3);
  });
});

describe('lambda sweep (the paper\'s protocol)', () => {
  it('starts from every second decade of 1e-6..1e6 and refines to 8 steps per decade around the best', () => {
    const train = blobs(120, 3, 5, 4, 1.2), val = blobs(90, 3, 5, 5, 1.2);
    const s = sweepLambda(train, val, 3, { maxIter: 200 });
    const exps = s.points.map((p) => Math.round(Math.log10(p.lambda) * 8) / 8);
    for (const e of [-6, -4, -2, 0, 2, 4, 6]) expect(exps).toContain(e);
    const bestExp = Math.log10(s.best);
    // The last refinement probed best +- 1/8 of a decade (where inside the bounds).
    for (const d of [-0.125, 0.125]) if (bestExp + d >= -6 && bestExp + d <= 6) expect(exps.some((e) => Math.abs(e - (bestExp + d)) < 1e-9)).toBe(true);
    const top = Math.max(...s.points.map((p) => p.valAccuracy));
    expect(s.points.find((p) => p.lambda === s.best)!.valAccuracy).toBe(top);
    const r = linearProbe(train, val, 3, blobs(90, 3, 5, 6, 1.2), { maxIter: 200 });
    expect(r.lambda).toBe(s.best);
    expect(r.testAccuracy!).toBeGreaterThan(0.6);
  });
});
