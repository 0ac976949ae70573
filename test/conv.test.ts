import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Tensor, runRaw } from '../lib/tensor.js';
import { avgPool2d, batchNorm2d, conv2d } from '../lib/ops/conv.js';
import { affine, relu } from '../lib/ops/elementwise.js';
import { permute } from '../lib/ops/shape.js';
import { info, setNumThreads } from '../lib/runtime.js';
import { DEVICE, SHARED, checkOp, expectClose, randArray, tensor, toF64 } from './helpers.js';
import { avgPoolRef, batchNormRef, conv2dGradRef, conv2dRef, convOutSize, type Shape4 } from './ref/conv.js';

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

interface ConvCase {
  name: string;
  x: Shape4;
  w: Shape4;
  stride: number;
  padding: number;
  bias: boolean;
}

const convCases: ConvCase[] = [
  { name: '3x3 stride 1 pad 1, 3-channel stem', x: [2, 3, 7, 9], w: [4, 3, 3, 3], stride: 1, padding: 1, bias: true },
  { name: '3x3 stride 2 pad 1, odd sizes, 3 images', x: [3, 5, 8, 7], w: [6, 5, 3, 3], stride: 2, padding: 1, bias: false },
  { name: '3x3 stride 2 pad 0', x: [2, 3, 9, 11], w: [5, 3, 3, 3], stride: 2, padding: 0, bias: true },
  { name: '1x1 stride 1 (pointwise)', x: [3, 4, 5, 6], w: [5, 4, 1, 1], stride: 1, padding: 0, bias: true },
  { name: '1x1 stride 2', x: [2, 4, 7, 7], w: [3, 4, 1, 1], stride: 2, padding: 0, bias: false },
  { name: '1x1 with padding 1', x: [1, 2, 3, 4], w: [3, 2, 1, 1], stride: 1, padding: 1, bias: true },
  { name: 'patch embedding kernel = stride = 4', x: [2, 3, 8, 12], w: [5, 3, 4, 4], stride: 4, padding: 0, bias: true },
  { name: 'patch embedding with a remainder (floor)', x: [3, 2, 10, 13], w: [4, 2, 4, 4], stride: 4, padding: 0, bias: false },
  { name: '2x3 kernel stride 1 pad 1', x: [1, 2, 6, 5], w: [3, 2, 2, 3], stride: 1, padding: 1, bias: true },
  { name: '5x5 stride 3 pad 2', x: [2, 3, 11, 10], w: [2, 3, 5, 5], stride: 3, padding: 2, bias: true },
  { name: 'kernel covering the whole input', x: [2, 3, 4, 4], w: [3, 3, 4, 4], stride: 1, padding: 0, bias: true },
];

