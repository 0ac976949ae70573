// Reductions: sum, mean, max and sum of squares over any dimensions, and sumTo (the backward of a
// broadcast).
import { Tensor, contiguousStrides, copyContiguous, runRaw } from '../tensor.js';
import { needsGrad, record } from '../autograd.js';
import { ReduceKind, UnaryKind, type ReduceKindName } from '../native/kinds.js';
import { checkDtype, checkTensor, normDim, sameShape } from './util.js';
import { contiguous, expand, reshape } from './shape.js';

/** Reduces one dimension of a contiguous float32 tensor (no autograd); keeps the dim as size 1. */
function reduceDim(x: Tensor, dim: number, kind: ReduceKindName): Tensor {
  const outer = x.shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const shape = x.shape.map((s, i) => (i === dim ? 1 : s));
  const out = Tensor.empty(shape, { device: x.device });
  runRaw('reduce', [x], [out], [outer, x.shape[dim], inner, ReduceKind[kind]]);
  return out;
}

function reduceDims(op: string, x: Tensor, dims: number[] | undefined, keepDim: boolean, kind: ReduceKindName): { out: Tensor; kept: number[] } {
  checkTensor(op, 'input', x);
  checkDtype(op, 'input', x, 'float32');
  const all = dims === undefined ? x.shape.map((_, i) => i) : [...new Set(dims.map((d) => normDim(op, d, x.ndim)))];
  let cur = x.isContiguous ? x : copyContiguous(x);
  let k = kind;
  for (const d of all.sort((a, b) => a - b)) {
    const next = reduceDim(cur, d, k);
    if (k === 'sumSquares') k = 'sum'; // square once, then add up
    if (cur !== x) cur.dispose();
    cur = next;
  }
  if (cur === x) {
    // Nothing to reduce (a 0-d tensor, or dims = []): still square for sumSquares.
    cur = copyContiguous(x);
    if (kind === 'sumSquares') runRaw('unary', [cur], [cur], [UnaryKind.square]);
  }
  const kept = x.shape.map((s, i) => (all.includes(i) ? 1 : s));
  const finalShape = keepDim ? kept : x.shape.filter((_, i) => !all.includes(i));
  const out = cur.view(finalShape, contiguousStrides(finalShape), cur.offset);
  cur.dispose();
  return { out, kept };
}


export function sum(x: Tensor, dims?: number | number[], keepDim = false): Tensor {
  const d = typeof dims === 'number' ? [dims] : dims;
  const { out, kept } = reduceDims('sum', x, d, keepDim, 'sum');
  if (!needsGrad(x)) return out;
  const inShape = x.shape;
  return record(out, 'sum', [x], (g) => {
    const r = reshape(g, kept);
    const e = expand(r, inShape);
    r.dispose();
    return [e];
  });
}

export function mean(x: Tensor, dims?: number | number[], keepDim = false): Tensor {
  const d = typeof dims === 'number' ? [dims] : dims;
  const { out, kept } = reduceDims('mean', x, d, keepDim, 'mean');
  if (!needsGrad(x)) return out;
  const count = x.size / out.size;
  const inShape = x.shape;
  return record(out, 'mean', [x], (g) => {
    const r = reshape(g, kept);
    const v = expand(r, inShape);
    const e = contiguous(v);
    r.dispose();
    if (v !== e) v.dispose();
    runRaw('affine', [e], [e], [], [1 / count, 0]);
    return [e];
  });
}

/** Sum of squares (no autograd): used for gradient norms. */
export function sumSquares(x: Tensor): Tensor {
  return reduceDims('sumSquares', x, undefined, false, 'sumSquares').out;
}

/** Maximum over dims (no autograd). */
export function max(x: Tensor, dims?: number | number[], keepDim = false): Tensor {
  const d = typeof dims === 'number' ? [dims] : dims;
  return reduceDims('max', x, d, keepDim, 'max').out;
}

/** Sums a broadcast gradient back to `shape` (the inverse of broadcasting to g's shape). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g.view(g.shape, g.strides);
  const pad = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < pad || (shape[i - pad] === 1 && g.shape[i] !== 1)) dims.push(i);
  }
  const { out } = reduceDims('sumTo', g, dims, true, 'sum');
  const r = out.view(shape, contiguousStrides(shape), out.offset);
  out.dispose();
  return r;
}
