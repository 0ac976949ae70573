import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ops } from '../lib/index.js';
import { Tensor } from '../lib/tensor.js';
import { addonPath } from '../lib/native/addon.js';
import { UnaryKind } from '../lib/native/kinds.js';
import { checkOp, DEVICE, tensor, toF64, expectClose, randArray } from './helpers.js';

const sig = (x: number) => 1 / (1 + Math.exp(-x));
function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for float64 checks: use a series / continued fraction.
  const t = Math.abs(x);
  if (t < 3) {
    let sum = t, term = t;
    for (let n = 1; n < 100; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
}

const unaries: [string, (x: any) => any, (x: number) => number, number, number][] = [
  ['relu', ops.relu, (x) => Math.max(0, x), -1, 1],
  ['quickGelu', ops.quickGelu, (x) => x * sig(1.702 * x), -3, 3],
  ['gelu', ops.gelu, (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)), -3, 3],
  ['exp', ops.exp, Math.exp, -2, 2],
  ['log', ops.log, Math.log, 0.5, 3],
  ['neg', ops.neg, (x) => -x, -1, 1],
  ['sqrt', ops.sqrt, Math.sqrt, 0.5, 3],
  ['square', ops.square, (x) => x * x, -2, 2],
  ['tanh', ops.tanh, Math.tanh, -2, 2],
  ['sigmoid', ops.sigmoid, sig, -3, 3],
  ['abs', ops.abs, Math.abs, -1, 1],
];

function broadcastRef(a: Float64Array, as: number[], b: Float64Array, bs: number[], f: (x: number, y: number) => number) {
  const n = Math.max(as.length, bs.length);
  const A = [...Array(n - as.length).fill(1), ...as], B = [...Array(n - bs.length).fill(1), ...bs];
  const S = A.map((x, i) => Math.max(x, B[i]));
  const total = S.reduce((p, q) => p * q, 1);
  const out = new Float64Array(total);
  const idx = (shape: number[], coords: number[]) => coords.reduce((o, c, i) => o * shape[i] + (shape[i] === 1 ? 0 : c), 0);
  for (let i = 0; i < total; i++) {
    const coords: number[] = [];
    let r = i;
    for (let d = n - 1; d >= 0; d--) {
      coords[d] = r % S[d];
      r = Math.floor(r / S[d]);
    }
    out[i] = f(a[idx(A, coords)], b[idx(B, coords)]);
  }
  return out;
}

