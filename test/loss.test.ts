// crossEntropy and clipLoss against float64 references, with finite-difference gradients on small
// shapes and analytic float64 gradients on shapes large enough to need several tiles.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';
import { clipLoss, crossEntropy } from '../lib/ops/loss.js';
import { checkOp, expectClose, randArray, tensor, toF64, DEVICE } from './helpers.js';

function ceRef(x: Float64Array, labels: number[], C: number): Float64Array {
  const N = labels.length;
  let tot = 0;
  for (let i = 0; i < N; i++) {
    const row = Array.from(x.slice(i * C, (i + 1) * C));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    tot += lse - row[labels[i]];
  }
  return Float64Array.of(tot / N);
}

function normalizeRows(x: Float64Array, D: number): { y: Float64Array; norms: Float64Array } {
  const N = x.length / D;
  const y = new Float64Array(x.length), norms = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += x[i * D + j] ** 2;
    norms[i] = Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < D; j++) y[i * D + j] = x[i * D + j] / norms[i];
  }
  return { y, norms };
}

/** The naive loss: normalise, the N x N logits, cross-entropy over rows and over columns. */
function clipLogits(img: Float64Array, txt: Float64Array, s: number, D: number) {
  const N = img.length / D;
  const I = normalizeRows(img, D), T = normalizeRows(txt, D);
  const L = new Float64Array(N * N);
  for (let i = 0; i < N; i++)
    for (let j = 0; j < N; j++) {
      let dot = 0;
      for (let k = 0; k < D; k++) dot += I.y[i * D + k] * T.y[j * D + k];
      L[i * N + j] = Math.exp(s) * dot;
    }
  return { N, I, T, L };
}

function lse(vals: number[]): number {
  const m = Math.max(...vals);
  return m + Math.log(vals.reduce((a, v) => a + Math.exp(v - m), 0));
}

function clipRef(img: Float64Array, txt: Float64Array, s: number, D: number): number {
  const { N, L } = clipLogits(img, txt, s, D);
  let rows = 0, cols = 0;
  for (let i = 0; i < N; i++) {
    rows += lse(Array.from(L.slice(i * N, (i + 1) * N))) - L[i * N + i];
    cols += lse(Array.from({ length: N }, (_, r) => L[r * N + i])) - L[i * N + i];
  }
  return (rows / N + cols / N) / 2;
}

/** Analytic float64 gradients of the reference (through the normalisation). */
function clipGradRef(img: Float64Array, txt: Float64Array, s: number, D: number) {
  const { N, I, T, L } = clipLogits(img, txt, s, D);
  const lr = Array.from({ length: N }, (_, i) => lse(Array.from(L.slice(i * N, (i + 1) * N))));
  const lc = Array.from({ length: N }, (_, j) => lse(Array.from({ length: N }, (_, r) => L[r * N + j])));
  const G = new Float64Array(N * N);
  let ds = 0;
  for (let i = 0; i < N; i++)
    for (let j = 0; j < N; j++) {
      const L_ = L[i * N + j];
      G[i * N + j] = (Math.exp(L_ - lr[i]) + Math.exp(L_ - lc[j]) - (i === j ? 2 : 0)) / (2 * N);
      ds += G[i * N + j] * L_;
    }
  const back = (self: typeof I, other: typeof T, transposed: boolean): Float64Array => {
    const dx = new Float64Array(N * D);
    for (let i = 0; i < N; i++) {
      const dy = new Float64Array(D);
      for (let j = 0; j < N; j++) {
        const g = transposed ? G[j * N + i] : G[i * N + j];
        for (let k = 0; k < D; k++) dy[k] += Math.exp(s) * g * other.y[j * D + k];
      }
      let c = 0;
      for (let k = 0; k < D; k++) c += dy[k] * self.y[i * D + k];
      for (let k = 0; k < D; k++) dx[i * D + k] = (dy[k] - self.y[i * D + k] * c) / self.norms[i];
    }
    return dx;
  };
  return { dimg: back(I, T, false), dtxt: back(T, I, true), ds };
}

