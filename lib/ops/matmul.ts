// Matrix products on the native gemm: matmul (2-D or batched 3-D, transposed views free) and linear.
// Under autocast('bf16') (lib/amp.ts) both multiply bfloat16 copies of float32 operands, forward and
// backward, with float32 accumulation and float32 results (so weight gradients land in float32).
import { Tensor, contiguousStrides, copyContiguous, keep, rowsView, runRaw } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';
import { sumTo } from './reduce.js';
import { activation, type Activation } from './elementwise.js';
import { UnaryKind } from '../native/kinds.js';
import { autocastDtype, castOperand } from '../amp.js';
import { linearPacked } from './packed.js';

/** A [batch, rows, cols] view of a 2-D or 3-D tensor whose last two dims have a unit stride somewhere. */
function as3d(t: Tensor, batch: number): { view: Tensor; copied: boolean } {
  let src = t;
  let copied = false;
  const r = t.ndim;
  const okLayout = t.strides[r - 1] === 1 || t.strides[r - 2] === 1;
  if (!okLayout) {
    src = copyContiguous(t);
    copied = true;
  }
  const rows = src.shape[r - 2], cols = src.shape[r - 1];
  const bs = r === 3 ? src.strides[0] : 0;
  const view = src.view([batch, rows, cols], [bs, src.strides[r - 2], src.strides[r - 1]]);
  if (copied) src.dispose();
  return { view, copied };
}

/** c = a @ b (+ bias) without autograd; a [.., M, K], b [.., K, N]. */
export function gemmRaw(a: Tensor, b: Tensor, bias: Tensor | null = null, out?: Tensor, accumulate = false, alpha = 1, act = 0): Tensor {
  const batch = Math.max(a.ndim === 3 ? a.shape[0] : 1, b.ndim === 3 ? b.shape[0] : 1);
  const M = a.shape[a.ndim - 2], N = b.shape[b.ndim - 1];
  const shape = a.ndim === 3 || b.ndim === 3 ? [batch, M, N] : [M, N];
  const c = out ?? Tensor.empty(shape, { device: a.device });
  const va = as3d(a, batch), vb = as3d(b, batch);
  const vc = c.view([batch, M, N], [M * N, N, 1]);
  try {
    runRaw('gemm', [va.view, vb.view, bias], [vc], [accumulate ? 1 : 0, act], [alpha]);
  } finally {
    va.view.dispose();
    vb.view.dispose();
    vc.dispose();
  }
  return c;
}

function tr(t: Tensor): Tensor {
  const r = t.ndim;
  const shape = [...t.shape];
  const strides = [...t.strides];
  [shape[r - 1], shape[r - 2]] = [shape[r - 2], shape[r - 1]];
  [strides[r - 1], strides[r - 2]] = [strides[r - 2], strides[r - 1]];
  return t.view(shape, strides);
}

/** Matrix product of 2-D or 3-D tensors (a batch of 1 or equal batches broadcast). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkTensor('matmul', 'a', a);
  checkTensor('matmul', 'b', b);
  checkRank('matmul', 'a', a, 2, 3);
  checkRank('matmul', 'b', b, 2, 3);
  checkDtype('matmul', 'a', a, 'float32', 'bfloat16');
  checkDtype('matmul', 'b', b, 'float32', 'bfloat16');
  checkSameDevice('matmul', a, b);
  const K = a.shape[a.ndim - 1];
  check('matmul', b.shape[b.ndim - 2] === K, () => `inner dimensions differ: ${a.describe()} @ ${b.describe()}`);
  if (a.ndim === 3 && b.ndim === 3) {
    check('matmul', a.shape[0] === b.shape[0], () => `batch sizes differ: ${a.describe()} @ ${b.describe()}`);
  }
  // Mixed precision: the bf16 copies are what the product and its backward read (and what is saved).
  const amp = autocastDtype() === 'bfloat16';
  const ca = amp && a.dtype === 'float32' ? castOperand(a) : a;
  const cb = amp && b.dtype === 'float32' ? castOperand(b) : b;
  const out = gemmRaw(ca, cb);
  if (!needsGrad(a, b)) {
    if (ca !== a) ca.dispose();
    if (cb !== b) cb.dispose();
    return out;
  }
  const sa = ca !== a ? keep(ca) : save(a), sb = cb !== b ? keep(cb) : save(b);
  return record(out, 'matmul', [a, b], (g) => {
    const gg = amp && g.dtype === 'float32' ? copyContiguous(g, 'bfloat16') : g;
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (a.requiresGrad) {
      const bt = tr(sb);
      const full = gemmRaw(gg, bt); // [batch?, M, K]
      bt.dispose();
      ga = sumTo(full, a.shape);
      full.dispose();
    }
    if (b.requiresGrad) {
      const at = tr(sa);
      const full = gemmRaw(at, gg);
      at.dispose();
      gb = sumTo(full, b.shape);
      full.dispose();
    }
    if (gg !== g) gg.dispose();
    return [ga, gb];
  }, [sa, sb]);
}

/**
 * act(x @ w^T + b). Without autograd the activation runs in the GEMM's epilogue; with it, as its
 * own op (its backward needs the pre-activation values).
 */
