import { describe, expect, it } from 'vitest';
import { ops } from '../lib/index.js';
import { Tensor } from '../lib/tensor.js';
import { checkOp, DEVICE } from './helpers.js';

function mm(a: Float64Array, b: Float64Array, B: number, M: number, K: number, N: number, ba: boolean, bb: boolean): Float64Array {
  const out = new Float64Array(B * M * N);
  for (let z = 0; z < B; z++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[(ba ? z * M * K : 0) + i * K + k] * b[(bb ? z * K * N : 0) + k * N + j];
        out[(z * M + i) * N + j] = s;
      }
  return out;
}

describe('matmul and linear', () => {
  for (const [M, K, N] of [[1, 1, 1], [3, 5, 7], [17, 33, 9], [50, 64, 96], [64, 130, 65]]) {
    it(`matmul ${M}x${K} @ ${K}x${N}`, () => {
      checkOp({ shapes: [[M, K], [K, N]], op: ([a, b]) => ops.matmul(a, b), ref: ([a, b]) => mm(a, b, 1, M, K, N, false, false), fwdTol: 1e-5, gradTol: 2e-3 });
    });
  }

  it('batched, broadcast batch and transposed views', () => {
    const [B, M, K, N] = [3, 5, 6, 4];
    checkOp({ shapes: [[B, M, K], [B, K, N]], op: ([a, b]) => ops.matmul(a, b), ref: ([a, b]) => mm(a, b, B, M, K, N, true, true) });
    checkOp({ shapes: [[B, M, K], [K, N]], op: ([a, b]) => ops.matmul(a, b), ref: ([a, b]) => mm(a, b, B, M, K, N, true, false) });
    const tr = (v: Float64Array, r: number, c: number) => Float64Array.from({ length: r * c }, (_, i) => v[(i % r) * c + Math.floor(i / r)]);
    checkOp({
      shapes: [[K, M], [N, K]],
      op: ([a, b]) => ops.matmul(ops.transpose(a), ops.transpose(b)),
      ref: ([a, b]) => mm(tr(a, K, M), tr(b, N, K), 1, M, K, N, false, false),
    });
  });

  it('linear = x W^T + b on leading dims', () => {
    const [B, S, I, O] = [2, 3, 7, 5];
    checkOp({
      shapes: [[B, S, I], [O, I], [O]],
      op: ([x, w, b]) => ops.linear(x, w, b),
      ref: ([x, w, b]) => {
        const out = new Float64Array(B * S * O);
        for (let r = 0; r < B * S; r++) for (let o = 0; o < O; o++) {
          let s = b[o];
          for (let i = 0; i < I; i++) s += x[r * I + i] * w[o * I + i];
          out[r * O + o] = s;
        }
        return out;
      },
    });
  });

  it('names shapes on a mismatch', () => {
    const a = Tensor.zeros([2, 3], { device: DEVICE }), b = Tensor.zeros([4, 5], { device: DEVICE });
    expect(() => ops.matmul(a, b)).toThrow(/matmul: inner dimensions differ: float32\[2,3\] @ float32\[4,5\]/);
    expect(() => ops.linear(a, b)).toThrow(/linear: input float32\[2,3\] does not end in 5 features/);
  });
});
