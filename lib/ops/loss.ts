// Losses: cross-entropy over class logits, and CLIP's symmetric contrastive loss (fused: the
// N x N logits are never stored), whole-batch or per shard against gathered features.
import { Tensor, contiguousOwned, keep, runRaw } from '../tensor.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';
import { BinaryKind } from '../native/kinds.js';
import { l2Normalize } from './norm.js';
import { mean } from './reduce.js';


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
  const x = contiguousOwned(logits);
  const y = contiguousOwned(labels);
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
    const gc = contiguousOwned(g);
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
  const ls = contiguousOwned(logScale);
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

/**
 * CLIP's contrastive loss for one shard of a data-parallel batch (open_clip's local_loss):
 * imgLocal, txtLocal [n, D] are this shard's features, imgAll, txtAll [m, D] the features gathered
 * from every shard, with this shard's rows at offset..offset+n-1. With the rows L2-normalised and
 * S = exp(logScale),
 *   (CE(S * I_local T_all^T, offset + i) + CE(S * T_local I_all^T, offset + i)) / 2.
 * Gradients flow to all four (unnormalised) feature tensors and to logScale ([] or [1]). Those of
 * the gathered tensors are this shard's share only: summed over the shards (all_gather with
 * gradients), they complete the local ones, and the mean of the K shards' losses over equal shards
 * is clipLoss of the whole batch. Returns a scalar.
 */
export function clipLossLocal(imgLocal: Tensor, txtLocal: Tensor, imgAll: Tensor, txtAll: Tensor, logScale: Tensor,
  offset: number): Tensor {
  const op = 'clipLossLocal';
  const named: [string, Tensor][] = [['imgLocal', imgLocal], ['txtLocal', txtLocal], ['imgAll', imgAll], ['txtAll', txtAll]];
  for (const [name, t] of named) {
    checkTensor(op, name, t);
    checkRank(op, name, t, 2);
    checkDtype(op, name, t, 'float32');
  }
  checkTensor(op, 'logScale', logScale);
  checkDtype(op, 'logScale', logScale, 'float32');
  checkSameDevice(op, imgLocal, txtLocal, imgAll, txtAll, logScale);
  const [n, D] = imgLocal.shape, m = imgAll.shape[0];
  check(op, txtLocal.shape[0] === n && txtLocal.shape[1] === D,
    () => `imgLocal ${imgLocal.describe()} and txtLocal ${txtLocal.describe()} must both be [n,D]`);
  check(op, txtAll.shape[0] === m && txtAll.shape[1] === imgAll.shape[1],
    () => `imgAll ${imgAll.describe()} and txtAll ${txtAll.describe()} must both be [m,D]`);
  check(op, imgAll.shape[1] === D,
    () => `local features ${imgLocal.describe()} and gathered features ${imgAll.describe()} must have one width D`);
  check(op, n > 0, () => `imgLocal ${imgLocal.describe()} has no rows`);
  check(op, Number.isInteger(offset) && offset >= 0 && offset + n <= m,
    () => `offset ${offset} must be an integer with offset + ${n} local rows <= the ${m} gathered rows of imgAll ${imgAll.describe()}`);
  check(op, logScale.size === 1 && logScale.ndim <= 1, () => `logScale must be a [] or [1] tensor, got ${logScale.describe()}`);

  // Each direction's cross-entropy, weighted 1/2n, from the one-direction op.
  const weight = 0.5 / n;
  const iL = l2Normalize(imgLocal), tL = l2Normalize(txtLocal), iA = l2Normalize(imgAll), tA = l2Normalize(txtAll);
  const ls = contiguousOwned(logScale);
  const dev = imgLocal.device;
  const l1 = Tensor.empty([], { device: dev }), l2 = Tensor.empty([], { device: dev });
  const lse1 = Tensor.empty([n], { device: dev }), lse2 = Tensor.empty([n], { device: dev });
  const loss = Tensor.empty([], { device: dev });
  try {
    runRaw('clip_ce_fwd', [iL, tA, ls], [l1, lse1], [offset], [weight]);
    runRaw('clip_ce_fwd', [tL, iA, ls], [l2, lse2], [offset], [weight]);
    runRaw('binary', [l1, l2], [loss], [BinaryKind.add]);
  } catch (e) {
    for (const t of [iL, tL, iA, tA, ls, l1, l2, lse1, lse2, loss]) t.dispose();
    throw e;
  }
  l1.dispose();
  l2.dispose();
  const feats = [iL, tL, iA, tA];
  if (!needsGrad(...feats, logScale)) {
    for (const t of [...feats, ls, lse1, lse2]) t.dispose();
    return loss;
  }
  const saved = [save(iL), save(tL), save(iA), save(tA), keep(ls), keep(lse1), keep(lse2)];
  const scaleShape = logScale.shape;
  const out = record(loss, op, [...feats, logScale], (g) => {
    const [si, st, sai, sat, sls, slse1, slse2] = saved;
    const gc = contiguousOwned(g);
    const dIL = Tensor.empty([n, D], { device: g.device }), dTA = Tensor.empty([m, D], { device: g.device });
    const dTL = Tensor.empty([n, D], { device: g.device }), dIA = Tensor.empty([m, D], { device: g.device });
    const ds1 = Tensor.empty(scaleShape, { device: g.device }), ds2 = Tensor.empty(scaleShape, { device: g.device });
    // image rows against gathered text columns, then text rows against gathered image columns
    runRaw('clip_ce_bwd', [si, sat, sls, slse1, gc], [dIL, dTA, ds1], [offset], [weight]);
    runRaw('clip_ce_bwd', [st, sai, sls, slse2, gc], [dTL, dIA, ds2], [offset], [weight]);
    gc.dispose();
    let ds: Tensor | null = null;
    if (logScale.requiresGrad) {
      ds = Tensor.empty(scaleShape, { device: g.device });
      runRaw('binary', [ds1, ds2], [ds], [BinaryKind.add]);
    }
    ds1.dispose();
    ds2.dispose();
    const pick = (t: Tensor, x: Tensor) => (x.requiresGrad ? t : (t.dispose(), null));
    return [pick(dIL, iL), pick(dTL, tL), pick(dIA, iA), pick(dTA, tA), ds];
  }, saved);
  for (const t of feats) t.dispose();
  return out;
}
