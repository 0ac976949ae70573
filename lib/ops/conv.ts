// Convolutional-network ops on NCHW float32 tensors: conv2d, batchNorm2d and avgPool2d, each with
// autograd through its native backward kernels.
import { Tensor, copyContiguous, keep, runRaw } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';
import { sum } from './reduce.js';

/** t itself when contiguous, else a contiguous copy (the caller disposes it when it differs from t). */
function dense(t: Tensor): Tensor {
  return t.isContiguous ? t : copyContiguous(t);
}

function release(copy: Tensor, original: Tensor): void {
  if (copy !== original) copy.dispose();
}

/** The tensor to save for backward: a private contiguous copy is kept as it is, else a retained view. */
function saveDense(copy: Tensor, original: Tensor): Tensor {
  return copy === original ? save(original) : keep(copy);
}

function checkInt(op: string, name: string, v: number, min: number): void {
  check(op, Number.isInteger(v) && v >= min, () => `${name} must be an integer >= ${min}, got ${v}`);
}

function checkPositiveSizes(op: string, name: string, t: Tensor): void {
  check(op, t.shape.every((s) => s > 0), () => `${name} ${t.describe()} has an empty dimension`);
}

function checkVector(op: string, name: string, t: Tensor, n: number): void {
  checkTensor(op, name, t);
  checkDtype(op, name, t, 'float32');
  check(op, t.ndim === 1 && t.shape[0] === n, () => `${name} ${t.describe()} must be [${n}]`);
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
}

/**
 * 2-D convolution (PyTorch's F.conv2d without groups or dilation): x [N,C,H,W], w [O,C,kh,kw],
 * bias [O] -> [N,O,(H+2p-kh)/s+1,(W+2p-kw)/s+1], zero padding on all four sides.
 */
export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  const stride = opts.stride ?? 1, padding = opts.padding ?? 0;
  checkTensor(op, 'input', x);
  checkTensor(op, 'weight', w);
  checkRank(op, 'input', x, 4);
  checkRank(op, 'weight', w, 4);
  checkDtype(op, 'input', x, 'float32');
  checkDtype(op, 'weight', w, 'float32');
  checkInt(op, 'stride', stride, 1);
  checkInt(op, 'padding', padding, 0);
  checkPositiveSizes(op, 'weight', w);
  const [N, C, H, W] = x.shape;
  const [O, Cw, kh, kw] = w.shape;
  check(op, C === Cw, () => `input ${x.describe()} has ${C} channels but weight ${w.describe()} expects ${Cw}`);
  check(op, C > 0 && H > 0 && W > 0, () => `input ${x.describe()} has an empty channel or spatial dimension`);
  if (bias) checkVector(op, 'bias', bias, O);
  checkSameDevice(op, x, w, bias);
  check(op, H + 2 * padding >= kh && W + 2 * padding >= kw,
    () => `kernel ${kh}x${kw} of weight ${w.describe()} is larger than input ${x.describe()} padded by ${padding}`);
  const Ho = Math.floor((H + 2 * padding - kh) / stride) + 1;
  const Wo = Math.floor((W + 2 * padding - kw) / stride) + 1;

  // Backward reads no storage of the inputs themselves: they may be disposed by then.
  const device = x.device, xShape = x.shape, wShape = w.shape;
  const xc = dense(x), wc = dense(w), bc = bias ? dense(bias) : null;
  const y = Tensor.empty([N, O, Ho, Wo], { device });
  try {
    runRaw('conv2d_fwd', [xc, wc, bc], [y], [stride, padding]);
  } catch (e) {
    y.dispose();
    release(xc, x);
    release(wc, w);
    throw e;
  } finally {
    if (bc && bias) release(bc, bias);
  }
  if (!needsGrad(x, w, bias)) {
    release(xc, x);
    release(wc, w);
    return y;
  }
  // x is needed only for the weight gradient, w only for the input gradient.
  const sx = w.requiresGrad ? saveDense(xc, x) : (release(xc, x), null);
  const sw = x.requiresGrad ? saveDense(wc, w) : (release(wc, w), null);
  const saved = [sx, sw].filter((t): t is Tensor => t !== null);
  return record(y, op, [x, w, bias], (g) => {
    const gc = dense(g);
    let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
    try {
      if (x.requiresGrad && sw) {
        gx = Tensor.empty(xShape, { device });
        runRaw('conv2d_bwd_data', [gc, sw], [gx], [stride, padding]);
      }
      if (w.requiresGrad && sx) {
        gw = Tensor.zeros(wShape, { device });
        gb = bias && bias.requiresGrad ? Tensor.zeros([O], { device }) : null;
        runRaw('conv2d_bwd_weight', [gc, sx], [gw, gb], [stride, padding]);
      } else if (bias && bias.requiresGrad) {
        gb = sum(gc, [0, 2, 3]);
      }
    } finally {
      release(gc, g);
    }
    return [gx, gw, gb];
  }, saved);
}

export interface BatchNormOptions {
  /** Batch statistics (and a running-stats update) when true; the running statistics when false. */
  training: boolean;
  momentum?: number;
  eps?: number;
}

