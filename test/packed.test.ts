// Weights packed once for inference: gemm_pack_b + gemm_packed against a float64 reference and
// against the plain gemm (same kernels: equal bits on the CPU), the packed copy's reuse and its
// invalidation by any write to the weight, and bad input.
import { describe, expect, it } from 'vitest';
import { ops } from '../lib/index.js';
import { noGrad } from '../lib/autograd.js';
import { Tensor, runRaw } from '../lib/tensor.js';
import { packedWeight, setWeightPacking } from '../lib/ops/packed.js';
import { DEVICE, expectClose, randArray, tensor, toF64 } from './helpers.js';

function linearRef(x: Float64Array, w: Float64Array, b: Float64Array | null, M: number, K: number, N: number, act: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = b ? b[j] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      y[i * N + j] = act === 2 ? s / (1 + Math.exp(-1.702 * s)) : act === 1 ? Math.max(0, s) : s;
    }
  return y;
}

const packedSize = (K: number, N: number) => K * Math.ceil(N / 32) * 32;

describe('packed weights (gemm_pack_b, gemm_packed)', () => {
  // K = 600 spans several k blocks; N = 70 leaves a ragged last sliver; M = 13 a ragged row tile.
  // The last two are large enough to be split over threads by columns, so that each thread sums
  // its part of the rows in a buffer of its own (few rows, and more than one row block).
  for (const [M, K, N, act] of [[13, 600, 70, 0], [50, 96, 130, 2], [1, 7, 3, 1], [64, 257, 32, 0], [50, 600, 200, 2], [130, 520, 300, 0]]) {
    it(`[${M},${K}] @ [${N},${K}]ᵀ + b, act ${act}: equals the reference and the plain gemm`, () => {
      const xs = randArray(M * K, 1), ws = randArray(N * K, 2), bs = randArray(N, 3);
      const x = tensor(xs, [M, K]), w = tensor(ws, [N, K]), b = tensor(bs, [N]);
      const wt = w.view([K, N], [1, K]);
      const packed = Tensor.empty([packedSize(K, N)], { device: DEVICE });
      runRaw('gemm_pack_b', [wt], [packed]);
      const y = Tensor.empty([M, N], { device: DEVICE });
      runRaw('gemm_packed', [x, packed, b], [y], [0, act], [1]);
      const plain = Tensor.empty([M, N], { device: DEVICE });
      runRaw('gemm', [x, wt, b], [plain], [0, act], [1]);
      const ref = linearRef(xs, ws, bs, M, K, N, act);
      expectClose(toF64(y), ref, 2e-5, 'packed');
      if (DEVICE === 'cpu') expect(Array.from(toF64(y))).toEqual(Array.from(toF64(plain)));
      // accumulate and alpha: y = 0.5 * x@wᵀ (no bias) + y
      runRaw('gemm_packed', [x, packed, null], [y], [1, 0], [0.5]);
      const ref2 = linearRef(xs, ws, null, M, K, N, 0).map((v, i) => 0.5 * v + ref[i]);
      if (act === 0) expectClose(toF64(y), ref2, 2e-5, 'accumulate');
      for (const t of [x, w, b, wt, packed, y, plain]) t.dispose();
    });
  }

  it('a transposed input and a [K,N] weight stored row-major', () => {
    const [M, K, N] = [9, 40, 33];
    const xs = randArray(M * K, 4), ws = randArray(N * K, 5);
    const xT = tensor(Array.from({ length: M * K }, (_, i) => xs[(i % M) * K + Math.floor(i / M)]), [K, M]);
    const x = xT.view([M, K], [1, M]);
    const wKN = tensor(Array.from({ length: K * N }, (_, i) => ws[(i % N) * K + Math.floor(i / N)]), [K, N]);
    const packed = Tensor.empty([packedSize(K, N)], { device: DEVICE });
    runRaw('gemm_pack_b', [wKN], [packed]);
    const y = Tensor.empty([M, N], { device: DEVICE });
    runRaw('gemm_packed', [x, packed, null], [y], [0], [1]);
    expectClose(toF64(y), linearRef(xs, ws, null, M, K, N, 0), 2e-5);
    for (const t of [xT, x, wKN, packed, y]) t.dispose();
  });

  it('linear without autograd reuses the packed copy until the weight is written', () => {
    const [M, K, N] = [50, 64, 48];
    const x = tensor(randArray(M * K, 6), [M, K]);
    const w = tensor(randArray(N * K, 7), [N, K]);
    const b = tensor(randArray(N, 8), [N]);
    const plain = () => {
      setWeightPacking(false);
      try {
        return toF64(noGrad(() => ops.linear(x, w, b)));
      } finally {
        setWeightPacking(true);
      }
    };
    const y1 = toF64(noGrad(() => ops.linear(x, w, b)));
    const copy = packedWeight(w);
    expect(packedWeight(w)).toBe(copy); // reused, not packed again
    if (DEVICE === 'cpu') expect(Array.from(y1)).toEqual(Array.from(plain()));
    // A write to the weight (here a host write, as a loader does) drops the stale copy.
    ops.fillFrom(w, Float32Array.from(randArray(N * K, 9)));
    expect(copy.disposed).toBe(true);
    const y2 = toF64(noGrad(() => ops.linear(x, w, b)));
    expect(Array.from(y2)).not.toEqual(Array.from(y1));
    expect(Array.from(y2)).toEqual(Array.from(plain()));
    // An op writing into the weight (the optimiser's path) drops it too.
    const copy2 = packedWeight(w);
    runRaw('affine', [w], [w], [], [0.5, 0]);
    expect(copy2.disposed).toBe(true);
    expectClose(toF64(noGrad(() => ops.linear(x, w, b))), plain(), 1e-6);
    // The copy dies with its weight.
    const copy3 = packedWeight(w);
    w.dispose();
    expect(copy3.disposed).toBe(true);
    x.dispose();
    b.dispose();
  });

  it('bad input names the op and the problem', () => {
    const x = tensor(randArray(6, 1), [2, 3]);
    const small = Tensor.empty([8], { device: DEVICE });
    const y = Tensor.empty([2, 40], { device: DEVICE });
    expect(() => runRaw('gemm_packed', [x, small, null], [y], [0], [1])).toThrow(/gemm_packed.*too small/);
    const wt = tensor(randArray(3 * 40, 2), [3, 40]);
    expect(() => runRaw('gemm_pack_b', [wt], [small])).toThrow(/gemm_pack_b.*packed/);
    for (const t of [x, small, y, wt]) t.dispose();
  });
});
