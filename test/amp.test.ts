// Mixed precision: the gemm op with bfloat16 operands, bias and output; matmul and linear under
// autocast('bf16') against float64 products of the bf16-rounded values (forward and gradients);
// a small CLIP within bf16 tolerance of float32; a bf16 training run; bad input.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ops } from '../lib/index.js';
import { Tensor, bf16ToF32, f32ToBf16, runRaw, tidy } from '../lib/tensor.js';
import { autocast, currentPrecision } from '../lib/amp.js';
import { createCLIP } from '../lib/models/clip.js';
import { Trainer } from '../lib/train/trainer.js';
import { trainCommand } from '../lib/cli/train.js';
import { UsageError } from '../lib/cli/args.js';
import type { Batch } from '../lib/data/types.js';
import { DEVICE, expectClose, randArray, relErr, tensor, toF64 } from './helpers.js';
import { MICRO_CONFIG, randomDataset, repeatSource, wordTokenize } from './train-helpers.js';

/** The values a float32 tensor made from x holds after a cast to bfloat16, as float64. */
function roundBf16(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(bf16ToF32(f32ToBf16(Float32Array.from(x))));
}

/** Element (r, c) of op(X) for X stored row-major [rows, cols] (trans: X^T). */
function at(x: Float64Array, cols: number, trans: boolean, r: number, c: number): number {
  return trans ? x[c * cols + r] : x[r * cols + c];
}

/** float64 a @ b for [M,K] @ [K,N] matrices given as (possibly transposed) row-major storage. */
function mm(a: Float64Array, b: Float64Array, M: number, K: number, N: number, ta = false, tb = false): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += at(a, ta ? M : K, ta, i, k) * at(b, tb ? K : N, tb, k, j);
      out[i * N + j] = s;
    }
  return out;
}

function bf16Tensor(x: ArrayLike<number>, shape: number[]): Tensor {
  return Tensor.from(Float32Array.from(x), shape, { device: DEVICE, dtype: 'bfloat16' });
}

function transposeView(t: Tensor): Tensor {
  return t.view([t.shape[1], t.shape[0]], [t.strides[1], t.strides[0]]);
}

