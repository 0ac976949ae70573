// clipLossLocal (one shard's contrastive loss against gathered features) and the native clip_ce op
// under it: forward and gradients against float64 references, shapes that need several tiles and
// chunks, and the data-parallel identity: over K equal shards, the mean of the local losses is
// the whole batch's clipLoss and the shards' gradients, summed as all_gather with gradients sums
// them, are its gradients.
import { describe, expect, it } from 'vitest';
import { Tensor, runRaw } from '../lib/tensor.js';
import { clipLoss, clipLossLocal } from '../lib/ops/loss.js';
import { checkOp, expectClose, randArray, tensor, toF64, DEVICE } from './helpers.js';

interface Normed { y: Float64Array; norms: Float64Array }

function normalizeRows(x: Float64Array, D: number): Normed {
  const N = x.length / D;
  const y = new Float64Array(x.length), norms = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let s = 0;
    for (let k = 0; k < D; k++) s += x[i * D + k] ** 2;
    norms[i] = Math.max(Math.sqrt(s), 1e-12);
    for (let k = 0; k < D; k++) y[i * D + k] = x[i * D + k] / norms[i];
  }
  return { y, norms };
}

/**
 * One direction in float64: rows A [n,D] against columns B [m,D] (both normalised), row i
 * labelled off + i, each row's cross-entropy weighted w. Returns the loss and, when asked, the
 * gradients with respect to the normalised rows and columns and to s.
 */
function direction(A: Float64Array, B: Float64Array, D: number, s: number, off: number, w: number, grads: boolean) {
  const n = A.length / D, m = B.length / D, S = Math.exp(s);
  let loss = 0, ds = 0;
  const dA = new Float64Array(grads ? n * D : 0), dB = new Float64Array(grads ? m * D : 0);
  const L = new Float64Array(m);
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    for (let j = 0; j < m; j++) {
      let dot = 0;
      for (let k = 0; k < D; k++) dot += A[i * D + k] * B[j * D + k];
      L[j] = S * dot;
      mx = Math.max(mx, L[j]);
    }
    let sum = 0;
    for (let j = 0; j < m; j++) sum += Math.exp(L[j] - mx);
    const lse = mx + Math.log(sum);
    loss += w * (lse - L[off + i]);
    if (!grads) continue;
    for (let j = 0; j < m; j++) {
      const g = w * (Math.exp(L[j] - lse) - (j === off + i ? 1 : 0));
      ds += g * L[j];
      for (let k = 0; k < D; k++) {
        dA[i * D + k] += S * g * B[j * D + k];
        dB[j * D + k] += S * g * A[i * D + k];
      }
    }
  }
  return { loss, dA, dB, ds };
}

/** The gradient through y = x / |x|: (dy - y (dy . y)) / |x| row by row. */
function throughNorm(dy: Float64Array, x: Normed, D: number): Float64Array {
  const dx = new Float64Array(dy.length);
  for (let i = 0; i < dy.length / D; i++) {
    let c = 0;
    for (let k = 0; k < D; k++) c += dy[i * D + k] * x.y[i * D + k];
    for (let k = 0; k < D; k++) dx[i * D + k] = (dy[i * D + k] - x.y[i * D + k] * c) / x.norms[i];
  }
  return dx;
}

/** open_clip's local_loss in float64, with analytic gradients for all five inputs. */
function localRef(iL: Float64Array, tL: Float64Array, iA: Float64Array, tA: Float64Array, s: number, D: number,
  off: number, grads = false) {
  const n = iL.length / D;
  const IL = normalizeRows(iL, D), TL = normalizeRows(tL, D), IA = normalizeRows(iA, D), TA = normalizeRows(tA, D);
  const a = direction(IL.y, TA.y, D, s, off, 0.5 / n, grads);
  const b = direction(TL.y, IA.y, D, s, off, 0.5 / n, grads);
  const loss = a.loss + b.loss;
  if (!grads) return { loss };
  return {
    loss,
    diL: throughNorm(a.dA, IL, D), dtA: throughNorm(a.dB, TA, D),
    dtL: throughNorm(b.dA, TL, D), diA: throughNorm(b.dB, IA, D),
    ds: a.ds + b.ds,
  };
}

const LOG_SCALE = Math.log(1 / 0.07) * 0.5;

