// Losses: cross-entropy over class logits, and CLIP's symmetric contrastive loss (fused: the
// N x N logits are never stored).
import { Tensor, keep, runRaw } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';
import { l2Normalize } from './norm.js';
import { mean } from './reduce.js';

function contiguousRaw(t: Tensor): Tensor {
  if (t.isContiguous) return t.view(t.shape, t.strides);
  const c = Tensor.empty(t.shape, { dtype: t.dtype, device: t.device });
  runRaw('copy', [t], [c]);
  return c;
}

/** Per-row cross-entropy -log softmax(logits)[label], logits [N, C], labels int32 [N] -> [N]. */
export function crossEntropyRows(logits: Tensor, labels: Tensor): Tensor {
  const op = 'crossEntropy';
  checkTensor(op, 'logits', logits);
  checkTensor(op, 'labels', labels);
  checkRank(op, 'logits', logits, 2);
  checkDtype(op, 'logits', logits, 'float32');
  checkDtype(op, 'labels', labels, 'int32');
  checkSameDevice(op, logits, labels);
  const [N, C] = logits.shape;
  check(op, labels.ndim === 1 && labels.shape[0] === N,
    () => `labels ${labels.describe()} must be [${N}] for logits ${logits.describe()}`);
  check(op, C > 0, () => `logits ${logits.describe()} has no classes`);
  const x = contiguousRaw(logits);
  const y = contiguousRaw(labels);
  const loss = Tensor.empty([N], { device: logits.device });
  const lse = Tensor.empty([N], { device: logits.device });
  try {
    runRaw('cross_entropy_fwd', [x, y], [loss, lse]);
  } catch (e) {
    for (const t of [x, y, loss, lse]) t.dispose();
    throw e;
  }
  if (!needsGrad(logits)) {
    for (const t of [x, y, lse]) t.dispose();
    return loss;
  }
  const saved = [keep(x), keep(y), keep(lse)];
  return record(loss, op, [logits, null], (g) => {
    const gc = contiguousRaw(g);
    const dx = Tensor.empty([N, C], { device: g.device });
    runRaw('cross_entropy_bwd', [saved[0], saved[1], saved[2], gc], [dx]);
    gc.dispose();
    return [dx, null];
  }, saved);
}

/** Mean cross-entropy of logits [N, C] against int32 class labels [N] (a scalar). */
export function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  const rows = crossEntropyRows(logits, labels);
  const out = mean(rows);
  rows.dispose();
  return out;
}

/**
 * CLIP's contrastive loss: with I, T the L2-normalised rows of img and txt [N, D] and
 * L = exp(logScale) * I T^T, the mean of cross-entropy(L, 0..N-1) and cross-entropy(L^T, 0..N-1).
 * Gradients flow to the unnormalised features and to logScale ([] or [1]). Returns a scalar.
 */
export function clipLoss(img: Tensor, txt: Tensor, logScale: Tensor): Tensor {
  const op = 'clipLoss';
  checkTensor(op, 'img', img);
  checkTensor(op, 'txt', txt);
  checkTensor(op, 'logScale', logScale);
  checkRank(op, 'img', img, 2);
  checkDtype(op, 'img', img, 'float32');
  checkDtype(op, 'txt', txt, 'float32');
  checkDtype(op, 'logScale', logScale, 'float32');
  checkSameDevice(op, img, txt, logScale);
  check(op, txt.ndim === 2 && txt.shape[0] === img.shape[0] && txt.shape[1] === img.shape[1],
    () => `img ${img.describe()} and txt ${txt.describe()} must both be [N,D]`);
  check(op, img.shape[0] > 0, () => `img ${img.describe()} has no rows`);
  check(op, logScale.size === 1 && logScale.ndim <= 1, () => `logScale must be a [] or [1] tensor, got ${logScale.describe()}`);
  const [N, D] = img.shape;
  const imgN = l2Normalize(img);
  const txtN = l2Normalize(txt);
  const ls = contiguousRaw(logScale);
  const loss = Tensor.empty([], { device: img.device });
  const lseRow = Tensor.empty([N], { device: img.device });
  const lseCol = Tensor.empty([N], { device: img.device });
  runRaw('clip_loss_fwd', [imgN, txtN, ls], [loss, lseRow, lseCol]);
  if (!needsGrad(imgN, txtN, logScale)) {
    for (const t of [imgN, txtN, ls, lseRow, lseCol]) t.dispose();
    return loss;
  }
  const saved = [save(imgN), save(txtN), keep(ls), keep(lseRow), keep(lseCol)];
  const scaleShape = logScale.shape;
  const out = record(loss, op, [imgN, txtN, logScale], (g) => {
    const di = Tensor.empty([N, D], { device: g.device });
    const dt = Tensor.empty([N, D], { device: g.device });
    const ds = Tensor.empty(scaleShape, { device: g.device });
    runRaw('clip_loss_bwd', [...saved, g], [di, dt, ds]);
    return [imgN.requiresGrad ? di : (di.dispose(), null), txtN.requiresGrad ? dt : (dt.dispose(), null),
      logScale.requiresGrad ? ds : (ds.dispose(), null)];
  }, saved);
  imgN.dispose();
  txtN.dispose();
  return out;
}