describe('gemm with bfloat16 operands, bias and output', () => {
  it('bf16 a @ transposed bf16 b + bf16 bias into float32 equals the float64 product of the stored values', () => {
    const [M, K, N] = [19, 37, 11];
    const av = randArray(M * K, 1), bv = randArray(N * K, 2), biasv = randArray(N, 3);
    const a = bf16Tensor(av, [M, K]), bStore = bf16Tensor(bv, [N, K]), bias = bf16Tensor(biasv, [N]);
    const b = transposeView(bStore); // [K, N], unit stride on K
    const c = Tensor.empty([M, N], { device: DEVICE });
    runRaw('gemm', [a, b, bias], [c], [0], [1]);
    const ref = mm(roundBf16(av), roundBf16(bv), M, K, N, false, true);
    const rb = roundBf16(biasv);
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) ref[i * N + j] += rb[j];
    expectClose(toF64(c), ref, 1e-6, 'gemm bf16');
    for (const t of [a, bStore, b, bias, c]) t.dispose();
  });

  it('mixed float32 a and bf16 b, batched: a shared weight (folded) and transposed batch entries', () => {
    const [B, M, K, N] = [3, 5, 20, 7];
    const av = randArray(B * M * K, 4), bv = randArray(K * N, 5);
    const a = tensor(av, [B, M, K]);
    const b = bf16Tensor(bv, [K, N]);
    const rb = roundBf16(bv), ra = Float64Array.from(Float32Array.from(av));
    const c = Tensor.empty([B, M, N], { device: DEVICE });
    runRaw('gemm', [a, b.view([B, K, N], [0, N, 1]), null], [c], [0], [1]);
    const ref = new Float64Array(B * M * N);
    for (let z = 0; z < B; z++) ref.set(mm(ra.subarray(z * M * K), rb, M, K, N), z * M * N);
    expectClose(toF64(c), ref, 1e-6, 'folded batch');

    // a as [B, M, K] views of [B, K, M] storage (transposed entries), b bf16 per entry
    const atv = randArray(B * K * M, 6), bbv = randArray(B * K * N, 7);
    const aT = bf16Tensor(atv, [B, K, M]);
    const aview = aT.view([B, M, K], [K * M, 1, M]);
    const bb = bf16Tensor(bbv, [B, K, N]);
    const c2 = Tensor.empty([B, M, N], { device: DEVICE });
    runRaw('gemm', [aview, bb, null], [c2], [0], [0.5]);
    const ref2 = new Float64Array(B * M * N);
    const rat = roundBf16(atv), rbb = roundBf16(bbv);
    for (let z = 0; z < B; z++) {
      const p = mm(rat.subarray(z * K * M), rbb.subarray(z * K * N), M, K, N, true, false);
      for (let i = 0; i < M * N; i++) ref2[z * M * N + i] = 0.5 * p[i];
    }
    expectClose(toF64(c2), ref2, 1e-6, 'transposed batch');
    for (const t of [a, b, c, aT, aview, bb, c2]) t.dispose();
  });

  it('a bfloat16 output (accumulating) is the float32 result rounded once to bfloat16', () => {
    const [M, K, N] = [9, 24, 13];
    const av = randArray(M * K, 8), bv = randArray(K * N, 9), cv = randArray(M * N, 10);
    const a = bf16Tensor(av, [M, K]), b = bf16Tensor(bv, [K, N]), c = bf16Tensor(cv, [M, N]);
    runRaw('gemm', [a, b, null], [c], [1, 1], [2]); // relu(2 a@b) + c
    const p = mm(roundBf16(av), roundBf16(bv), M, K, N), rc = roundBf16(cv);
    const got = toF64(c);
    for (let i = 0; i < M * N; i++) {
      const ref = Math.max(0, 2 * p[i]) + rc[i];
      // rounding to nearest: within half a bf16 step (2^-8 relative) plus float32 accumulation
      expect(Math.abs(got[i] - ref), `element ${i}: ref ${ref} got ${got[i]}`).toBeLessThanOrEqual(Math.abs(ref) * 2 ** -8 + 1e-6);
    }
    for (const t of [a, b, c]) t.dispose();
  });

  it('refuses integer operands with the operand named', () => {
    const a = Tensor.zeros([2, 3], { device: DEVICE, dtype: 'int32' }), b = Tensor.zeros([3, 2], { device: DEVICE });
    const c = Tensor.empty([2, 2], { device: DEVICE });
    expect(() => runRaw('gemm', [a, b, null], [c], [0], [1])).toThrow(/gemm: a must be float32 or bf(loat)?16/);
    for (const t of [a, b, c]) t.dispose();
  });
});