/**
 * Batch normalisation over (N, H, W) for each channel of x [N,C,H,W], as PyTorch's BatchNorm2d.
 * Training normalises with the batch mean and biased variance and updates runningMean and
 * runningVar in place: running = (1 - momentum) * running + momentum * batch, with the unbiased
 * variance. Evaluation uses the running statistics. weight / bias may be null (no affine);
 * without running statistics the batch statistics are used in both modes. The running statistics
 * are buffers: never differentiated.
 */
export function batchNorm2d(
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  opts: BatchNormOptions,
): Tensor {
  const op = 'batchNorm2d';
  const momentum = opts.momentum ?? 0.1, eps = opts.eps ?? 1e-5;
  checkTensor(op, 'input', x);
  checkRank(op, 'input', x, 4);
  checkDtype(op, 'input', x, 'float32');
  const [N, C, H, W] = x.shape;
  if (weight) checkVector(op, 'weight', weight, C);
  if (bias) checkVector(op, 'bias', bias, C);
  check(op, !runningMean === !runningVar, 'runningMean and runningVar must be given together');
  for (const [name, t] of [['runningMean', runningMean], ['runningVar', runningVar]] as const) {
    if (!t) continue;
    checkVector(op, name, t, C);
    check(op, t.isContiguous, () => `${name} ${t.describe()} is updated in place and must be contiguous`);
  }
  check(op, Number.isFinite(momentum) && momentum >= 0 && momentum <= 1, () => `momentum must be in [0, 1], got ${momentum}`);
  check(op, Number.isFinite(eps) && eps >= 0, () => `eps must be >= 0, got ${eps}`);
  checkSameDevice(op, x, weight, bias, runningMean, runningVar);
  const batchStats = opts.training || !runningMean;
  check(op, !batchStats || N * H * W > 1,
    () => `batch statistics need more than 1 value per channel, got input ${x.describe()}`);

  const device = x.device, xShape = x.shape;
  const xc = dense(x);
  const wc = weight ? dense(weight) : null, bc = bias ? dense(bias) : null;
  const y = Tensor.empty(xShape, { device });
  const mean = Tensor.empty([C], { device });
  const rstd = Tensor.empty([C], { device });
  try {
    runRaw('batchnorm_fwd', [xc, wc, bc, runningMean, runningVar], [y, mean, rstd],
      [batchStats ? 1 : 0], [momentum, eps]);
  } catch (e) {
    for (const t of [y, mean, rstd]) t.dispose();
    release(xc, x);
    if (wc && weight) release(wc, weight);
    throw e;
  } finally {
    if (bc && bias) release(bc, bias);
  }
  if (!needsGrad(x, weight, bias)) {
    if (wc && weight) release(wc, weight);
    release(xc, x);
    mean.dispose();
    rstd.dispose();
    return y;
  }
  const sx = saveDense(xc, x);
  const sw = wc && weight ? saveDense(wc, weight) : null;
  const sm = keep(mean), sr = keep(rstd);
  const saved = [sx, sm, sr, ...(sw ? [sw] : [])];
  return record(y, op, [x, weight, bias], (g) => {
    const gc = dense(g);
    const gx = x.requiresGrad ? Tensor.empty(xShape, { device }) : null;
    const gw = weight && weight.requiresGrad ? Tensor.zeros([C], { device }) : null;
    const gb = bias && bias.requiresGrad ? Tensor.zeros([C], { device }) : null;
    try {
      runRaw('batchnorm_bwd', [gc, sx, sw, sm, sr], [gx, gw, gb], [batchStats ? 1 : 0]);
    } finally {
      release(gc, g);
    }
    return [gx, gw, gb];
  }, saved);
}

/**
 * Average pooling with a square window (PyTorch's AvgPool2d(kernel, stride) defaults: no
 * padding, floor mode): x [N,C,H,W] -> [N,C,(H-k)/s+1,(W-k)/s+1].
 */
export function avgPool2d(x: Tensor, kernel: number, stride: number = kernel): Tensor {
  const op = 'avgPool2d';
  checkTensor(op, 'input', x);
  checkRank(op, 'input', x, 4);
  checkDtype(op, 'input', x, 'float32');
  checkInt(op, 'kernel', kernel, 1);
  checkInt(op, 'stride', stride, 1);
  const [N, C, H, W] = x.shape;
  check(op, H >= kernel && W >= kernel, () => `kernel ${kernel} is larger than input ${x.describe()}`);
  const Ho = Math.floor((H - kernel) / stride) + 1, Wo = Math.floor((W - kernel) / stride) + 1;
  const device = x.device, xShape = x.shape;
  const xc = dense(x);
  const y = Tensor.empty([N, C, Ho, Wo], { device });
  try {
    runRaw('avgpool2d_fwd', [xc], [y], [kernel, stride]);
  } finally {
    release(xc, x);
  }
  if (!needsGrad(x)) return y;
  return record(y, op, [x], (g) => {
    const gc = dense(g);
    const gx = Tensor.empty(xShape, { device });
    try {
      runRaw('avgpool2d_bwd', [gc], [gx], [kernel, stride]);
    } finally {
      release(gc, g);
    }
    return [gx];
  });
}
