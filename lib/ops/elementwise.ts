// Elementwise arithmetic with broadcasting, scalar affine maps, and the activations.
import { Tensor, keep, runRaw } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { BinaryKind, UnaryKind, type BinaryKindName, type UnaryKindName } from '../native/kinds.js';
import { broadcastShapes, broadcastView, checkDtype, checkSameDevice, checkTensor } from './util.js';
import { sumTo } from './reduce.js';

function binaryRaw(kind: BinaryKindName, a: Tensor, b: Tensor, shape: readonly number[]): Tensor {
  const out = Tensor.empty(shape, { device: a.device });
  const va = broadcastView(a, shape), vb = broadcastView(b, shape);
  try {
    runRaw('binary', [va, vb], [out], [BinaryKind[kind]]);
  } finally {
    va.dispose();
    vb.dispose();
  }
  return out;
}

function binary(op: BinaryKindName, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op}: at least one operand must be a Tensor`);
  if (typeof b === 'number') return scalarOp(op, a as Tensor, b, false);
  if (typeof a === 'number') return scalarOp(op, b, a, true);
  checkTensor(op, 'a', a);
  checkTensor(op, 'b', b);
  checkDtype(op, 'a', a, 'float32');
  checkDtype(op, 'b', b, 'float32');
  checkSameDevice(op, a, b);
  const shape = broadcastShapes(op, a.shape, b.shape);
  const out = binaryRaw(op, a, b, shape);
  if (!needsGrad(a, b)) return out;
  const as = a.shape, bs = b.shape;
  switch (op) {
    case 'add':
      return record(out, op, [a, b], (g) => [sumTo(g, as), sumTo(g, bs)]);
    case 'sub':
      return record(out, op, [a, b], (g) => {
        const n = scaleRaw(g, -1);
        const gb = sumTo(n, bs);
        n.dispose();
        return [sumTo(g, as), gb];
      });
    case 'mul': {
      const sa = save(a), sb = save(b);
      return record(out, op, [a, b], (g) => [
        a.requiresGrad ? reduceProduct(g, sb, as) : null,
        b.requiresGrad ? reduceProduct(g, sa, bs) : null,
      ], [sa, sb]);
    }
    case 'div': {
      const sa = save(a), sb = save(b);
      return record(out, op, [a, b], (g) => {
        const ga = a.requiresGrad ? (() => {
          const q = binaryRaw('div', g, sb, g.shape);
          const r = sumTo(q, as);
          q.dispose();
          return r;
        })() : null;
        let gb: Tensor | null = null;
        if (b.requiresGrad) {
          // d(a/b)/db = -a/b^2
          const b2 = binaryRaw('mul', sb, sb, sb.shape);
          const q = binaryRaw('div', sa, b2, g.shape);
          const p = binaryRaw('mul', g, q, g.shape);
          const n = scaleRaw(p, -1);
          gb = sumTo(n, bs);
          for (const t of [b2, q, p, n]) t.dispose();
        }
        return [ga, gb];
      }, [sa, sb]);
    }
    default:
      throw new Error(`${op}: no gradient`);
  }
}

function reduceProduct(g: Tensor, other: Tensor, shape: readonly number[]): Tensor {
  const p = binaryRaw('mul', g, other, g.shape);
  const r = sumTo(p, shape);
  p.dispose();
  return r;
}

function scaleRaw(x: Tensor, alpha: number, beta = 0): Tensor {
  const src = x.isContiguous ? x : copyRaw(x);
  const out = Tensor.empty(x.shape, { device: x.device });
  runRaw('affine', [src], [out], [], [alpha, beta]);
  if (src !== x) src.dispose();
  return out;
}

function copyRaw(x: Tensor): Tensor {
  const out = Tensor.empty(x.shape, { dtype: x.dtype, device: x.device });
  runRaw('copy', [x], [out]);
  return out;
}

function scalarOp(op: BinaryKindName, t: Tensor, s: number, scalarFirst: boolean): Tensor {
  checkTensor(op, 'input', t);
  checkDtype(op, 'input', t, 'float32');
  switch (op) {
    case 'add': return affine(t, 1, s);
    case 'sub': return scalarFirst ? affine(t, -1, s) : affine(t, 1, -s);
    case 'mul': return affine(t, s, 0);
    case 'div':
      if (!scalarFirst) return affine(t, 1 / s, 0);
      break;
  }
  const c = Tensor.full(t.shape.length ? [1] : [], s, { device: t.device });
  const out = scalarFirst ? binary(op, c, t) : binary(op, t, c);
  c.dispose();
  return out;
}

/** x * alpha + beta */
export function affine(x: Tensor, alpha: number, beta = 0): Tensor {
  checkTensor('affine', 'input', x);
  checkDtype('affine', 'input', x, 'float32');
  const out = scaleRaw(x, alpha, beta);
  if (!needsGrad(x)) return out;
  return record(out, 'affine', [x], (g) => [scaleRaw(g, alpha)]);
}

export const add = (a: Tensor | number, b: Tensor | number): Tensor => binary('add', a, b);
export const sub = (a: Tensor | number, b: Tensor | number): Tensor => binary('sub', a, b);
export const mul = (a: Tensor | number, b: Tensor | number): Tensor => binary('mul', a, b);
export const div = (a: Tensor | number, b: Tensor | number): Tensor => binary('div', a, b);
export const scale = (x: Tensor, alpha: number): Tensor => affine(x, alpha, 0);

/** Elementwise maximum / minimum (no gradient). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return binaryRaw('max', a, b, broadcastShapes('maximum', a.shape, b.shape));
}
export function minimum(a: Tensor, b: Tensor): Tensor {
  return binaryRaw('min', a, b, broadcastShapes('minimum', a.shape, b.shape));
}

function unary(kind: UnaryKindName, x: Tensor): Tensor {
  checkTensor(kind, 'input', x);
  checkDtype(kind, 'input', x, 'float32');
  const src = x.isContiguous ? x : copyRaw(x);
  const out = Tensor.empty(x.shape, { device: x.device });
  runRaw('unary', [src], [out], [UnaryKind[kind]]);
  if (!needsGrad(x)) {
    if (src !== x) src.dispose();
    return out;
  }
  // A private contiguous copy is itself the saved tensor (kept out of any tidy scope).
  const sx = src === x ? save(x) : keep(src);
  return record(out, kind, [x], (g) => {
    const gc = g.isContiguous ? g : copyRaw(g);
    const dx = Tensor.empty(x.shape, { device: g.device });
    runRaw('unary_backward', [sx, gc], [dx], [UnaryKind[kind]]);
    if (gc !== g) gc.dispose();
    return [dx];
  }, [sx]);
}

export const relu = (x: Tensor): Tensor => unary('relu', x);
/** x * sigmoid(1.702 x), the activation of the OpenAI CLIP models. */
export const quickGelu = (x: Tensor): Tensor => unary('quickGelu', x);
/** The exact (erf) GELU used by the LAION open_clip models. */
export const gelu = (x: Tensor): Tensor => unary('gelu', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const neg = (x: Tensor): Tensor => unary('neg', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);

export type Activation = 'quick_gelu' | 'gelu' | 'relu';
export function activation(kind: Activation, x: Tensor): Tensor {
  return kind === 'quick_gelu' ? quickGelu(x) : kind === 'gelu' ? gelu(x) : relu(x);
}