describe('conv2d', () => {
  it.each(convCases)('$name: forward and gradients of x, w, bias', (c) => {
    const shapes: number[][] = [c.x, c.w, ...(c.bias ? [[c.w[0]]] : [])];
    checkOp({
      shapes,
      seed: prod(c.x) + c.stride,
      op: ([x, w, b]) => conv2d(x, w, b ?? null, { stride: c.stride, padding: c.padding }),
      ref: ([x, w, b]) => conv2dRef(x, c.x, w, c.w, b ?? null, c.stride, c.padding),
    });
  });

  it('gradient of the bias alone, and of the input alone', () => {
    const x: Shape4 = [2, 3, 6, 5], w: Shape4 = [4, 3, 3, 3];
    const ref = ([a, b, c]: Float64Array[]) => conv2dRef(a, x, b, w, c, 1, 1);
    const op = ([a, b, c]: Tensor[]) => conv2d(a, b, c, { padding: 1 });
    checkOp({ shapes: [x, w, [4]], wrt: [2], op, ref });
    checkOp({ shapes: [x, w, [4]], wrt: [0], op, ref });
    checkOp({ shapes: [x, w, [4]], wrt: [1], op, ref });
  });

  // Larger channel counts make the GEMM depth exceed one cache block; each thread count takes
  // the shared schedule (one image at a time) or gives whole images to threads.
  const mediumCases: ConvCase[] = [
    { name: '3x3 pad 1, 40 channels', x: [3, 40, 13, 11], w: [20, 40, 3, 3], stride: 1, padding: 1, bias: true },
    { name: '3x3 stride 2, 4 images', x: [4, 24, 15, 15], w: [33, 24, 3, 3], stride: 2, padding: 1, bias: true },
    { name: '1x1, 64 -> 48', x: [4, 64, 7, 9], w: [48, 64, 1, 1], stride: 1, padding: 0, bias: true },
    { name: 'patch 8, 6 channels', x: [3, 6, 32, 24], w: [40, 6, 8, 8], stride: 8, padding: 0, bias: true },
    // Over 1M column entries per image: unfolded a chunk of output rows at a time (72 + 24 rows).
    { name: '3x3 pad 1 on 96x100 (chunked unfold)', x: [2, 16, 96, 100], w: [4, 16, 3, 3], stride: 1, padding: 1, bias: true },
    { name: '3x3 stride 2 on 200x200 (chunked unfold: 72 + 28 rows)', x: [2, 16, 200, 200], w: [3, 16, 3, 3], stride: 2, padding: 1, bias: false },
  ];
  const threads = info().threads;
  afterAll(() => setNumThreads(threads));
  it.each(mediumCases)('$name: forward and backward against the adjoint reference, 1/2/4 threads', (c) => {
    const xv = randArray(prod(c.x), 11), wv = randArray(prod(c.w), 12, -0.2, 0.2), bv = randArray(c.w[0], 13);
    const yRef = conv2dRef(xv, c.x, wv, c.w, bv, c.stride, c.padding);
    const [Ho, Wo] = convOutSize(c.x[2], c.x[3], c.w[2], c.w[3], c.stride, c.padding);
    const dyv = randArray(c.x[0] * c.w[0] * Ho * Wo, 14);
    const g = conv2dGradRef(xv, c.x, wv, c.w, dyv, c.stride, c.padding);
    for (const t of [1, 2, 4]) {
      setNumThreads(t);
      const x = tensor(xv, c.x, true), w = tensor(wv, c.w, true), b = tensor(bv, [c.w[0]], true);
      const y = conv2d(x, w, b, { stride: c.stride, padding: c.padding });
      expectClose(toF64(y), yRef, 1e-5, `${t} threads: forward`);
      const dy = tensor(dyv, [...y.shape]);
      y.backward(dy);
      expectClose(toF64(x.grad!), g.dx, 1e-5, `${t} threads: dx`);
      expectClose(toF64(w.grad!), g.dw, 1e-5, `${t} threads: dw`);
      expectClose(toF64(b.grad!), g.db, 1e-5, `${t} threads: dbias`);
      for (const z of [x, w, b, y, dy]) z.dispose();
    }
    setNumThreads(threads);
  });

  it('takes non-contiguous inputs (a permuted NHWC view)', () => {
    const xs: Shape4 = [2, 3, 5, 6], ws: Shape4 = [4, 3, 3, 3];
    const xv = randArray(prod(xs), 21), wv = randArray(prod(ws), 22);
    // Stored as [N,H,W,C], viewed as [N,C,H,W].
    const nhwc = new Float64Array(xv.length);
    for (let n = 0; n < 2; n++) for (let c = 0; c < 3; c++) for (let h = 0; h < 5; h++) for (let w = 0; w < 6; w++)
      nhwc[((n * 5 + h) * 6 + w) * 3 + c] = xv[((n * 3 + c) * 5 + h) * 6 + w];
    const base = tensor(nhwc, [2, 5, 6, 3], true);
    const x = permute(base, [0, 3, 1, 2]);
    expect(x.isContiguous).toBe(false);
    const w = tensor(wv, ws);
    const y = conv2d(x, w, null, { stride: 2, padding: 1 });
    expectClose(toF64(y), conv2dRef(xv, xs, wv, ws, null, 2, 1), 1e-5, 'forward');
    const dyv = randArray(y.size, 23);
    y.backward(tensor(dyv, [...y.shape]));
    const g = conv2dGradRef(xv, xs, wv, ws, dyv, 2, 1);
    const gNhwc = toF64(base.grad!);
    const gx = new Float64Array(xv.length);
    for (let n = 0; n < 2; n++) for (let c = 0; c < 3; c++) for (let h = 0; h < 5; h++) for (let w2 = 0; w2 < 6; w2++)
      gx[((n * 3 + c) * 5 + h) * 6 + w2] = gNhwc[((n * 5 + h) * 6 + w2) * 3 + c];
    expectClose(gx, g.dx, 1e-5, 'dx through the view');
  });

  it('rejects bad inputs with the op and the shapes', () => {
    const x = tensor(randArray(2 * 3 * 5 * 5, 1), [2, 3, 5, 5]);
    const w = tensor(randArray(4 * 2 * 3 * 3, 2), [4, 2, 3, 3]);
    expect(() => conv2d(x, w)).toThrow(/conv2d: input float32\[2,3,5,5\] has 3 channels but weight float32\[4,2,3,3\] expects 2/);
    const x3 = tensor(randArray(3 * 5 * 5, 3), [3, 5, 5]);
    const w3 = tensor(randArray(4 * 3 * 9, 4), [4, 3, 3, 3]);
    expect(() => conv2d(x3, w3)).toThrow(/conv2d: input must have 4 dimensions, got float32\[3,5,5\]/);
    expect(() => conv2d(x, tensor([1, 2, 3], [3]))).toThrow(/conv2d: weight must have 4 dimensions, got float32\[3\]/);
    expect(() => conv2d(x, w3, tensor([1, 2], [2]))).toThrow(/conv2d: bias float32\[2\] must be \[4\]/);
    const big = tensor(randArray(2 * 3 * 7 * 7, 5), [2, 3, 7, 7]);
    expect(() => conv2d(x, big)).toThrow(/conv2d: kernel 7x7 .*float32\[2,3,7,7\].* larger than input float32\[2,3,5,5\]/);
    expect(() => conv2d(x, w3, null, { stride: 0 })).toThrow(/conv2d: stride must be an integer >= 1, got 0/);
    expect(() => conv2d(x, w3, null, { padding: -1 })).toThrow(/conv2d: padding must be an integer >= 0/);
    for (const t of [x, w, x3, w3, big]) t.dispose();
  });

  it('native kernels check shapes again (CPU messages)', () => {
    const cpu = { device: 'cpu' as const };
    const x = Tensor.zeros([2, 3, 5, 5], cpu), w = Tensor.zeros([4, 3, 3, 3], cpu), w2 = Tensor.zeros([4, 2, 3, 3], cpu);
    const y = Tensor.empty([2, 4, 4, 4], cpu);
    expect(() => runRaw('conv2d_fwd', [x, w, null], [y], [1, 1])).toThrow(/conv2d_fwd: y is float32\[2,4,4,4\], expected \[2,4,5,5\]/);
    expect(() => runRaw('conv2d_fwd', [x, w2, null], [y], [1, 1])).toThrow(/conv2d_fwd: w float32\[4,2,3,3\] expects 2 input channels, x float32\[2,3,5,5\] has 3/);
    expect(() => runRaw('avgpool2d_fwd', [x], [y], [2, 2])).toThrow(/avgpool2d_fwd: y is float32\[2,4,4,4\], expected \[2,3,2,2\]/);
    expect(() => runRaw('batchnorm_fwd', [x, null, null, null, null], [x], [0], [0.1, 1e-5])).toThrow(/batchnorm_fwd: evaluation mode needs running_mean and running_var/);
    for (const t of [x, w, w2, y]) t.dispose();
  });
});