describe('elementwise ops', () => {
  for (const [name, op, ref, lo, hi] of unaries) {
    it(`${name}: forward and gradient`, () => {
      const x = randArray(37, name.length, lo, hi);
      checkOp({ shapes: [[37]], inputs: [x], op: ([t]) => op(t), ref: ([v]) => v.map(ref) });
    });
  }

  // Long arrays run the activations built on exp a block at a time, split over threads, with a
  // ragged tail; values reach where exp overflows and underflows in float32.
  const expActs = [
    ['quickGelu', ops.quickGelu, UnaryKind.quickGelu, (x: number) => x * sig(1.702 * x), (x: number) => sig(1.702 * x) * (1 + 1.702 * x * (1 - sig(1.702 * x)))],
    ['sigmoid', ops.sigmoid, UnaryKind.sigmoid, sig, (x: number) => sig(x) * (1 - sig(x))],
    ['exp', ops.exp, UnaryKind.exp, Math.exp, Math.exp],
  ] as const;
  const ramp = (n: number) => Float64Array.from({ length: n }, (_, i) => Math.fround(-100 + (180 * i) / (n - 1)));
  // y = f(x) and dx = g * f'(x) against float64. 1 - s cancels near s = 1: an absolute error of a
  // float32 ulp at 1 is allowed besides the relative one.
  function checkExpAct(name: string, f: (x: number) => number, df: (x: number) => number, xs: ArrayLike<number>, gs: ArrayLike<number>, fy: ArrayLike<number>, dx: ArrayLike<number>) {
    const ok = (got: number, w: number) => (Number.isFinite(w) ? Math.abs(got - w) <= 2e-6 * Math.abs(w) + 1e-7 : got === w);
    for (let i = 0; i < xs.length; i++) {
      const want = Math.fround(f(xs[i])), dwant = Math.fround(Math.fround(gs[i]) * df(xs[i]));
      if (!ok(fy[i], want)) throw new Error(`${name}(${xs[i]}) = ${fy[i]}, expected ${want}`);
      if (!ok(dx[i], dwant)) throw new Error(`${name}'(${xs[i]}) * ${gs[i]} = ${dx[i]}, expected ${dwant}`);
    }
  }
  for (const [name, op, , f, df] of expActs) {
    it(`${name} over 70,001 values from -100 to 80, and its gradient`, () => {
      const n = 70001;
      const xs = ramp(n), gs = randArray(n, 3);
      const x = tensor(xs, [n], true), g = tensor(gs, [n]);
      const y = op(x);
      ops.sum(ops.mul(y, g)).backward();
      checkExpAct(name, f, df, xs, gs, toF64(y), toF64(x.grad!));
      for (const t of [x, g, y]) t.dispose();
    });
  }
  // The CPU picks its widest vector path; TSCLIP_SIMD caps it, in a fresh process.
  it.skipIf(DEVICE !== 'cpu')('the narrower vector paths (TSCLIP_SIMD=avx2, scalar) agree too', () => {
    const script = `
      const a = require(process.env.ADDON), names = a.opNames(), n = 5001;
      const xs = new Float32Array(n).map((_, i) => -100 + (180 * i) / (n - 1)), gs = new Float32Array(n).map((_, i) => Math.sin(i));
      const put = (arr) => { const s = new a.Storage(arr.byteLength, 0); s.write(0, arr); return s; };
      const d = (s) => [s, 0, 0, [n], [1]];
      const x = put(xs), g = put(gs), out = {};
      for (const k of ${JSON.stringify(expActs.map((e) => e[2]))}) {
        const y = new a.Storage(4 * n, 0), dx = new a.Storage(4 * n, 0);
        a.run(names.indexOf('unary'), [d(x)], [d(y)], [k], []);
        a.run(names.indexOf('unary_backward'), [d(x), d(g)], [d(dx)], [k], []);
        out[k] = [Array.from(new Float32Array(y.read(0, 4 * n))), Array.from(new Float32Array(dx.read(0, 4 * n)))];
      }
      process.stdout.write(JSON.stringify({ xs: Array.from(xs), gs: Array.from(gs), out }));`;
    for (const simd of ['avx2', 'scalar']) {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, TSCLIP_SIMD: simd, ADDON: addonPath() }, encoding: 'utf8', maxBuffer: 64 << 20 });
      expect(r.status, r.stderr).toBe(0);
      const { xs, gs, out } = JSON.parse(r.stdout);
      for (const [name, , kind, f, df] of expActs) checkExpAct(`${name} (${simd})`, f, df, xs, gs, out[kind][0], out[kind][1]);
    }
  });

  const cases: [number[], number[]][] = [[[5, 7], [5, 7]], [[3, 4, 5], [5]], [[3, 1, 5], [4, 1]], [[2, 3], [1]], [[7], [3, 1]]];
  const binaries: [string, (a: any, b: any) => any, (x: number, y: number) => number][] = [
    ['add', ops.add, (x, y) => x + y],
    ['sub', ops.sub, (x, y) => x - y],
    ['mul', ops.mul, (x, y) => x * y],
    ['div', ops.div, (x, y) => x / y],
  ];
  for (const [name, op, f] of binaries) {
    for (const [as, bs] of cases) {
      it(`${name} broadcasting [${as}] with [${bs}]`, () => {
        const na = as.reduce((p, q) => p * q, 1), nb = bs.reduce((p, q) => p * q, 1);
        const a = randArray(na, 11), b = randArray(nb, 12, 0.5, 2);
        checkOp({ shapes: [as, bs], inputs: [a, b], op: ([x, y]) => op(x, y), ref: ([x, y]) => broadcastRef(x, as, y, bs, f) });
      });
    }
  }

  it('scalar operands and affine', () => {
    const x = randArray(10, 3);
    checkOp({ shapes: [[10]], inputs: [x], op: ([t]) => ops.sub(2, ops.mul(t, 3)), ref: ([v]) => v.map((e) => 2 - 3 * e) });
    checkOp({ shapes: [[10]], inputs: [x.map((e) => e + 2)], op: ([t]) => ops.div(1, t), ref: ([v]) => v.map((e) => 1 / e) });
  });

  it('works on strided views', () => {
    const a = tensor(randArray(12, 5), [3, 4]);
    const t = ops.transpose(a);
    const out = ops.add(t, t);
    const ref = toF64(ops.contiguous(t)).map((v) => 2 * v);
    expectClose(toF64(out), ref, 1e-6);
  });

  it('names the op and shapes on a mismatch', () => {
    const a = Tensor.zeros([2, 3], { device: DEVICE }), b = Tensor.zeros([4], { device: DEVICE });
    expect(() => ops.add(a, b)).toThrow(/add: shapes \[2,3\] and \[4\] cannot be broadcast/);
    const i = Tensor.zeros([2, 3], { device: DEVICE, dtype: 'int32' });
    expect(() => ops.mul(a, i)).toThrow(/mul: b must be float32, got int32\[2,3\]/);
  });
});

describe('reductions', () => {
  it('sum and mean over dims, with gradients', () => {
    const shape = [3, 4, 5];
    const x = randArray(60, 9);
    const sumRef = (v: Float64Array, dim: number) => {
      const out = new Float64Array(60 / shape[dim]);
      const [o, m, inn] = [shape.slice(0, dim).reduce((a, b) => a * b, 1), shape[dim], shape.slice(dim + 1).reduce((a, b) => a * b, 1)];
      for (let i = 0; i < o; i++) for (let j = 0; j < m; j++) for (let k = 0; k < inn; k++) out[i * inn + k] += v[(i * m + j) * inn + k];
      return out;
    };
    for (const dim of [0, 1, 2]) {
      checkOp({ shapes: [shape], inputs: [x], op: ([t]) => ops.sum(t, dim), ref: ([v]) => sumRef(v, dim) });
      checkOp({ shapes: [shape], inputs: [x], op: ([t]) => ops.mean(t, dim, true), ref: ([v]) => sumRef(v, dim).map((e) => e / shape[dim]) });
    }
    checkOp({ shapes: [shape], inputs: [x], op: ([t]) => ops.sum(t), ref: ([v]) => Float64Array.of(v.reduce((a, b) => a + b, 0)) });
  });

  it('max and sum of squares', () => {
    const x = tensor([1, -5, 3, 2, 8, -1], [2, 3]);
    expect(Array.from(ops.max(x, 1).toArraySync())).toEqual([3, 8]);
    expect(ops.sumSquares(x).item()).toBe(1 + 25 + 9 + 4 + 64 + 1);
  });
});
