// Shared by the op tests: the device under test, seeded random data, float64 references and
// gradient checks against central finite differences of the float64 reference.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { Tensor, type Device } from '../lib/tensor.js';

/** TSCLIP_TEST_DEVICE=cuda runs the op tests on the GPU (the GPU check script sets it). */
export const DEVICE: Device = (process.env.TSCLIP_TEST_DEVICE as Device) ?? 'cpu';

export const SHARED = join(__dirname, '..', '..', 'shared');
export const HAVE_SHARED = existsSync(SHARED);
export const SHARED_SKIP = HAVE_SHARED ? '' : ' (skipped: ../shared reference data missing)';

/** Deterministic uniform numbers in [lo, hi). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

export function tensor(data: ArrayLike<number>, shape: number[], requiresGrad = false): Tensor {
  return Tensor.from(Float32Array.from(data), shape, { device: DEVICE, requiresGrad });
}

export function toF64(t: Tensor): Float64Array {
  return Float64Array.from(t.toArraySync() as ArrayLike<number>);
}

/** max |a-b| / max(1e-12, max |b|) */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-12);
}

export function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5, what = ''): void {
  const e = relErr(a, b);
  if (!(e <= tol)) throw new Error(`${what} relative error ${e.toExponential(3)} > ${tol}`);
}

export interface GradCase {
  shapes: number[][];
  /** The op under test on tensors. */
  op: (xs: Tensor[]) => Tensor;
  /** The same op in float64 on flat arrays. */
  ref: (xs: Float64Array[]) => Float64Array;
  seed?: number;
  /** Inputs to differentiate (default all). */
  wrt?: number[];
  inputs?: Float64Array[];
  fwdTol?: number;
  gradTol?: number;
  eps?: number;
}

/**
 * Checks forward against the float64 reference, then the gradient of sum(out * R) for a random
 * R against central finite differences of the float64 reference.
 */
export function checkOp(c: GradCase): void {
  const seed = c.seed ?? 1;
  const xs = c.inputs ?? c.shapes.map((s, i) => randArray(s.reduce((a, b) => a * b, 1), seed * 100 + i));
  const wrt = c.wrt ?? xs.map((_, i) => i);
  const ts = xs.map((x, i) => tensor(x, c.shapes[i], wrt.includes(i)));
  const out = c.op(ts);
  const ref = c.ref(xs);
  expectClose(toF64(out), ref, c.fwdTol ?? 1e-5, 'forward');
  const R = randArray(ref.length, seed * 7 + 3);
  out.backward(tensor(R, [...out.shape]));
  const eps = c.eps ?? 1e-4;
  const loss = (ys: Float64Array[]): number => {
    const o = c.ref(ys);
    let s = 0;
    for (let i = 0; i < o.length; i++) s += o[i] * R[i];
    return s;
  };
  for (const i of wrt) {
    const g = ts[i].grad;
    if (!g) throw new Error(`input ${i} got no gradient`);
    // Central differences at up to 48 coordinates per input (all of them for small inputs).
    const n = xs[i].length;
    const pick = n <= 48 ? [...Array(n).keys()] : Array.from({ length: 48 }, (_, j) => Math.floor((j * n) / 48 + (seed * 13 + j * 7) % Math.max(1, Math.floor(n / 48))));
    const fd = new Float64Array(pick.length);
    const an = toF64(g);
    const got = new Float64Array(pick.length);
    for (let j = 0; j < pick.length; j++) {
      const k = pick[j];
      got[j] = an[k];
      const p = xs.map((x) => x.slice());
      const m = xs.map((x) => x.slice());
      p[i][k] += eps;
      m[i][k] -= eps;
      fd[j] = (loss(p) - loss(m)) / (2 * eps);
    }
    expectClose(got, fd, c.gradTol ?? 1e-3, `gradient of input ${i}`);
  }
  for (const t of ts) t.dispose();
  out.dispose();
}
