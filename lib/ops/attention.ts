// Scaled-dot-product attention on [B, S, H, Dh] tensors and torch.nn.MultiheadAttention's math
// on top of it. q, k and v may be strided views; multiHeadAttention reads the three slices of
// its packed projection in place and its backward writes one packed gradient.
import { Tensor, keep, runRaw } from '../tensor.js';
import { needsGrad, record } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';
import { linear } from './matmul.js';
import { reshape, slice } from './shape.js';

export interface AttentionOptions {
  /** Query i sees keys j <= i + Sk - Sq (the last query sees every key). */
  causal?: boolean;
  /** Multiplies q.k; default 1/sqrt(Dh). */
  scale?: number;
}

/**
 * Where one of q, k, v comes from: `input` is the autograd input and `data` holds its values
 * (the same tensor, or a contiguous copy); either [B,S,H,Dh] (col 0) or [B,S,C] with the H*Dh
 * columns starting at `col`.
 */
interface Part {
  input: Tensor;
  data: Tensor;
  col: number;
}

/** The [B,S,H,Dh] view of a part's columns in t (t laid out like the part's source). */
function headsView(t: Tensor, col: number, H: number, Dh: number): Tensor {
  if (t.ndim === 4) return t.view(t.shape, t.strides);
  const [B, S] = t.shape;
  return t.view([B, S, H, Dh], [t.strides[0], t.strides[1], Dh * t.strides[2], t.strides[2]], t.offset + col * t.strides[2]);
}

/** A copy of t with unit last stride when it lacks one (the kernels read rows as vectors). */
function rowsContiguous(t: Tensor): Tensor {
  if (t.strides[t.ndim - 1] === 1 || t.shape[t.ndim - 1] === 1) return t;
  const c = Tensor.empty(t.shape, { dtype: t.dtype, device: t.device });
  runRaw('copy', [t], [c]);
  return c;
}

/**
 * Runs attention on three parts and records one autograd node whose inputs are the parts'
 * distinct sources: a packed source gets one gradient buffer that all its parts write into.
 */
function attentionParts(op: string, parts: [Part, Part, Part], H: number, Dh: number, causal: boolean, scale: number): Tensor {
  const [qv, kv, vv] = parts.map((p) => headsView(p.data, p.col, H, Dh));
  const [B, Sq] = qv.shape;
  const o = Tensor.empty([B, Sq, H, Dh], { device: qv.device });
  const lse = Tensor.empty([B, H, Sq], { device: qv.device });
  try {
    runRaw('attention_fwd', [qv, kv, vv], [o, lse], [causal ? 1 : 0], [scale]);
  } catch (e) {
    for (const t of [qv, kv, vv, o, lse]) t.dispose();
    throw e;
  } finally {
    for (const p of parts) if (p.data !== p.input) p.data.dispose();
  }
  if (!needsGrad(...parts.map((p) => p.input))) {
    for (const t of [qv, kv, vv, lse]) t.dispose();
    return o;
  }
  // Group parts by source: one buffer per packed source when its parts' columns are disjoint.
  const groups: { input: Tensor; members: number[] }[] = [];
  parts.forEach((p, i) => {
    const g = groups.find((x) => x.input === p.input && p.input.ndim === 3 &&
      x.members.every((m) => parts[m].col + H * Dh <= p.col || p.col + H * Dh <= parts[m].col));
    if (g) g.members.push(i);
    else groups.push({ input: p.input, members: [i] });
  });
  const saved = [keep(qv), keep(kv), keep(vv), keep(o.view(o.shape, o.strides)), keep(lse)];
  const cols = parts.map((p) => p.col);
  return record(o, op, groups.map((g) => g.input), (g) => {
    const gc = rowsContiguous(g);
    const bufs = groups.map((gr) => {
      const covered = gr.input.ndim === 4 || gr.members.length * H * Dh === gr.input.shape[2];
      return covered ? Tensor.empty(gr.input.shape, { device: g.device }) : Tensor.zeros(gr.input.shape, { device: g.device });
    });
    const views: Tensor[] = [];
    groups.forEach((gr, gi) => {
      for (const m of gr.members) views[m] = headsView(bufs[gi], cols[m], H, Dh);
    });
    try {
      runRaw('attention_bwd', [...saved, gc], views, [causal ? 1 : 0], [scale]);
    } finally {
      for (const v of views) v.dispose();
      if (gc !== g) gc.dispose();
    }
    return groups.map((gr, gi) => (gr.input.requiresGrad ? bufs[gi] : (bufs[gi].dispose(), null)));
  }, saved);
}

function resolveScale(op: string, scale: number | undefined, Dh: number): number {
  const s = scale ?? 1 / Math.sqrt(Dh);
  check(op, Number.isFinite(s) && s > 0, `scale must be a positive number, got ${scale}`);
  return s;
}