describe('matmul and linear under autocast(bf16)', () => {
  it('matmul: forward and both gradients are float64 products of bf16-rounded operands, in float32', () => {
    const [M, K, N] = [17, 33, 9];
    const av = randArray(M * K, 11), bv = randArray(K * N, 12), gv = randArray(M * N, 13);
    const a = tensor(av, [M, K], true), b = tensor(bv, [K, N], true);
    const y = autocast('bf16', () => ops.matmul(a, b));
    expect(y.dtype).toBe('float32');
    const ra = roundBf16(av), rb = roundBf16(bv), rg = roundBf16(gv);
    const exact = mm(Float64Array.from(Float32Array.from(av)), Float64Array.from(Float32Array.from(bv)), M, K, N);
    expectClose(toF64(y), mm(ra, rb, M, K, N), 1e-6, 'forward');
    expect(relErr(toF64(y), exact)).toBeGreaterThan(1e-4); // the operands really were rounded
    const g = tensor(gv, [M, N]);
    y.backward(g);
    expect(a.grad!.dtype).toBe('float32');
    expect(b.grad!.dtype).toBe('float32');
    expectClose(toF64(a.grad!), mm(rg, rb, M, N, K, false, true), 1e-6, 'grad a'); // g @ b^T
    expectClose(toF64(b.grad!), mm(ra, rg, K, M, N, true, false), 1e-6, 'grad b'); // a^T @ g
    for (const t of [a, b, y, g]) t.dispose();
  });

  it('matmul of transposed views and a broadcast batch', () => {
    const [B, M, K, N] = [2, 4, 6, 5];
    const av = randArray(K * M, 14), bv = randArray(B * K * N, 15);
    const aStore = tensor(av, [K, M], true), b = tensor(bv, [B, K, N], true);
    const y = autocast('bf16', () => ops.matmul(ops.transpose(aStore), b)); // [M,K] @ [B,K,N]
    const ra = roundBf16(av), rb = roundBf16(bv);
    const ref = new Float64Array(B * M * N);
    for (let z = 0; z < B; z++) ref.set(mm(ra, rb.subarray(z * K * N), M, K, N, true, false), z * M * N);
    expectClose(toF64(y), ref, 1e-6, 'forward');
    y.backward(Tensor.ones(y.shape, { device: DEVICE }));
    // d/dA^T of sum over the batch: sum_z ones @ b_z^T, transposed back to A's [K, M] storage
    const ones = new Float64Array(M * N).fill(1);
    const gT = new Float64Array(M * K);
    for (let z = 0; z < B; z++) {
      const p = mm(ones, rb.subarray(z * K * N), M, N, K, false, true);
      for (let i = 0; i < M * K; i++) gT[i] += p[i];
    }
    const gA = Float64Array.from({ length: K * M }, (_, i) => gT[(i % M) * K + Math.floor(i / M)]);
    expectClose(toF64(aStore.grad!), gA, 1e-6, 'grad a');
    for (const t of [aStore, b, y]) t.dispose();
  });

  it('linear: x W^T + b on leading dims, and on a strided x; bias gradient from the float32 gradient', () => {
    const [B, S, I, O] = [2, 3, 7, 5];
    const xv = randArray(B * S * I, 16), wv = randArray(O * I, 17), bv = randArray(O, 18), gv = randArray(B * S * O, 19);
    const x = tensor(xv, [B, S, I], true), w = tensor(wv, [O, I], true), bias = tensor(bv, [O], true);
    const y = autocast('bf16', () => ops.linear(x, w, bias));
    const rx = roundBf16(xv), rw = roundBf16(wv), rg = roundBf16(gv), fb = Float64Array.from(Float32Array.from(bv));
    const ref = mm(rx, rw, B * S, I, O, false, true);
    for (let r = 0; r < B * S; r++) for (let o = 0; o < O; o++) ref[r * O + o] += fb[o];
    expectClose(toF64(y), ref, 1e-6, 'forward');
    const g = tensor(gv, [B, S, O]);
    y.backward(g);
    expectClose(toF64(x.grad!), mm(rg, rw, B * S, O, I), 1e-6, 'grad x'); // g @ W
    expectClose(toF64(w.grad!), mm(rg, rx, O, B * S, I, true, false), 1e-6, 'grad w'); // g^T @ x
    const gb = new Float64Array(O);
    const fg = Float64Array.from(Float32Array.from(gv));
    for (let r = 0; r < B * S; r++) for (let o = 0; o < O; o++) gb[o] += fg[r * O + o];
    expectClose(toF64(bias.grad!), gb, 1e-6, 'grad bias');
    for (const p of [x, w, bias]) expect(p.grad!.dtype).toBe('float32');

    // x a transposed (non-contiguous) view; the epilogue activation path without a graph
    const xs = tensor(randArray(I * 6, 20), [I, 6]);
    const xt = transposeView(xs); // [6, I]
    const wNoGrad = w.view(w.shape, w.strides); // without requiresGrad: the relu runs in the GEMM
    const z = autocast('bf16', () => ops.linearAct(xt, wNoGrad, null, 'relu'));
    const rxs = roundBf16(xs.toArraySync() as Float32Array);
    const refz = mm(rxs, rw, 6, I, O, true, true).map((v) => Math.max(0, v));
    expectClose(toF64(z), refz, 1e-6, 'strided x, relu epilogue');
    for (const t of [x, w, bias, y, g, xs, xt, wNoGrad, z]) t.dispose();
  });

  it('casts a parameter once per autocast scope (shared across tidy scopes), again after an in-place write', () => {
    const [I, O] = [8, 3];
    const w = tensor(randArray(O * I, 21), [O, I], true);
    const x = tensor(randArray(2 * I, 22), [2, I]);
    const rx = roundBf16(x.toArraySync() as Float32Array);
    // counts the bf16 copies of w made
    let casts = 0;
    const empty = Tensor.empty;
    Tensor.empty = (shape, opts) => {
      if (opts?.dtype === 'bfloat16' && shape.join() === `${O},${I}`) casts++;
      return empty(shape, opts);
    };
    try {
      autocast('bf16', () => {
        const y1 = tidy(() => ops.linear(x, w)); // the cached copy outlives this tidy
        const y2 = ops.linear(x, w);
        expect(casts).toBe(1);
        expect(Array.from(toF64(y2))).toEqual(Array.from(toF64(y1)));
        expectClose(toF64(y1), mm(rx, roundBf16(w.toArraySync() as Float32Array), 2, I, O, false, true), 1e-6, 'first');
        ops.fillFrom(w, new Float32Array(O * I).fill(0.5)); // in place: the copy is stale
        const y3 = ops.linear(x, w);
        expect(casts).toBe(2);
        expectClose(toF64(y3), mm(rx, new Float64Array(O * I).fill(0.5), 2, I, O, false, true), 1e-6, 'after the write');
        for (const t of [y1, y2, y3]) t.dispose();
      });
      const after = autocast('bf16', () => ops.linear(x, w)); // a new scope casts again
      expect(casts).toBe(3);
      after.dispose();
    } finally {
      Tensor.empty = empty;
    }
    for (const t of [w, x]) t.dispose();
  });

  it('frees every tensor it makes: casts, the cached weight and the saved copies', () => {
    const [R, I, O] = [12, 10, 10];
    const w = tensor(randArray(O * I, 25), [O, I], true), bias = tensor(randArray(O, 26), [O], true);
    const x = tensor(randArray(R * I, 27), [R, I], true);
    const g = Tensor.ones([R, O], { device: DEVICE });
    // Every tensor (storage owner or view) made during a step must be disposed by its end.
    const made: Tensor[] = [];
    const empty = Tensor.empty, view = Tensor.prototype.view;
    Tensor.empty = (...args) => {
      const t = empty(...args);
      made.push(t);
      return t;
    };
    Tensor.prototype.view = function (...args) {
      const t = view.apply(this, args);
      made.push(t);
      return t;
    };
    try {
      for (let step = 0; step < 3; step++) {
        autocast('bf16', () => {
          const h = ops.linear(x, w, bias);
          const y = ops.matmul(h, w); // the same weight twice: one cached copy
          y.backward(g);
          h.dispose();
          y.dispose();
          for (const p of [x, w, bias]) {
            p.grad!.dispose();
            p.grad = null;
          }
        });
      }
    } finally {
      Tensor.empty = empty;
      Tensor.prototype.view = view;
    }
    expect(made.length).toBeGreaterThan(20);
    expect(made.filter((t) => !t.disposed).map((t) => t.describe())).toEqual([]);
    for (const t of [w, bias, x, g]) t.dispose();
  });

  it("autocast('fp32') inside a bf16 region runs in float32; the precision is restored after a throw", () => {
    const [M, K, N] = [6, 10, 4];
    const av = randArray(M * K, 23), bv = randArray(K * N, 24);
    const a = tensor(av, [M, K]), b = tensor(bv, [K, N]);
    const y = autocast('bf16', () => autocast('fp32', () => ops.matmul(a, b)));
    expectClose(toF64(y), mm(Float64Array.from(Float32Array.from(av)), Float64Array.from(Float32Array.from(bv)), M, K, N), 1e-6, 'fp32 inside');
    expect(() => autocast('bf16', () => {
      expect(currentPrecision()).toBe('bf16');
      throw new Error('boom');
    })).toThrow('boom');
    expect(currentPrecision()).toBe('fp32');
    for (const t of [a, b, y]) t.dispose();
  });

  it('bad input throws a clear Error', () => {
    expect(() => autocast('fp16' as never, () => 1)).toThrow(/autocast: precision must be 'fp32' or 'bf16', got 'fp16'/);
    expect(() => autocast('bf16', 3 as never)).toThrow(/autocast: fn must be a function/);
    expect(() => autocast('bf16', async () => 1)).toThrow(/autocast: the function must be synchronous/);
    const model = createCLIP(MICRO_CONFIG, { seed: 1, device: DEVICE });
    expect(() => new Trainer(model, { precision: 'float16' as never })).toThrow(/Trainer: precision must be 'fp32' or 'bf16', got 'float16'/);
    model.dispose();
  });
});