export function linearAct(x: Tensor, w: Tensor, b: Tensor | null, act: Activation): Tensor {
  if (needsGrad(x, w, b)) {
    const h = linear(x, w, b);
    const y = activation(act, h);
    h.dispose();
    return y;
  }
  return linear(x, w, b, UnaryKind[ACT_KIND[act]] + 1);
}
const ACT_KIND = { relu: 'relu', quick_gelu: 'quickGelu', gelu: 'gelu' } as const;

/** y = x @ w^T + b, with x [..., in], w [out, in], b [out] (PyTorch's nn.Linear layout). */
export function linear(x: Tensor, w: Tensor, b: Tensor | null = null, epilogueAct = 0): Tensor {
  checkTensor('linear', 'input', x);
  checkTensor('linear', 'weight', w);
  checkRank('linear', 'weight', w, 2);
  checkSameDevice('linear', x, w, b);
  const inF = w.shape[1], outF = w.shape[0];
  check('linear', x.ndim >= 1 && x.shape[x.ndim - 1] === inF,
    () => `input ${x.describe()} does not end in ${inF} features (weight ${w.describe()})`);
  if (b) check('linear', b.ndim === 1 && b.shape[0] === outF, () => `bias ${b.describe()} must be [${outF}]`);
  const lead = x.shape.slice(0, -1);
  const rows = lead.reduce((p, s) => p * s, 1);
  // Mixed precision: x and w as bf16 copies (the weight's shared for the autocast scope).
  const amp = autocastDtype() === 'bfloat16';
  const x2 = rowsView(x, rows, inF, amp && x.dtype === 'float32' ? 'bfloat16' : x.dtype);
  const wc = amp && w.dtype === 'float32' ? castOperand(w) : w;
  // Inference reuses the weight packed once (lib/ops/packed.ts) where the backend can.
  const y2 = (!amp && !needsGrad(x, w, b) ? linearPacked(x2, w, b, epilogueAct) : null) ?? (() => {
    const wt = tr(wc);
    const r = gemmRaw(x2, wt, b, undefined, false, 1, epilogueAct);
    wt.dispose();
    return r;
  })();
  const out = y2.view([...lead, outF], contiguousStrides([...lead, outF]));
  y2.dispose();
  if (!needsGrad(x, w, b)) {
    x2.dispose();
    if (wc !== w) wc.dispose();
    return out;
  }
  const sx = keep(x2), sw = wc !== w ? keep(wc) : save(w);
  return record(out, 'linear', [x, w, b], (g) => {
    const g2 = rowsView(g, rows, outF);
    const gm = amp && g2.dtype === 'float32' ? copyContiguous(g2, 'bfloat16') : g2; // the GEMMs' operand
    let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
    if (x.requiresGrad) {
      const d = gemmRaw(gm, sw); // [rows, in]
      gx = d.view(x.shape, contiguousStrides(x.shape));
      d.dispose();
    }
    if (w.requiresGrad) {
      const gt = tr(gm);
      gw = gemmRaw(gt, sx); // [out, in]
      gt.dispose();
    }
    if (b && b.requiresGrad) gb = sumTo(g2, [outF]); // float32 sum
    if (gm !== g2) gm.dispose();
    g2.dispose();
    return [gx, gw, gb];
  }, [sx, sw]);
}