/**
 * softmax(q k^T * scale) v per head, for q [B,Sq,H,Dh], k and v [B,Sk,H,Dh] (views allowed).
 * Returns a contiguous [B,Sq,H,Dh] tensor.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const op = 'attention';
  checkTensor(op, 'q', q);
  checkTensor(op, 'k', k);
  checkTensor(op, 'v', v);
  for (const [n, t] of [['q', q], ['k', k], ['v', v]] as const) {
    checkRank(op, n, t, 4);
    checkDtype(op, n, t, 'float32');
  }
  checkSameDevice(op, q, k, v);
  const [B, , H, Dh] = q.shape;
  const sameHeads = (t: Tensor): boolean => t.shape[0] === B && t.shape[2] === H && t.shape[3] === Dh;
  check(op, sameHeads(k) && sameHeads(v) && k.shape[1] === v.shape[1],
    () => `q ${q.describe()}, k ${k.describe()} and v ${v.describe()} must be [B,Sq,H,Dh], [B,Sk,H,Dh], [B,Sk,H,Dh]`);
  const scale = resolveScale(op, opts.scale, Dh);
  const part = (t: Tensor): Part => ({ input: t, data: rowsContiguous(t), col: 0 });
  return attentionParts(op, [part(q), part(k), part(v)], H, Dh, !!opts.causal, scale);
}

export interface MultiHeadAttentionOptions {
  causal?: boolean;
  /**
   * Queries [B, Sq, E] that differ from the keys and values (e.g. attention pooling with one
   * query token); x then supplies only keys and values.
   */
  query?: Tensor;
}

/**
 * torch.nn.MultiheadAttention's forward on batch-first x [B, S, E]: a packed in-projection
 * (inProjWeight [3E, E], inProjBias [3E]) gives q, k, v; per-head attention scaled by 1/sqrt(E/heads);
 * then the out-projection (outProjWeight [Eo, E], outProjBias [Eo]). Returns [B, Sq, Eo].
 */
export function multiHeadAttention(
  x: Tensor,
  inProjWeight: Tensor,
  inProjBias: Tensor | null,
  outProjWeight: Tensor,
  outProjBias: Tensor | null,
  heads: number,
  opts: MultiHeadAttentionOptions = {},
): Tensor {
  const op = 'multiHeadAttention';
  checkTensor(op, 'x', x);
  checkRank(op, 'x', x, 3);
  checkTensor(op, 'inProjWeight', inProjWeight);
  checkTensor(op, 'outProjWeight', outProjWeight);
  const E = x.shape[2];
  check(op, Number.isInteger(heads) && heads > 0 && E % heads === 0,
    () => `heads must be a positive divisor of the embedding size ${E} (x ${x.describe()}), got ${heads}`);
  check(op, inProjWeight.ndim === 2 && inProjWeight.shape[0] === 3 * E && inProjWeight.shape[1] === E,
    () => `inProjWeight ${inProjWeight.describe()} must be [${3 * E},${E}] for x ${x.describe()}`);
  if (inProjBias) {
    checkTensor(op, 'inProjBias', inProjBias);
    check(op, inProjBias.ndim === 1 && inProjBias.shape[0] === 3 * E,
      () => `inProjBias ${inProjBias.describe()} must be [${3 * E}]`);
  }
  check(op, outProjWeight.ndim === 2 && outProjWeight.shape[1] === E,
    () => `outProjWeight ${outProjWeight.describe()} must be [Eo,${E}]`);
  const query = opts.query;
  if (query) {
    checkTensor(op, 'query', query);
    check(op, query.ndim === 3 && query.shape[0] === x.shape[0] && query.shape[2] === E,
      () => `query ${query.describe()} must be [${x.shape[0]},Sq,${E}] for x ${x.describe()}`);
  }
  const Dh = E / heads;
  const scale = 1 / Math.sqrt(Dh);
  const [B] = x.shape;
  const Sq = query ? query.shape[1] : x.shape[1];
  const temps: Tensor[] = [];
  const t = <T extends Tensor>(v: T): T => (temps.push(v), v);
  try {
    let parts: [Part, Part, Part];
    if (!query) {
      const qkv = t(linear(x, inProjWeight, inProjBias)); // [B, S, 3E], contiguous
      parts = [{ input: qkv, data: qkv, col: 0 }, { input: qkv, data: qkv, col: E }, { input: qkv, data: qkv, col: 2 * E }];
    } else {
      const wq = t(slice(inProjWeight, 0, 0, E)), wkv = t(slice(inProjWeight, 0, E, 3 * E));
      const bq = inProjBias ? t(slice(inProjBias, 0, 0, E)) : null;
      const bkv = inProjBias ? t(slice(inProjBias, 0, E, 3 * E)) : null;
      const q = t(linear(query, wq, bq)); // [B, Sq, E]
      const kv = t(linear(x, wkv, bkv)); // [B, S, 2E]
      parts = [{ input: q, data: q, col: 0 }, { input: kv, data: kv, col: 0 }, { input: kv, data: kv, col: E }];
    }
    const o = t(attentionParts(op, parts, heads, Dh, !!opts.causal, scale)); // [B, Sq, H, Dh]
    const o3 = t(reshape(o, [B, Sq, E]));
    return linear(o3, outProjWeight, outProjBias);
  } finally {
    for (const v of temps) v.dispose();
  }
}