describe('clipLossLocal', () => {
  const small: [number, number, number, number, number[]][] = [
    // n, m, D, offset, logScale shape
    [5, 13, 7, 4, [1]],
    [3, 3, 5, 0, []],
    [1, 6, 3, 5, [1]],
    [4, 11, 2, 2, [1]],
  ];
  for (const [n, m, D, off, scaleShape] of small) {
    it(`matches the float64 loss and finite differences for n=${n}, m=${m}, D=${D}, offset ${off}`, () => {
      checkOp({
        shapes: [[n, D], [n, D], [m, D], [m, D], scaleShape],
        inputs: [randArray(n * D, n + 1), randArray(n * D, n + 2), randArray(m * D, m + 3), randArray(m * D, m + 4),
          Float64Array.of(LOG_SCALE)],
        op: ([a, b, c, d, s]) => clipLossLocal(a, b, c, d, s, off),
        ref: ([a, b, c, d, s]) => Float64Array.of(localRef(a, b, c, d, s[0], D, off).loss),
        gradTol: 2e-3,
        seed: n * m + D,
      });
    });
  }

  // Shapes around the CPU kernel's 64-row x 256-column tiles: several row and column blocks, and
  // both ways of splitting the backward passes into chunks.
  for (const [n, m, D, off] of [[70, 200, 24, 130], [40, 600, 17, 333], [130, 530, 9, 400]]) {
    it(`matches analytic float64 gradients over several tiles (n=${n}, m=${m}, D=${D}, offset ${off})`, () => {
      const iL = randArray(n * D, 11).map(Math.fround), tL = randArray(n * D, 12).map(Math.fround);
      const iA = randArray(m * D, 13).map(Math.fround), tA = randArray(m * D, 14).map(Math.fround);
      const s = Math.fround(Math.log(100));
      const ts = [tensor(iL, [n, D], true), tensor(tL, [n, D], true), tensor(iA, [m, D], true), tensor(tA, [m, D], true)];
      const tsc = tensor([s], [1], true);
      const loss = clipLossLocal(ts[0], ts[1], ts[2], ts[3], tsc, off);
      expect(loss.shape).toEqual([]);
      const ref = localRef(iL, tL, iA, tA, s, D, off, true);
      expect(Math.abs(loss.item() - ref.loss)).toBeLessThan(2e-5 * ref.loss + 1e-6);
      loss.backward();
      expectClose(toF64(ts[0].grad!), ref.diL!, 1e-4, 'dimgLocal');
      expectClose(toF64(ts[1].grad!), ref.dtL!, 1e-4, 'dtxtLocal');
      expectClose(toF64(ts[2].grad!), ref.diA!, 1e-4, 'dimgAll');
      expectClose(toF64(ts[3].grad!), ref.dtA!, 1e-4, 'dtxtAll');
      expectClose(toF64(tsc.grad!), [ref.ds!], 1e-4, 'dlogScale');
      for (const t of [...ts, tsc, loss]) t.dispose();
    });
  }

  // K shards of a batch of N: shard k holds rows k*n..(k+1)*n-1 as its local features and a copy of
  // the whole batch as the gathered ones (separate leaves, as all_gather hands each rank).
  for (const [N, K, D] of [[12, 3, 9], [300, 4, 33]]) {
    it(`over ${K} shards of ${N} rows (D=${D}), averages to clipLoss with its gradients`, () => {
      const n = N / K;
      const img = randArray(N * D, 21 + N).map(Math.fround), txt = randArray(N * D, 22 + N).map(Math.fround);
      const s = Math.fround(Math.log(30));
      const fi = tensor(img, [N, D], true), ft = tensor(txt, [N, D], true), fs = tensor([s], [1], true);
      const full = clipLoss(fi, ft, fs);
      const fullLoss = full.item();
      full.backward();

      let sum = 0;
      const gi = new Float64Array(N * D), gt = new Float64Array(N * D);
      let gs = 0;
      for (let k = 0; k < K; k++) {
        const rows = [k * n * D, (k + 1) * n * D];
        const iL = tensor(img.slice(...rows), [n, D], true), tL = tensor(txt.slice(...rows), [n, D], true);
        const iA = tensor(img, [N, D], true), tA = tensor(txt, [N, D], true), sc = tensor([s], [1], true);
        const loss = clipLossLocal(iL, tL, iA, tA, sc, k * n);
        sum += loss.item();
        loss.backward();
        const [dil, dtl, dia, dta] = [iL, tL, iA, tA].map((t) => toF64(t.grad!));
        for (let e = 0; e < n * D; e++) gi[rows[0] + e] += dil[e], gt[rows[0] + e] += dtl[e];
        for (let e = 0; e < N * D; e++) gi[e] += dia[e], gt[e] += dta[e];
        gs += sc.grad!.item();
        for (const t of [iL, tL, iA, tA, sc, loss]) t.dispose();
      }
      expect(Math.abs(sum / K - fullLoss)).toBeLessThan(1e-5 * fullLoss);
      const ref = localRef(img, txt, img, txt, s, D, 0);  // the whole batch as one shard
      expect(Math.abs(sum / K - ref.loss)).toBeLessThan(2e-5 * ref.loss);
      expectClose(gi.map((v) => v / K), toF64(fi.grad!), 1e-4, 'dimg');
      expectClose(gt.map((v) => v / K), toF64(ft.grad!), 1e-4, 'dtxt');
      expectClose([gs / K], [fs.grad!.item()], 1e-4, 'dlogScale');
      for (const t of [fi, ft, fs, full]) t.dispose();
    });
  }

  it('needs no gradients to run and gives the same loss', () => {
    const n = 3, m = 8, D = 6, off = 2;
    const x = [randArray(n * D, 1), randArray(n * D, 2), randArray(m * D, 3), randArray(m * D, 4)];
    const loss = clipLossLocal(tensor(x[0], [n, D]), tensor(x[1], [n, D]), tensor(x[2], [m, D]), tensor(x[3], [m, D]),
      tensor([LOG_SCALE], []), off);
    expect(loss.requiresGrad).toBe(false);
    expect(Math.abs(loss.item() - localRef(x[0], x[1], x[2], x[3], Math.fround(LOG_SCALE), D, off).loss)).toBeLessThan(1e-5);
  });

  it('rejects bad inputs naming the op and shapes', () => {
    const z = (shape: number[]) => Tensor.zeros(shape, { device: DEVICE });
    const a = z([4, 8]), g = z([10, 8]), s = z([1]);
    expect(() => clipLossLocal(a, z([3, 8]), g, g, s, 0)).toThrow(/clipLossLocal: imgLocal float32\[4,8\] and txtLocal float32\[3,8\] must both be \[n,D\]/);
    expect(() => clipLossLocal(a, a, g, z([9, 8]), s, 0)).toThrow(/clipLossLocal: imgAll float32\[10,8\] and txtAll float32\[9,8\] must both be \[m,D\]/);
    expect(() => clipLossLocal(a, a, z([10, 7]), z([10, 7]), s, 0)).toThrow(/clipLossLocal: local features float32\[4,8\] and gathered features float32\[10,7\] must have one width D/);
    expect(() => clipLossLocal(a, a, g, g, s, 7)).toThrow(/clipLossLocal: offset 7 must be an integer with offset \+ 4 local rows <= the 10 gathered rows of imgAll float32\[10,8\]/);
    expect(() => clipLossLocal(a, a, g, g, s, -1)).toThrow(/clipLossLocal: offset -1 must be/);
    expect(() => clipLossLocal(a, a, g, g, s, 1.5)).toThrow(/clipLossLocal: offset 1.5 must be an integer/);
    expect(() => clipLossLocal(a, a, g, g, z([2]), 0)).toThrow(/clipLossLocal: logScale must be a \[\] or \[1\] tensor, got float32\[2\]/);
    expect(() => clipLossLocal(z([32]), a, g, g, s, 0)).toThrow(/clipLossLocal: imgLocal must have 2 dimensions/);
    const ints = Tensor.zeros([10, 8], { dtype: 'int32', device: DEVICE });
    expect(() => clipLossLocal(a, a, g, ints, s, 0)).toThrow(/clipLossLocal: txtAll must be float32, got int32\[10,8\]/);
    expect(() => clipLossLocal(a, a, g, g, Tensor.zeros([1], { dtype: 'int32', device: DEVICE }), 0)).toThrow(/clipLossLocal: logScale must be float32/);
    const none = Tensor.empty([0, 8], { device: DEVICE });
    expect(() => clipLossLocal(none, none, g, g, s, 0)).toThrow(/clipLossLocal: imgLocal float32\[0,8\] has no rows/);
    for (const t of [a, g, s, ints, none]) t.dispose();
  });

  it('has the native op check the label offset and shapes itself', () => {
    const z = (shape: number[]) => Tensor.zeros(shape, { device: DEVICE });
    const rows = z([4, 8]), cols = z([10, 8]), s = z([1]), loss = z([]), lse = z([4]);
    expect(() => runRaw('clip_ce_fwd', [rows, cols, s], [loss, lse], [7], [1])).toThrow(
      /clip_ce_fwd: the labels offset\+i = 7\.\.10 of rows float32\[4,8\] must index the columns of cols float32\[10,8\]/);
    expect(() => runRaw('clip_ce_fwd', [rows, z([10, 6]), s], [loss, lse], [0], [1])).toThrow(
      /clip_ce_fwd: rows float32\[4,8\] and cols float32\[10,6\] must have one width/);
    const dr = z([4, 8]), dc = z([9, 8]), ds = z([1]), dl = z([1]);
    expect(() => runRaw('clip_ce_bwd', [rows, cols, s, lse, dl], [dr, dc, ds], [0], [1])).toThrow(/clip_ce_bwd: dcols must be .*\[10,8\], got float32\[9,8\]/);
    for (const t of [rows, cols, s, loss, lse, dr, dc, ds, dl]) t.dispose();
  });
});
