// attention and multiHeadAttention against float64 references (forward, finite-difference and
// analytic gradients), on contiguous inputs and on strided slices of a packed QKV tensor, for
// every SIMD path of the CPU kernels.
import { afterEach, describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';
import { attention, multiHeadAttention } from '../lib/ops/attention.js';
import { checkOp, expectClose, randArray, tensor, toF64, DEVICE } from './helpers.js';

interface Dims {
  B: number;
  Sq: number;
  Sk: number;
  H: number;
  Dh: number;
}

/** Softmax probabilities P[b][h][i][j] of the float64 reference (zero where not visible). */
function probs(q: Float64Array, k: Float64Array, d: Dims, causal: boolean, scale: number): Float64Array {
  const { B, Sq, Sk, H, Dh } = d;
  const P = new Float64Array(B * H * Sq * Sk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Sq; i++) {
        const vis = causal ? Math.min(Sk, Math.max(0, i + Sk - Sq + 1)) : Sk;
        const s: number[] = [];
        for (let j = 0; j < vis; j++) {
          let dot = 0;
          for (let x = 0; x < Dh; x++) dot += q[((b * Sq + i) * H + h) * Dh + x] * k[((b * Sk + j) * H + h) * Dh + x];
          s.push(dot * scale);
        }
        if (!vis) continue;
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const tot = e.reduce((a, c) => a + c, 0);
        for (let j = 0; j < vis; j++) P[((b * H + h) * Sq + i) * Sk + j] = e[j] / tot;
      }
    }
  }
  return P;
}

function attnRef(q: Float64Array, k: Float64Array, v: Float64Array, d: Dims, causal: boolean, scale: number): Float64Array {
  const { B, Sq, Sk, H, Dh } = d;
  const P = probs(q, k, d, causal, scale);
  const o = new Float64Array(B * Sq * H * Dh);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Sq; i++)
        for (let j = 0; j < Sk; j++) {
          const p = P[((b * H + h) * Sq + i) * Sk + j];
          if (!p) continue;
          for (let x = 0; x < Dh; x++) o[((b * Sq + i) * H + h) * Dh + x] += p * v[((b * Sk + j) * H + h) * Dh + x];
        }
  return o;
}

/** Analytic float64 gradients of sum(o * dout). */
function attnGradRef(q: Float64Array, k: Float64Array, v: Float64Array, dout: Float64Array, d: Dims, causal: boolean, scale: number) {
  const { B, Sq, Sk, H, Dh } = d;
  const P = probs(q, k, d, causal, scale);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const qi = (b: number, i: number, h: number) => ((b * Sq + i) * H + h) * Dh;
  const ki = (b: number, j: number, h: number) => ((b * Sk + j) * H + h) * Dh;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Sq; i++) {
        const dp = new Float64Array(Sk);
        let D = 0;
        for (let j = 0; j < Sk; j++) {
          const p = P[((b * H + h) * Sq + i) * Sk + j];
          let s = 0;
          for (let x = 0; x < Dh; x++) s += dout[qi(b, i, h) + x] * v[ki(b, j, h) + x];
          dp[j] = s;
          D += p * s;
          for (let x = 0; x < Dh; x++) dv[ki(b, j, h) + x] += p * dout[qi(b, i, h) + x];
        }
        for (let j = 0; j < Sk; j++) {
          const p = P[((b * H + h) * Sq + i) * Sk + j];
          const ds = p * (dp[j] - D) * scale;
          for (let x = 0; x < Dh; x++) {
            dq[qi(b, i, h) + x] += ds * k[ki(b, j, h) + x];
            dk[ki(b, j, h) + x] += ds * q[qi(b, i, h) + x];
          }
        }
      }
  return { dq, dk, dv };
}

/** The SIMD paths to exercise: the CPU kernels honour TSCLIP_ATTENTION_ISA (never beyond the CPU). */
const ISAS = DEVICE === 'cpu' ? ['default', 'generic', 'avx2', 'avx512'] : ['default'];
function withIsa<T>(isa: string, fn: () => T): T {
  if (isa === 'default') delete process.env.TSCLIP_ATTENTION_ISA;
  else process.env.TSCLIP_ATTENTION_ISA = isa;
  try {
    return fn();
  } finally {
    delete process.env.TSCLIP_ATTENTION_ISA;
  }
}

