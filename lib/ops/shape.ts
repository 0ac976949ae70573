// Shape ops. reshape, permute, transpose, slice and expand are views where the layout allows;
// contiguous, concat and cast copy. All are differentiable.
import { Tensor, runRaw, numel, contiguousStrides, shapeString, type DType } from '../tensor.js';
import { needsGrad, record } from '../autograd.js';
import { check, checkTensor, fail, normDim, sameShape, checkSameDevice } from './util.js';
import { sumTo } from './reduce.js';

/** A contiguous tensor with t's values (t itself when it already is one: the caller must not dispose twice). */
export function contiguous(t: Tensor): Tensor {
  checkTensor('contiguous', 'input', t);
  if (t.isContiguous) return t;
  const out = Tensor.empty(t.shape, { dtype: t.dtype, device: t.device });
  runRaw('copy', [t], [out]);
  if (!needsGrad(t)) return out;
  return record(out, 'contiguous', [t], (g) => [g.view(g.shape, g.strides)]);
}

export function cast(t: Tensor, dtype: DType): Tensor {
  checkTensor('cast', 'input', t);
  const out = Tensor.empty(t.shape, { dtype, device: t.device });
  runRaw('copy', [t], [out]);
  if (!needsGrad(t) || dtype === 'int32' || dtype === 'uint8') return out;
  const from = t.dtype;
  return record(out, 'cast', [t], (g) => [cast(g, from)]);
}

export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  checkTensor('reshape', 'input', t);
  const sh = [...shape];
  const infer = sh.indexOf(-1);
  if (infer >= 0) {
    const rest = numel(sh.filter((_, i) => i !== infer));
    check('reshape', rest > 0 && t.size % rest === 0, () => `cannot reshape ${t.describe()} to ${shapeString(shape)}`);
    sh[infer] = t.size / rest;
  }
  check('reshape', numel(sh) === t.size && sh.every((s) => Number.isInteger(s) && s >= 0),
    () => `cannot reshape ${t.describe()} (${t.size} elements) to ${shapeString(shape)}`);
  const src = t.isContiguous ? t : contiguous(t);
  const out = src.view(sh, contiguousStrides(sh));
  if (src !== t) src.dispose();
  if (!needsGrad(t)) return out;
  const inShape = t.shape;
  return record(out, 'reshape', [t], (g) => [reshape(g, inShape)]);
}

export function flatten(t: Tensor, startDim = 0, endDim = -1): Tensor {
  const s = normDim('flatten', startDim, t.ndim), e = normDim('flatten', endDim, t.ndim);
  return reshape(t, [...t.shape.slice(0, s), numel(t.shape.slice(s, e + 1)), ...t.shape.slice(e + 1)]);
}

export function unsqueeze(t: Tensor, dim: number): Tensor {
  const d = dim < 0 ? dim + t.ndim + 1 : dim;
  return reshape(t, [...t.shape.slice(0, d), 1, ...t.shape.slice(d)]);
}

export function permute(t: Tensor, dims: readonly number[]): Tensor {
  checkTensor('permute', 'input', t);
  const ds = dims.map((d) => normDim('permute', d, t.ndim));
  check('permute', ds.length === t.ndim && new Set(ds).size === ds.length,
    () => `dims ${shapeString(dims)} are not a permutation of ${t.ndim} dimensions`);
  const out = t.view(ds.map((d) => t.shape[d]), ds.map((d) => t.strides[d]));
  if (!needsGrad(t)) return out;
  const inverse = new Array<number>(ds.length);
  ds.forEach((d, i) => (inverse[d] = i));
  return record(out, 'permute', [t], (g) => [permute(g, inverse)]);
}

export function transpose(t: Tensor, a = -2, b = -1): Tensor {
  const dims = t.shape.map((_, i) => i);
  const x = normDim('transpose', a, t.ndim), y = normDim('transpose', b, t.ndim);
  [dims[x], dims[y]] = [dims[y], dims[x]];
  return permute(t, dims);
}

/** Elements start..end-1 along dim (a view). */
export function slice(t: Tensor, dim: number, start: number, end: number): Tensor {
  checkTensor('slice', 'input', t);
  const d = normDim('slice', dim, t.ndim);
  const n = t.shape[d];
  check('slice', Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= n,
    () => `range ${start}..${end} is out of bounds for dimension ${dim} of ${t.describe()}`);
  const shape = t.shape.map((s, i) => (i === d ? end - start : s));
  const out = t.view(shape, t.strides, t.offset + start * t.strides[d]);
  if (!needsGrad(t)) return out;
  const inShape = t.shape;
  return record(out, 'slice', [t], (g) => {
    const full = Tensor.zeros(inShape, { dtype: g.dtype, device: g.device });
    const win = full.view(g.shape, full.strides, start * full.strides[d]);
    runRaw('copy', [g], [win]);
    win.dispose();
    return [full];
  });
}

/** Index one position along dim, dropping it. */
export function select(t: Tensor, dim: number, index: number): Tensor {
  const d = normDim('select', dim, t.ndim);
  const s = slice(t, d, index, index + 1);
  const out = reshape(s, t.shape.filter((_, i) => i !== d));
  s.dispose();
  return out;
}

export function expand(t: Tensor, shape: readonly number[]): Tensor {
  checkTensor('expand', 'input', t);
  check('expand', shape.length >= t.ndim, () => `cannot expand ${t.describe()} to ${shapeString(shape)}`);
  const pad = shape.length - t.ndim;
  const strides = shape.map((s, i) => {
    const j = i - pad;
    if (j < 0) return 0;
    if (t.shape[j] === s) return t.strides[j];
    if (t.shape[j] === 1) return 0;
    return fail('expand', `cannot expand ${t.describe()} to ${shapeString(shape)}`);
  });
  const out = t.view(shape, strides);
  if (!needsGrad(t)) return out;
  const inShape = t.shape;
  return record(out, 'expand', [t], (g) => [sumTo(g, inShape)]);
}

export function concat(ts: readonly Tensor[], dim = 0): Tensor {
  check('concat', ts.length > 0, 'needs at least one tensor');
  ts.forEach((t, i) => checkTensor('concat', `tensor ${i}`, t));
  checkSameDevice('concat', ...ts);
  const d = normDim('concat', dim, ts[0].ndim);
  for (const t of ts) {
    check('concat', t.ndim === ts[0].ndim && t.dtype === ts[0].dtype && t.shape.every((s, i) => i === d || s === ts[0].shape[i]),
      () => `shapes ${ts.map((x) => x.describe()).join(', ')} do not match outside dimension ${dim}`);
  }
  const shape = ts[0].shape.map((s, i) => (i === d ? ts.reduce((a, t) => a + t.shape[d], 0) : s));
  const out = Tensor.empty(shape, { dtype: ts[0].dtype, device: ts[0].device });
  let at = 0;
  for (const t of ts) {
    const win = out.view(t.shape, out.strides, at * out.strides[d]);
    runRaw('copy', [t], [win]);
    win.dispose();
    at += t.shape[d];
  }
  if (!needsGrad(...ts)) return out;
  const sizes = ts.map((t) => t.shape[d]);
  return record(out, 'concat', [...ts], (g) => {
    let o = 0;
    return sizes.map((n) => {
      const part = g.view(g.shape.map((s, i) => (i === d ? n : s)), g.strides, g.offset + o * g.strides[d]);
      o += n;
      return part;
    });
  });
}

export function stack(ts: readonly Tensor[], dim = 0): Tensor {
  const parts = ts.map((t) => unsqueeze(t, dim));
  const out = concat(parts, dim);
  for (const p of parts) p.dispose();
  return out;
}