describe('batchNorm2d', () => {
  const xs: Shape4 = [3, 4, 5, 3];
  const C = xs[1];

  it('training: forward and gradients of x, weight, bias', () => {
    const rm0 = randArray(C, 31), rv0 = randArray(C, 32, 0.5, 2);
    checkOp({
      shapes: [xs, [C], [C]],
      seed: 3,
      op: ([x, w, b]) => batchNorm2d(x, w, b, tensor(rm0, [C]), tensor(rv0, [C]), { training: true }),
      ref: ([x, w, b]) => batchNormRef(x, xs, w, b, rm0, rv0, true, 0.1, 1e-5).y,
      gradTol: 2e-3,
    });
  });

  it('training updates the running statistics in place (unbiased variance), step after step', () => {
    const rm0 = randArray(C, 33), rv0 = randArray(C, 34, 0.5, 2);
    const rm = tensor(rm0, [C]), rv = tensor(rv0, [C]);
    const w = tensor(randArray(C, 35), [C]), b = tensor(randArray(C, 36), [C]);
    let refMean: Float64Array = toF64(rm), refVar: Float64Array = toF64(rv);
    for (const [step, momentum] of [[0, 0.1], [1, 0.25]] as const) {
      // Offset and scaled data, so the mean and variance both move the statistics.
      const xv = randArray(prod(xs), 40 + step, 1, 4);
      const x = tensor(xv, xs);
      const y = batchNorm2d(x, w, b, rm, rv, { training: true, momentum, eps: 1e-3 });
      const ref = batchNormRef(Float32Array.from(xv), xs, toF64(w), toF64(b), refMean, refVar, true, momentum, 1e-3);
      expectClose(toF64(y), ref.y, 1e-5, `step ${step} y`);
      expectClose(toF64(rm), ref.runningMean, 1e-6, `step ${step} running mean`);
      expectClose(toF64(rv), ref.runningVar, 1e-6, `step ${step} running var`);
      refMean = ref.runningMean;
      refVar = ref.runningVar;
      x.dispose();
      y.dispose();
    }
    for (const t of [rm, rv, w, b]) t.dispose();
  });

  it('evaluation: running statistics, left unchanged; gradients of x, weight, bias', () => {
    const rm0 = randArray(C, 51), rv0 = randArray(C, 52, 0.5, 2);
    const rm = tensor(rm0, [C]), rv = tensor(rv0, [C]);
    const before = [toF64(rm), toF64(rv)];
    checkOp({
      shapes: [xs, [C], [C]],
      seed: 5,
      op: ([x, w, b]) => batchNorm2d(x, w, b, rm, rv, { training: false, eps: 1e-4 }),
      ref: ([x, w, b]) => batchNormRef(x, xs, w, b, before[0], before[1], false, 0.1, 1e-4).y,
    });
    expect(Array.from(toF64(rm))).toEqual(Array.from(before[0]));
    expect(Array.from(toF64(rv))).toEqual(Array.from(before[1]));
  });

  it('without weight, bias or running statistics (batch statistics in both modes)', () => {
    const s: Shape4 = [2, 3, 4, 1];
    const zeros = new Float64Array(3), ones = new Float64Array(3).fill(1);
    for (const training of [true, false]) {
      checkOp({
        shapes: [s],
        seed: 7,
        op: ([x]) => batchNorm2d(x, null, null, null, null, { training }),
        ref: ([x]) => batchNormRef(x, s, null, null, zeros, ones, true, 0.1, 1e-5).y,
        gradTol: 2e-3,
      });
    }
  });

  it('stays accurate when the mean is far larger than the spread', () => {
    const s: Shape4 = [4, 2, 6, 6];
    const xv = Float32Array.from(randArray(prod(s), 61, 999, 1001));
    const x = tensor(xv, s, true);
    const rm = Tensor.zeros([2], { device: DEVICE }), rv = Tensor.ones([2], { device: DEVICE });
    const y = batchNorm2d(x, null, null, rm, rv, { training: true });
    const ref = batchNormRef(xv, s, null, null, [0, 0], [1, 1], true, 0.1, 1e-5);
    expectClose(toF64(y), ref.y, 1e-4, 'forward');
    expectClose(toF64(rm), ref.runningMean, 1e-6, 'running mean');
    expectClose(toF64(rv), ref.runningVar, 1e-4, 'running var');
    for (const t of [x, y, rm, rv]) t.dispose();
  });

  it('rejects bad inputs with the op and the shapes', () => {
    const x = tensor(randArray(prod(xs), 71), xs);
    const v = (n: number) => tensor(new Float64Array(n).fill(1), [n]);
    expect(() => batchNorm2d(x, v(3), v(4), v(4), v(4), { training: true })).toThrow(/batchNorm2d: weight float32\[3\] must be \[4\]/);
    expect(() => batchNorm2d(x, v(4), v(4), v(4), v(5), { training: false })).toThrow(/batchNorm2d: runningVar float32\[5\] must be \[4\]/);
    expect(() => batchNorm2d(x, null, null, v(4), null, { training: false })).toThrow(/batchNorm2d: runningMean and runningVar must be given together/);
    const x3 = tensor(randArray(60, 72), [3, 4, 5]);
    expect(() => batchNorm2d(x3, null, null, null, null, { training: true })).toThrow(/batchNorm2d: input must have 4 dimensions, got float32\[3,4,5\]/);
    const one = tensor([1, 2], [1, 2, 1, 1]);
    expect(() => batchNorm2d(one, null, null, null, null, { training: true })).toThrow(/batchNorm2d: batch statistics need more than 1 value per channel, got input float32\[1,2,1,1\]/);
    x.dispose();
    x3.dispose();
    one.dispose();
  });
});

