// Normalisation over the last dimension: layer norm, L2 normalisation (F.normalize) and softmax
// with an optional causal and/or additive mask. Any leading dimensions; the native kernels see
// contiguous [rows, D] data.
import { Tensor, contiguousOwned, keep, rowsView, runRaw, shapeString } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkSameDevice, checkTensor } from './util.js';
import { sumTo } from './reduce.js';


function lastDim(op: string, x: Tensor): { rows: number; d: number } {
  check(op, x.ndim >= 1, () => `input must have at least one dimension, got ${x.describe()}`);
  const d = x.shape[x.ndim - 1];
  const rows = x.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { rows, d };
}

/** Layer normalisation over the last dimension (torch.nn.LayerNorm): (x - mean) / sqrt(var + eps) * w + b. */
export function layerNorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps = 1e-5): Tensor {
  return layerNormImpl('layerNorm', x, null, w, b, eps).y;
}

/**
 * The pre-norm block's step `s = x + r; y = layerNorm(s)` as one pass over the rows. Returns both:
 * s carries the residual stream on, y feeds the next sublayer. Gradients flow as through the two ops.
 */
export function addLayerNorm(x: Tensor, r: Tensor, w: Tensor | null, b: Tensor | null, eps = 1e-5): { sum: Tensor; normed: Tensor } {
  const out = layerNormImpl('addLayerNorm', x, r, w, b, eps);
  return { sum: out.sum!, normed: out.y };
}

function layerNormImpl(op: string, x: Tensor, r: Tensor | null, w: Tensor | null, b: Tensor | null, eps: number): { y: Tensor; sum: Tensor | null } {
  checkTensor(op, 'input', x);
  checkDtype(op, 'input', x, 'float32');
  const { rows, d } = lastDim(op, x);
  if (r) {
    checkTensor(op, 'residual', r);
    checkDtype(op, 'residual', r, 'float32');
    check(op, shapeString(r.shape) === shapeString(x.shape), () => `residual ${r.describe()} must have the input's shape ${x.describe()}`);
  }
  for (const [name, t] of [['weight', w], ['bias', b]] as const) {
    if (t === null) continue;
    checkTensor(op, name, t);
    checkDtype(op, name, t, 'float32');
    check(op, t.ndim === 1 && t.shape[0] === d, () => `${name} ${t.describe()} must be [${d}] to match input ${x.describe()}`);
  }
  checkSameDevice(op, x, r, w, b);
  check(op, Number.isFinite(eps) && eps >= 0, `eps must be a non-negative number, got ${eps}`);
  const x2 = rowsView(x, rows, d);
  const r2 = r ? rowsView(r, rows, d) : null;
  const sum = r ? Tensor.empty(x.shape, { device: x.device }) : null;
  const s2 = sum ? sum.view([rows, d], [d, 1]) : null;
  const wc = w ? contiguousOwned(w) : Tensor.ones([d], { device: x.device });
  const bc = b ? contiguousOwned(b) : Tensor.zeros([d], { device: x.device });
  const y = Tensor.empty(x.shape, { device: x.device });
  const y2 = y.view([rows, d], [d, 1]);
  // The statistics only serve the backward.
  const grad = needsGrad(x, r, w, b);
  const mean = grad ? Tensor.empty([rows], { device: x.device }) : null;
  const rstd = grad ? Tensor.empty([rows], { device: x.device }) : null;
  runRaw('layernorm_fwd', [x2, wc, bc, r2], [y2, mean, rstd, s2], [], [eps]);
  y2.dispose();
  bc.dispose();
  r2?.dispose();
  // What was normalised: x itself, or the sum (its own autograd node, the add's).
  const normed = s2 ?? x2;
  if (s2) x2.dispose();
  if (!grad) {
    normed.dispose();
    wc.dispose();
    return { y, sum };
  }
  let src = sum ?? x;
  if (sum && needsGrad(x, r)) {
    const xs = x.shape, rs = r!.shape;
    src = record(sum, 'add', [x, r], (g) => [sumTo(g, xs), sumTo(g, rs)]);
  }
  const saved = [keep(normed), keep(wc), keep(mean!), keep(rstd!)];
  const inShape = x.shape;
  const yOut = record(y, 'layerNorm', [src, w, b], (g) => {
    const g2 = rowsView(g, rows, d);
    const dx = Tensor.empty(inShape, { device: g.device });
    const dx2 = dx.view([rows, d], [d, 1]);
    const dw = Tensor.zeros([d], { device: g.device });
    const db = Tensor.zeros([d], { device: g.device });
    runRaw('layernorm_bwd', [g2, saved[0], saved[1], saved[2], saved[3]], [dx2, dw, db]);
    g2.dispose();
    dx2.dispose();
    const gw = w && w.requiresGrad ? dw : (dw.dispose(), null);
    const gb = b && b.requiresGrad ? db : (db.dispose(), null);
    return [dx, gw, gb];
  }, saved);
  return { y: yOut, sum };
}