describe('crossEntropy', () => {
  for (const [N, C] of [[4, 5], [1, 1], [7, 13], [3, 100]]) {
    it(`matches the reference and finite differences for [${N},${C}]`, () => {
      const labels = Array.from({ length: N }, (_, i) => (i * 7 + 3) % C);
      const lt = Tensor.from(Int32Array.from(labels), [N], { device: DEVICE });
      checkOp({
        shapes: [[N, C]],
        op: ([x]) => crossEntropy(x, lt),
        ref: ([x]) => ceRef(x, labels, C),
        seed: N * C,
      });
      lt.dispose();
    });
  }

  it('is stable for large logits', () => {
    const x = Float64Array.from([1000, 0, -1000, 500, 501, 502].map(Math.fround));
    const y = crossEntropy(tensor(x, [2, 3]), Tensor.from(Int32Array.of(1, 2), [2], { device: DEVICE }));
    expectClose(toF64(y), ceRef(x, [1, 2], 3), 1e-6);
  });

  it('rejects bad inputs naming the op and shapes', () => {
    const x = Tensor.zeros([3, 5], { device: DEVICE });
    expect(() => crossEntropy(x, Tensor.from(Int32Array.of(0, 1), [2], { device: DEVICE }))).toThrow(/crossEntropy: labels int32\[2\] must be \[3\] for logits float32\[3,5\]/);
    expect(() => crossEntropy(x, Tensor.zeros([3], { device: DEVICE }))).toThrow(/crossEntropy: labels must be int32, got float32\[3\]/);
    expect(() => crossEntropy(Tensor.zeros([15], { device: DEVICE }), Tensor.from(Int32Array.of(0), [1], { device: DEVICE }))).toThrow(/crossEntropy: logits must have 2 dimensions/);
    if (DEVICE === 'cpu') {
      expect(() => crossEntropy(x, Tensor.from(Int32Array.of(0, 5, 1), [3], { device: DEVICE }))).toThrow(/cross_entropy_fwd: label 5 at row 1 is out of range for 5 classes/);
    }
  });
});

describe('clipLoss', () => {
  for (const [N, D, scaleShape] of [[1, 4, [1]], [3, 5, [1]], [6, 3, []], [9, 16, [1]]] as [number, number, number[]][]) {
    it(`matches the naive float64 loss and finite differences for N=${N}, D=${D}, logScale ${JSON.stringify(scaleShape)}`, () => {
      checkOp({
        shapes: [[N, D], [N, D], scaleShape],
        inputs: [randArray(N * D, N + 1), randArray(N * D, N + 2), Float64Array.of(Math.log(1 / 0.07) * 0.5)],
        op: ([i, t, s]) => clipLoss(i, t, s),
        ref: ([i, t, s]) => Float64Array.of(clipRef(i, t, s[0], D)),
        gradTol: 2e-3,
      });
    });
  }

  it('matches analytic gradients when several tiles are needed (N=300)', () => {
    const N = 300, D = 24, s = Math.log(100);
    const img = randArray(N * D, 81).map(Math.fround), txt = randArray(N * D, 82).map(Math.fround);
    const ti = tensor(img, [N, D], true), tt = tensor(txt, [N, D], true), ts = tensor([s], [1], true);
    const loss = clipLoss(ti, tt, ts);
    expect(loss.shape).toEqual([]);
    expect(Math.abs(loss.item() - clipRef(img, txt, Math.fround(s), D))).toBeLessThan(2e-5 * clipRef(img, txt, s, D) + 1e-6);
    loss.backward();
    const g = clipGradRef(img, txt, Math.fround(s), D);
    expectClose(toF64(ti.grad!), g.dimg, 1e-4, 'dimg');
    expectClose(toF64(tt.grad!), g.dtxt, 1e-4, 'dtxt');
    expectClose(toF64(ts.grad!), [g.ds], 1e-4, 'dscale');
  });

  it('has the loss of perfectly matched pairs near zero at a high scale', () => {
    const N = 5, D = 5;
    const eye = new Float64Array(N * D);
    for (let i = 0; i < N; i++) eye[i * D + i] = 2;
    const loss = clipLoss(tensor(eye, [N, D]), tensor(eye, [N, D]), tensor([Math.log(100)], [1]));
    expect(loss.item()).toBeCloseTo(clipRef(eye, eye, Math.log(100), D), 6);
    expect(loss.item()).toBeLessThan(1e-10 + 4 * Math.exp(-100) * 2);
  });

  it('rejects bad inputs naming the op and shapes', () => {
    const a = Tensor.zeros([4, 8], { device: DEVICE }), s = Tensor.zeros([1], { device: DEVICE });
    expect(() => clipLoss(a, Tensor.zeros([3, 8], { device: DEVICE }), s)).toThrow(/clipLoss: img float32\[4,8\] and txt float32\[3,8\] must both be \[N,D\]/);
    expect(() => clipLoss(a, a, Tensor.zeros([2], { device: DEVICE }))).toThrow(/clipLoss: logScale must be a \[\] or \[1\] tensor, got float32\[2\]/);
    expect(() => clipLoss(Tensor.zeros([32], { device: DEVICE }), a, s)).toThrow(/clipLoss: img must have 2 dimensions/);
  });
});