afterEach(() => {
  delete process.env.TSCLIP_ATTENTION_ISA;
});

describe('attention', () => {
  const cases: (Dims & { causal: boolean })[] = [
    { B: 2, Sq: 5, Sk: 5, H: 2, Dh: 4, causal: false },
    { B: 2, Sq: 5, Sk: 5, H: 2, Dh: 4, causal: true },
    { B: 1, Sq: 3, Sk: 7, H: 3, Dh: 5, causal: false }, // Sq != Sk
    { B: 1, Sq: 3, Sk: 7, H: 3, Dh: 5, causal: true }, // query i sees keys <= i + 4
    { B: 2, Sq: 6, Sk: 4, H: 1, Dh: 3, causal: true }, // the first two queries see nothing
    { B: 1, Sq: 1, Sk: 1, H: 1, Dh: 1, causal: false },
    { B: 1, Sq: 9, Sk: 19, H: 2, Dh: 64, causal: true }, // the head-dim-64 path, keys past one vector chunk
  ];
  for (const isa of ISAS) {
    for (const c of cases) {
      it(`[${isa}] matches the reference and finite differences for ${JSON.stringify(c)}`, () => {
        const scale = c.Dh === 64 ? 0.125 : 0.7;
        withIsa(isa, () =>
          checkOp({
            shapes: [[c.B, c.Sq, c.H, c.Dh], [c.B, c.Sk, c.H, c.Dh], [c.B, c.Sk, c.H, c.Dh]],
            op: ([q, k, v]) => attention(q, k, v, { causal: c.causal, scale }),
            ref: ([q, k, v]) => attnRef(q, k, v, c, c.causal, scale),
            seed: c.Sq * 31 + c.Sk + c.Dh,
          }),
        );
      });
    }

    it(`[${isa}] matches analytic gradients on CLIP-sized heads (S=77, H=4, Dh=64, causal) and odd sizes`, () => {
      for (const [d, causal] of [
        [{ B: 2, Sq: 77, Sk: 77, H: 4, Dh: 64 }, true],
        [{ B: 1, Sq: 50, Sk: 50, H: 3, Dh: 64 }, false],
        [{ B: 2, Sq: 21, Sk: 37, H: 2, Dh: 40 }, false],
        [{ B: 1, Sq: 37, Sk: 21, H: 2, Dh: 17 }, true],
        // One head and many queries: the forward splits the queries across threads.
        [{ B: 1, Sq: 130, Sk: 110, H: 1, Dh: 64 }, true],
      ] as [Dims, boolean][]) {
        const nq = d.B * d.Sq * d.H * d.Dh, nk = d.B * d.Sk * d.H * d.Dh;
        const q = randArray(nq, 1, -2, 2).map(Math.fround), k = randArray(nk, 2, -2, 2).map(Math.fround);
        const v = randArray(nk, 3).map(Math.fround), dout = randArray(nq, 4).map(Math.fround);
        const scale = 1 / Math.sqrt(d.Dh);
        withIsa(isa, () => {
          const tq = tensor(q, [d.B, d.Sq, d.H, d.Dh], true), tk = tensor(k, [d.B, d.Sk, d.H, d.Dh], true);
          const tv = tensor(v, [d.B, d.Sk, d.H, d.Dh], true);
          const o = attention(tq, tk, tv, { causal });
          expectClose(toF64(o), attnRef(q, k, v, d, causal, scale), 2e-5, `forward ${JSON.stringify(d)}`);
          o.backward(tensor(dout, [d.B, d.Sq, d.H, d.Dh]));
          const g = attnGradRef(q, k, v, dout, d, causal, scale);
          expectClose(toF64(tq.grad!), g.dq, 5e-5, 'dq');
          expectClose(toF64(tk.grad!), g.dk, 5e-5, 'dk');
          expectClose(toF64(tv.grad!), g.dv, 5e-5, 'dv');
          for (const t of [tq, tk, tv, o]) t.dispose();
        });
      }
    });
  }

  it('reads q, k, v as strided slices of a packed [B,S,3*H*Dh] tensor', () => {
    const B = 2, S = 6, H = 3, Dh = 8, E = H * Dh;
    const packed = randArray(B * S * 3 * E, 21);
    const dout = randArray(B * S * E, 22);
    for (const causal of [false, true]) {
      const qkv = tensor(packed, [B, S, 3 * E]);
      const views = [0, 1, 2].map((p) => {
        const t = qkv.view([B, S, H, Dh], [S * 3 * E, 3 * E, Dh, 1], p * E);
        t.requiresGrad = true;
        return t;
      });
      expect(views[0].isContiguous).toBe(false);
      const o = attention(views[0], views[1], views[2], { causal });
      // The same values, contiguous.
      const parts = [0, 1, 2].map((p) => {
        const a = new Float64Array(B * S * E);
        for (let r = 0; r < B * S; r++) for (let c = 0; c < E; c++) a[r * E + c] = packed[r * 3 * E + p * E + c];
        return a;
      });
      const d = { B, Sq: S, Sk: S, H, Dh };
      expectClose(toF64(o), attnRef(parts[0], parts[1], parts[2], d, causal, 1 / Math.sqrt(Dh)), 1e-5, 'forward');
      o.backward(tensor(dout, [B, S, H, Dh]));
      const g = attnGradRef(parts[0], parts[1], parts[2], dout, d, causal, 1 / Math.sqrt(Dh));
      expectClose(toF64(views[0].grad!), g.dq, 1e-4, 'dq');
      expectClose(toF64(views[1].grad!), g.dk, 1e-4, 'dk');
      expectClose(toF64(views[2].grad!), g.dv, 1e-4, 'dv');
      for (const t of [...views, o, qkv]) t.dispose();
    }
  });

  it('takes views whose last stride is not 1 (copied first)', () => {
    const B = 1, S = 4, H = 2, Dh = 3;
    const raw = randArray(B * S * H * Dh, 31);
    // A [B,S,H,Dh] view of data laid out as [B,S,Dh,H].
    const base = tensor(raw, [B, S, Dh, H]);
    const q = base.view([B, S, H, Dh], [S * H * Dh, H * Dh, 1, H]);
    const qc = new Float64Array(raw.length);
    for (let s = 0; s < S; s++) for (let h = 0; h < H; h++) for (let x = 0; x < Dh; x++) qc[(s * H + h) * Dh + x] = raw[(s * Dh + x) * H + h];
    const o = attention(q, q, q);
    expectClose(toF64(o), attnRef(qc, qc, qc, { B, Sq: S, Sk: S, H, Dh }, false, 1 / Math.sqrt(Dh)), 1e-5);
  });

  it('rejects bad inputs with the op and shapes in the message', () => {
    const q = Tensor.zeros([1, 4, 2, 8], { device: DEVICE });
    const k = Tensor.zeros([1, 5, 2, 8], { device: DEVICE });
    expect(() => attention(q, k, Tensor.zeros([1, 5, 2, 4], { device: DEVICE }))).toThrow(/attention: q float32\[1,4,2,8\], k float32\[1,5,2,8\] and v float32\[1,5,2,4\]/);
    expect(() => attention(q, k, Tensor.zeros([1, 6, 2, 8], { device: DEVICE }))).toThrow(/attention: .*v float32\[1,6,2,8\]/);
    expect(() => attention(Tensor.zeros([4, 2, 8], { device: DEVICE }), k, k)).toThrow(/attention: q must have 4 dimensions, got float32\[4,2,8\]/);
    expect(() => attention(q, k, k, { scale: -1 })).toThrow(/attention: scale must be a positive number/);
    expect(() => attention(q, k, Tensor.zeros([1, 5, 2, 8], { dtype: 'int32', device: DEVICE }))).toThrow(/attention: v must be float32/);
  });
});