describe('avgPool2d', () => {
  const cases: { name: string; x: Shape4; k: number; s?: number }[] = [
    { name: 'kernel 2 on [2,3,8,6]', x: [2, 3, 8, 6], k: 2 },
    { name: 'kernel 2 on [2,3,7,9] (floor drops the last row and column)', x: [2, 3, 7, 9], k: 2 },
    { name: 'kernel 3 stride 2 (overlapping windows)', x: [1, 2, 8, 7], k: 3, s: 2 },
    { name: 'kernel 3 on [2,2,9,9]', x: [2, 2, 9, 9], k: 3 },
    { name: 'kernel 1', x: [1, 3, 4, 5], k: 1 },
    { name: 'kernel 2 stride 3 (gaps between windows)', x: [2, 2, 5, 6], k: 2, s: 3 },
  ];
  it.each(cases)('$name: forward and gradient', (c) => {
    checkOp({
      shapes: [c.x],
      seed: c.k * 10 + (c.s ?? 0),
      op: ([x]) => avgPool2d(x, c.k, c.s),
      ref: ([x]) => avgPoolRef(x, c.x, c.k, c.s ?? c.k),
    });
  });

  it('rejects bad inputs with the op and the shapes', () => {
    const x = tensor(randArray(2 * 3 * 4 * 4, 81), [2, 3, 4, 4]);
    expect(() => avgPool2d(x, 5)).toThrow(/avgPool2d: kernel 5 is larger than input float32\[2,3,4,4\]/);
    expect(() => avgPool2d(x, 2, 0)).toThrow(/avgPool2d: stride must be an integer >= 1, got 0/);
    const x2 = tensor([1, 2, 3, 4], [2, 2]);
    expect(() => avgPool2d(x2, 2)).toThrow(/avgPool2d: input must have 4 dimensions, got float32\[2,2\]/);
    x.dispose();
    x2.dispose();
  });
});