function microBatch(n: number, seed: number): Batch {
  const ds = randomDataset(n, 16);
  const pixels = new Float32Array(n * 3 * 16 * 16);
  const captions: string[] = [];
  for (let i = 0; i < n; i++) {
    const ex = ds.get(i + seed) as { image: Float32Array; caption: string };
    pixels.set(ex.image, i * 3 * 16 * 16);
    captions.push(ex.caption);
  }
  return { size: n, imageSize: 16, contextLength: 8, pixels, tokens: wordTokenize(8, 64)(captions), captions };
}

/** Squared L2 norms of a - b and of b. */
function l2Diff(a: Float64Array, b: Float64Array): { num: number; den: number } {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return { num, den };
}

describe('a small CLIP under autocast(bf16)', () => {
  it('loss and every parameter gradient are within bf16 tolerance of float32; gradients stay float32', () => {
    const model = createCLIP(MICRO_CONFIG, { seed: 5, device: DEVICE });
    const b = microBatch(6, 0);
    const pixels = Tensor.from(b.pixels, [b.size, 3, 16, 16], { device: DEVICE });
    const tokens = Tensor.from(b.tokens, [b.size, 8], { device: DEVICE });
    const run = (precision: 'fp32' | 'bf16') => {
      const value = autocast(precision, () => tidy(() => {
        const loss = model.loss(pixels, tokens);
        loss.backward();
        return loss.item();
      }));
      const grads = new Map(model.namedParameters().map(([n, p]) => {
        expect(p.grad, n).not.toBeNull();
        expect(p.grad!.dtype, n).toBe('float32');
        const g = toF64(p.grad!);
        p.grad!.dispose();
        p.grad = null;
        return [n, g];
      }));
      return { value, grads };
    };
    const f = run('fp32'), h = run('bf16');
    expect(h.value).not.toBe(f.value);
    expect(Math.abs(h.value - f.value) / Math.abs(f.value)).toBeLessThan(1e-2);
    // bf16 keeps 8 bits: each GEMM's result is off by ~0.3%, and sums over tokens with
    // cancellation (biases, norm gains) make a few percent in single tensors (2-3% seen here).
    let num = 0, den = 0;
    for (const [n, g] of f.grads) {
      const e = l2Diff(h.grads.get(n)!, g);
      expect(e.num / e.den, n).toBeLessThan(0.05 ** 2);
      num += e.num;
      den += e.den;
    }
    expect(Math.sqrt(num / den)).toBeLessThan(2e-2);
    for (const p of model.parameters()) expect(p.dtype).toBe('float32');
    pixels.dispose();
    tokens.dispose();
    model.dispose();
  });
});