/** torch.nn.MultiheadAttention's math in float64 (batch-first x, packed in-projection). */
function mhaRef(x: Float64Array, query: Float64Array | null, inW: Float64Array, inB: Float64Array, outW: Float64Array, outB: Float64Array,
  B: number, S: number, Sq: number, E: number, Eo: number, heads: number, causal: boolean): Float64Array {
  const proj = (src: Float64Array, rows: number, part: number): Float64Array => {
    const out = new Float64Array(rows * E);
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < E; o++) {
        let s = inB[part * E + o];
        for (let i = 0; i < E; i++) s += src[r * E + i] * inW[(part * E + o) * E + i];
        out[r * E + o] = s;
      }
    return out;
  };
  const q = proj(query ?? x, B * Sq, 0), k = proj(x, B * S, 1), v = proj(x, B * S, 2);
  const Dh = E / heads;
  const o = attnRef(q, k, v, { B, Sq, Sk: S, H: heads, Dh }, causal, 1 / Math.sqrt(Dh));
  const y = new Float64Array(B * Sq * Eo);
  for (let r = 0; r < B * Sq; r++)
    for (let c = 0; c < Eo; c++) {
      let s = outB[c];
      for (let i = 0; i < E; i++) s += o[r * E + i] * outW[c * E + i];
      y[r * Eo + c] = s;
    }
  return y;
}

