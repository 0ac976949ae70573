// Shared checks and helpers for the op wrappers: every user-facing error names the op and shapes.
import { Tensor, shapeString, type DType } from '../tensor.js';

export function fail(op: string, why: string): never {
  throw new Error(`${op}: ${why}`);
}

export function check(op: string, ok: boolean, why: string | (() => string)): void {
  if (!ok) fail(op, typeof why === 'string' ? why : why());
}

export function checkTensor(op: string, name: string, t: unknown): asserts t is Tensor {
  if (!(t instanceof Tensor)) fail(op, `${name} must be a Tensor, got ${t === null ? 'null' : typeof t}`);
  if (t.disposed) fail(op, `${name} was used after dispose()`);
}

export function checkDtype(op: string, name: string, t: Tensor, ...dtypes: DType[]): void {
  if (!dtypes.includes(t.dtype)) fail(op, `${name} must be ${dtypes.join(' or ')}, got ${t.describe()}`);
}

export function checkRank(op: string, name: string, t: Tensor, ...ranks: number[]): void {
  if (!ranks.includes(t.ndim)) fail(op, `${name} must have ${ranks.join(' or ')} dimensions, got ${t.describe()}`);
}

export function checkSameDevice(op: string, ...ts: (Tensor | null | undefined)[]): void {
  const real = ts.filter((t): t is Tensor => !!t);
  const devs = new Set(real.map((t) => t.device));
  if (devs.size > 1) fail(op, `tensors on different devices: ${real.map((t) => `${t.describe()} on ${t.device}`).join(', ')}`);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

export function normDim(op: string, dim: number, ndim: number): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= Math.max(ndim, 1)) fail(op, `dimension ${dim} is out of range for ${ndim} dimensions`);
  return d;
}

export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) fail(op, `shapes ${shapeString(a)} and ${shapeString(b)} cannot be broadcast together`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** A stride-0 view of t broadcast to `shape` (for native kernels that take broadcast strides). */
export function broadcastView(t: Tensor, shape: readonly number[]): Tensor {
  const pad = shape.length - t.ndim;
  const strides = shape.map((s, i) => {
    const j = i - pad;
    if (j < 0) return 0;
    return t.shape[j] === 1 && s !== 1 ? 0 : t.strides[j];
  });
  return t.view(shape, strides);
}