describe('backward after the inputs were disposed', () => {
  // Models free intermediate activations early; the saved state must be enough for backward.
  it('conv2d -> batchNorm2d -> avgPool2d with every intermediate disposed', () => {
    const xs: Shape4 = [2, 3, 6, 6], ws: Shape4 = [4, 3, 3, 3], ys: Shape4 = [2, 4, 6, 6];
    const xv = randArray(prod(xs), 91), wv = randArray(prod(ws), 92);
    const x = tensor(xv, xs, true), w = tensor(wv, ws, true);
    const a = affine(x, 1);
    const y = conv2d(a, w, null, { padding: 1 });
    const yb = batchNorm2d(y, null, null, null, null, { training: true });
    const out = avgPool2d(yb, 2);
    for (const t of [a, y, yb]) t.dispose();
    // A non-uniform readout: the plain sum of batch-normalised values is constant.
    const R = Float64Array.from({ length: out.size }, (_, i) => 1 + (i % 5));
    out.backward(tensor(R, [...out.shape]));
    const f = (xa: Float64Array) => {
      const c = conv2dRef(xa, xs, wv, ws, null, 1, 1);
      const n = batchNormRef(c, ys, null, null, [0, 0, 0, 0], [1, 1, 1, 1], true, 0.1, 1e-5).y;
      return avgPoolRef(n, ys, 2, 2).reduce((s, v, i) => s + v * R[i], 0);
    };
    const eps = 1e-6;
    const fd = xv.map((_, k) => {
      const pp = xv.slice(), mm = xv.slice();
      pp[k] += eps;
      mm[k] -= eps;
      return (f(pp) - f(mm)) / (2 * eps);
    });
    expectClose(toF64(x.grad!), fd, 2e-3, 'dx');
    expect(w.grad).not.toBeNull();
    for (const t of [x, w, out]) t.dispose();
  });
});