describe('multiHeadAttention', () => {
  for (const causal of [false, true]) {
    it(`matches torch's MHA math and finite differences (causal=${causal})`, () => {
      const B = 2, S = 5, E = 8, heads = 2;
      checkOp({
        shapes: [[B, S, E], [3 * E, E], [3 * E], [E, E], [E]],
        op: ([x, iw, ib, ow, ob]) => multiHeadAttention(x, iw, ib, ow, ob, heads, { causal }),
        ref: ([x, iw, ib, ow, ob]) => mhaRef(x, null, iw, ib, ow, ob, B, S, S, E, E, heads, causal),
        seed: causal ? 5 : 6,
        gradTol: 2e-3,
      });
    });
  }

  it('supports a separate query (attention pooling: one query token, a wider output)', () => {
    const B = 2, S = 7, E = 12, Eo = 5, heads = 3;
    checkOp({
      shapes: [[B, S, E], [B, 1, E], [3 * E, E], [3 * E], [Eo, E], [Eo]],
      op: ([x, q, iw, ib, ow, ob]) => multiHeadAttention(x, iw, ib, ow, ob, heads, { query: q }),
      ref: ([x, q, iw, ib, ow, ob]) => mhaRef(x, q, iw, ib, ow, ob, B, S, 1, E, Eo, heads, false),
      seed: 9,
      gradTol: 2e-3,
    });
  });

  it('works without biases at CLIP text width (E=64, 8 tokens, causal)', () => {
    const B = 1, S = 8, E = 64, heads = 1;
    const x = randArray(B * S * E, 1), iw = randArray(3 * E * E, 2, -0.2, 0.2), ow = randArray(E * E, 3, -0.2, 0.2);
    const y = multiHeadAttention(tensor(x, [B, S, E]), tensor(iw, [3 * E, E]), null, tensor(ow, [E, E]), null, heads, { causal: true });
    expect(y.shape).toEqual([B, S, E]);
    const zeros = (n: number) => new Float64Array(n);
    expectClose(toF64(y), mhaRef(x, null, iw, zeros(3 * E), ow, zeros(E), B, S, S, E, E, heads, true), 1e-5);
  });

  it('rejects bad inputs', () => {
    const x = Tensor.zeros([1, 3, 8], { device: DEVICE });
    const iw = Tensor.zeros([24, 8], { device: DEVICE }), ow = Tensor.zeros([8, 8], { device: DEVICE });
    expect(() => multiHeadAttention(x, iw, null, ow, null, 3)).toThrow(/multiHeadAttention: heads must be a positive divisor of the embedding size 8/);
    expect(() => multiHeadAttention(x, Tensor.zeros([8, 8], { device: DEVICE }), null, ow, null, 2)).toThrow(/multiHeadAttention: inProjWeight float32\[8,8\] must be \[24,8\]/);
    expect(() => multiHeadAttention(x, iw, Tensor.zeros([8], { device: DEVICE }), ow, null, 2)).toThrow(/multiHeadAttention: inProjBias float32\[8\] must be \[24\]/);
    expect(() => multiHeadAttention(x, iw, null, ow, null, 2, { query: Tensor.zeros([2, 1, 8], { device: DEVICE }) })).toThrow(/multiHeadAttention: query float32\[2,1,8\]/);
  });
});