describe('training with precision bf16', () => {
  it('decreases the loss as float32 training does, with float32 weights and AdamW state', async () => {
    const batch = microBatch(8, 3);
    const fit = async (precision: 'fp32' | 'bf16') => {
      const model = createCLIP(MICRO_CONFIG, { seed: 9, device: DEVICE });
      const trainer = new Trainer(model, { lr: 3e-3, warmup: 1, schedule: 'constant', seed: 1, precision });
      const r = await trainer.fit(repeatSource(batch), { steps: 12 });
      for (const p of model.parameters()) expect(p.dtype).toBe('float32');
      trainer.optimizer.dispose();
      model.dispose();
      return r.losses;
    };
    const f = await fit('fp32'), h = await fit('bf16');
    expect(h.length).toBe(12);
    expect(Math.abs(h[0] - f[0]) / f[0]).toBeLessThan(1e-2); // same weights, same batch
    const tail = (l: number[]) => (l[9] + l[10] + l[11]) / 3;
    expect(tail(f)).toBeLessThan(0.8 * f[0]);
    expect(tail(h)).toBeLessThan(0.8 * h[0]);
    expect(Math.abs(tail(h) - tail(f)) / tail(f)).toBeLessThan(0.05);
  });

  it('tsclip train --precision bf16 runs and records it; other values are usage errors', async () => {
    await expect(trainCommand(['--data', 'shapes', '--out', '/tmp/x', '--steps', '1', '--precision', 'fp16'])).rejects.toThrow(UsageError);
    await expect(trainCommand(['--data', 'shapes', '--out', '/tmp/x', '--steps', '1', '--precision', 'fp16'])).rejects.toThrow(/--precision fp16: expected fp32 or bf16/);
    const root = mkdtempSync(join(tmpdir(), 'tsclip-amp-'));
    const err = console.error;
    console.error = () => {};
    try {
      await trainCommand(['--data', 'shapes:32', '--model', 'tiny-vit', '--out', root, '--batch-size', '8', '--steps', '2',
        '--warmup', '1', '--precision', 'bf16', '--device', DEVICE]);
      const rows = readFileSync(join(root, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(rows.find((r) => r.kind === 'start')?.precision).toBe('bf16');
      const losses = rows.filter((r) => r.kind === 'step').map((r) => r.loss);
      expect(losses.length).toBe(2);
      expect(losses.every((l) => Number.isFinite(l) && l > 0)).toBe(true);
    } finally {
      console.error = err;
      rmSync(root, { recursive: true, force: true });
    }
  }, 120_000);
});