// The ModifiedResNet stem and the first bottleneck of a tiny OpenAI RN model, run in training mode
// with these ops, must leave the running statistics PyTorch recorded after one training step.
const RN = join(SHARED, 'fixtures', 'openai-rn-tiny');
describe.skipIf(!existsSync(RN))(`openai-rn-tiny fixture: BatchNorm train-mode running statistics${existsSync(RN) ? '' : ' (skipped: ../shared missing)'}`, () => {
  function readF32(file: string): Map<string, { shape: number[]; data: Float32Array }> {
    const buf = readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [k, v] of Object.entries(header)) {
      if (k === '__metadata__' || v.dtype !== 'F32') continue;
      const bytes = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
      out.set(k, { shape: v.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)) });
    }
    return out;
  }

  it('stem (3x3 stride 2 + two 3x3, avg pool 2) and layer1.0 (1x1, 3x3, 1x1, downsample)', () => {
    const W = readF32(join(RN, 'weights.safetensors'));
    const io = readF32(join(RN, 'io.safetensors'));
    const after = readF32(join(RN, 'bn_running_after_train_step.safetensors'));
    const temps: Tensor[] = [];
    const t = (key: string, src = W) => {
      const e = src.get(key);
      if (!e) throw new Error(`fixture key ${key} missing`);
      const v = Tensor.from(e.data.slice(), e.shape, { device: DEVICE });
      temps.push(v);
      return v;
    };
    const checked: string[] = [];
    const convBn = (x: Tensor, conv: string, bn: string, stride: number, padding: number, act: boolean): Tensor => {
      const y = conv2d(x, t(`${conv}.weight`), null, { stride, padding });
      const rm = t(`${bn}.running_mean`), rv = t(`${bn}.running_var`);
      const z = batchNorm2d(y, t(`${bn}.weight`), t(`${bn}.bias`), rm, rv, { training: true, momentum: 0.1, eps: 1e-5 });
      expectClose(toF64(rm), after.get(`${bn}.running_mean`)!.data, 1e-6, `${bn}.running_mean`);
      expectClose(toF64(rv), after.get(`${bn}.running_var`)!.data, 1e-6, `${bn}.running_var`);
      checked.push(bn);
      temps.push(y, rm, rv, z);
      if (!act) return z;
      const r = relu(z);
      temps.push(r);
      return r;
    };
    let h = t('images', io);
    h = convBn(h, 'visual.conv1', 'visual.bn1', 2, 1, true);
    h = convBn(h, 'visual.conv2', 'visual.bn2', 1, 1, true);
    h = convBn(h, 'visual.conv3', 'visual.bn3', 1, 1, true);
    h = avgPool2d(h, 2);
    temps.push(h);
    expect(h.shape).toEqual([4, 8, 16, 16]);
    let a = convBn(h, 'visual.layer1.0.conv1', 'visual.layer1.0.bn1', 1, 0, true);
    a = convBn(a, 'visual.layer1.0.conv2', 'visual.layer1.0.bn2', 1, 1, true);
    convBn(a, 'visual.layer1.0.conv3', 'visual.layer1.0.bn3', 1, 0, false);
    const d = avgPool2d(h, 1); // the block's stride-1 downsample pools with kernel 1
    temps.push(d);
    convBn(d, 'visual.layer1.0.downsample.0', 'visual.layer1.0.downsample.1', 1, 0, false);
    expect(checked.length).toBe(7);
    for (const x of temps) x.dispose();
  });
});