/** x / max(||x||, eps) over the last dimension (torch.nn.functional.normalize with p=2). */
export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  const op = 'l2Normalize';
  checkTensor(op, 'input', x);
  checkDtype(op, 'input', x, 'float32');
  check(op, Number.isFinite(eps) && eps >= 0, `eps must be a non-negative number, got ${eps}`);
  const { rows, d } = lastDim(op, x);
  const x2 = rowsView(x, rows, d);
  const y = Tensor.empty(x.shape, { device: x.device });
  const y2 = y.view([rows, d], [d, 1]);
  const norm = Tensor.empty([rows], { device: x.device });
  runRaw('l2norm_fwd', [x2], [y2, norm], [], [eps]);
  x2.dispose();
  if (!needsGrad(x)) {
    y2.dispose();
    norm.dispose();
    return y;
  }
  const saved = [keep(y2), keep(norm)];
  const inShape = x.shape;
  return record(y, op, [x], (g) => {
    const g2 = rowsView(g, rows, d);
    const dx = Tensor.empty(inShape, { device: g.device });
    const dx2 = dx.view([rows, d], [d, 1]);
    runRaw('l2norm_bwd', [g2, saved[0], saved[1]], [dx2], [], [eps]);
    g2.dispose();
    dx2.dispose();
    return [dx];
  }, saved);
}

export interface SoftmaxOptions {
  /** Position i of the second-to-last dimension sees only j <= i + Sk - Sq of the last. */
  causal?: boolean;
  /** Additive [Sq, Sk] mask (e.g. -Infinity to hide), broadcast over the leading dimensions. */
  mask?: Tensor | null;
}

/**
 * Softmax over the last dimension. With `causal` or `mask`, the last two dimensions are
 * [Sq, Sk]; a row with nothing visible comes out as zeros.
 */
export function softmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const op = 'softmax';
  checkTensor(op, 'input', x);
  checkDtype(op, 'input', x, 'float32');
  const mask = opts.mask ?? null;
  const { d: sk } = lastDim(op, x);
  const sq = x.ndim >= 2 ? x.shape[x.ndim - 2] : 1;
  const batch = x.shape.slice(0, -2).reduce((a, b) => a * b, 1);
  if (mask) {
    checkTensor(op, 'mask', mask);
    checkDtype(op, 'mask', mask, 'float32');
    checkSameDevice(op, x, mask);
    check(op, mask.ndim === 2 && mask.shape[0] === sq && mask.shape[1] === sk,
      () => `mask ${mask.describe()} must be ${shapeString([sq, sk])} for input ${x.describe()}`);
  }
  const xc = contiguousOwned(x);
  const x3 = xc.view([batch, sq, sk], [sq * sk, sk, 1]);
  xc.dispose();
  const y = Tensor.empty(x.shape, { device: x.device });
  const y3 = y.view([batch, sq, sk], [sq * sk, sk, 1]);
  runRaw('softmax_fwd', [x3, mask], [y3], [opts.causal ? 1 : 0]);
  x3.dispose();
  y3.dispose();
  if (!needsGrad(x, mask)) return y;
  const sy = save(y);
  const inShape = x.shape;
  return record(y, op, [x, mask], (g) => {
    const gc = contiguousOwned(g);
    const dx = Tensor.empty(inShape, { device: g.device });
    runRaw('softmax_bwd', [sy, gc], [dx]);
    gc.dispose();
    let dmask: Tensor | null = null;
    if (mask && mask.requiresGrad) {
      const d3 = dx.view([batch, sq, sk], [sq * sk, sk, 1]);
      dmask = sumTo(d3, [sq, sk]);
      d3.dispose();
    }
    return [x.requiresGrad ? dx : (dx.dispose(), null), dmask];
  }, [sy]);
}
