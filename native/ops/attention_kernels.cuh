// Attention kernels on raw pointers for short sequences (CLIP: 50, 77 causal, 197, 257, 577 tokens).
// q, k, v, o, do, dq, dk, dv are [B,S,H,Dh] views with any batch/sequence/head strides and a unit
// last stride, so q/k/v can be read straight out of the packed [B,S,3,H,Dh] projection and o is
// written in the layout the output projection reads. lse is f32 [B,H,Sq] in natural-log units.
// Nothing S x S ever reaches device memory: the backward recomputes P from lse.
//
// Versions (the lab, native/cuda/dev/attention_{forward,backward}.cu, keeps the numbers):
//   v1 simple: one warp per query (forward, dq) or per key (dk, dv), fp32 arithmetic, any dtype
//              and head dim <= 256. The exact path for f32 inputs and the fallback.
//   v2 mma:    bf16 tensor cores (mma.sync m16n8k16), FlashAttention-2 order. Forward: a block of
//              4 warps owns 64 queries (16 per warp), streams 64-key tiles of K and V through a
//              double-buffered cp.async ring, online softmax in registers, P reused from the
//              accumulators as the A operand of P@V. Backward: a block owns 64 keys, walks the
//              query tiles (double-buffered Q, dO), accumulates dK and dV in registers, and adds
//              dQ = dS K either straight into dq (a single key tile) or into an f32 buffer with
//              atomics (several key tiles), converted at the end. Head dims 64, 80, 128.
#pragma once
#include "tc.cuh"

namespace tsclip::tc {

// One [B,S,H,Dh] view: element (b,s,h,d) at p + b*sb + s*ss + h*sh + d.
struct AttnView {
  void* p = nullptr;
  int64_t sb = 0, ss = 0, sh = 0;
  bool bf = false;
};

struct AttnParams {
  AttnView q, k, v, o, dout, dq, dk, dv;
  float* lse = nullptr;     // [B,H,Sq]
  float* dsum = nullptr;    // backward workspace [B,H,Sq]: rowsum(dO * O)
  float* dq_acc = nullptr;  // backward workspace [B,Sq,H,Dh] f32, or null when dq is written directly
  int B = 0, H = 0, Sq = 0, Sk = 0, D = 0;
  int causal = 0;  // query i sees keys j <= i + Sk - Sq
  float scale = 1.f;
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ int64_t attn_off(const AttnView& v, int b, int s, int h) {
  return int64_t(b) * v.sb + int64_t(s) * v.ss + int64_t(h) * v.sh;
}
// Keys visible to query i: [0, attn_kend).
__device__ __forceinline__ int attn_kend(const AttnParams& p, int i) {
  if (!p.causal) return p.Sk;
  int e = i + p.Sk - p.Sq + 1;
  return e < 0 ? 0 : (e > p.Sk ? p.Sk : e);
}

__device__ __forceinline__ float warp_allsum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ------------------------------------------------------------------------------------------------
// v1: simple kernels. 4 warps per block, one row per warp; DPL = head dims per lane (D <= 32*DPL).
template <int DPL>
__global__ void __launch_bounds__(128) attn_fwd_simple_kernel(AttnParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= int64_t(p.B) * p.H * p.Sq) return;
  const int i = int(row % p.Sq), h = int((row / p.Sq) % p.H), b = int(row / (int64_t(p.Sq) * p.H));
  const int64_t qo = attn_off(p.q, b, i, h);
  float qv[DPL], acc[DPL];
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    qv[u] = d < p.D ? ld_elem(p.q.p, p.q.bf, qo + d) * (p.scale * kLog2e) : 0.f;
    acc[u] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int kend = attn_kend(p, i);
  for (int j = 0; j < kend; j++) {
    const int64_t ko = attn_off(p.k, b, j, h), vo = attn_off(p.v, b, j, h);
    float s = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) s += qv[u] * ld_elem(p.k.p, p.k.bf, ko + d);
    }
    s = warp_allsum(s);
    const float mn = fmaxf(m, s), a = exp2f(m - mn), e = exp2f(s - mn);
    l = l * a + e;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      acc[u] = acc[u] * a + (d < p.D ? e * ld_elem(p.v.p, p.v.bf, vo + d) : 0.f);
    }
    m = mn;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  const int64_t oo = attn_off(p.o, b, i, h);
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    if (d < p.D) st_elem(p.o.p, p.o.bf, oo + d, acc[u] * inv);
  }
  if (lane == 0) p.lse[(int64_t(b) * p.H + h) * p.Sq + i] = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
}

// dsum_i = dO_i . O_i, one warp per query row (both backward paths need it first).
__global__ void __launch_bounds__(128) attn_bwd_dsum_kernel(AttnParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= int64_t(p.B) * p.H * p.Sq) return;
  const int i = int(row % p.Sq), h = int((row / p.Sq) % p.H), b = int(row / (int64_t(p.Sq) * p.H));
  const int64_t oo = attn_off(p.o, b, i, h), go = attn_off(p.dout, b, i, h);
  float s = 0.f;
  for (int d = lane; d < p.D; d += 32) s += ld_elem(p.o.p, p.o.bf, oo + d) * ld_elem(p.dout.p, p.dout.bf, go + d);
  s = warp_allsum(s);
  if (lane == 0) p.dsum[(int64_t(b) * p.H + h) * p.Sq + i] = s;
}

// dq_i = scale * sum_j P_ij (dO_i . v_j - dsum_i) k_j, one warp per query row.
template <int DPL>
__global__ void __launch_bounds__(128) attn_bwd_dq_simple_kernel(AttnParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= int64_t(p.B) * p.H * p.Sq) return;
  const int i = int(row % p.Sq), h = int((row / p.Sq) % p.H), b = int(row / (int64_t(p.Sq) * p.H));
  const int64_t stat = (int64_t(b) * p.H + h) * p.Sq + i;
  const float lse = p.lse[stat], dsum = p.dsum[stat];
  const int64_t qo = attn_off(p.q, b, i, h), go = attn_off(p.dout, b, i, h);
  float qv[DPL], gv[DPL], acc[DPL];
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    qv[u] = d < p.D ? ld_elem(p.q.p, p.q.bf, qo + d) * p.scale : 0.f;
    gv[u] = d < p.D ? ld_elem(p.dout.p, p.dout.bf, go + d) : 0.f;
    acc[u] = 0.f;
  }
  const int kend = lse == -INFINITY ? 0 : attn_kend(p, i);
  for (int j = 0; j < kend; j++) {
    const int64_t ko = attn_off(p.k, b, j, h), vo = attn_off(p.v, b, j, h);
    float s = 0.f, dp = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) {
        s += qv[u] * ld_elem(p.k.p, p.k.bf, ko + d);
        dp += gv[u] * ld_elem(p.v.p, p.v.bf, vo + d);
      }
    }
    s = warp_allsum(s);
    dp = warp_allsum(dp);
    const float ds = expf(s - lse) * (dp - dsum) * p.scale;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) acc[u] += ds * ld_elem(p.k.p, p.k.bf, ko + d);
    }
  }
  const int64_t oo = attn_off(p.dq, b, i, h);
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    if (d < p.D) st_elem(p.dq.p, p.dq.bf, oo + d, acc[u]);
  }
}

// dk_j = scale * sum_i dS_ij q_i, dv_j = sum_i P_ij dO_i, one warp per key row.
template <int DPL>
__global__ void __launch_bounds__(128) attn_bwd_dkv_simple_kernel(AttnParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= int64_t(p.B) * p.H * p.Sk) return;
  const int j = int(row % p.Sk), h = int((row / p.Sk) % p.H), b = int(row / (int64_t(p.Sk) * p.H));
  const int64_t ko = attn_off(p.k, b, j, h), vo = attn_off(p.v, b, j, h);
  float kv[DPL], vv[DPL], dk[DPL], dv[DPL];
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    kv[u] = d < p.D ? ld_elem(p.k.p, p.k.bf, ko + d) * p.scale : 0.f;
    vv[u] = d < p.D ? ld_elem(p.v.p, p.v.bf, vo + d) : 0.f;
    dk[u] = dv[u] = 0.f;
  }
  // the first query that sees key j: j <= i + Sk - Sq
  int i0 = p.causal ? j - (p.Sk - p.Sq) : 0;
  if (i0 < 0) i0 = 0;
  for (int i = i0; i < p.Sq; i++) {
    const int64_t stat = (int64_t(b) * p.H + h) * p.Sq + i;
    const float lse = p.lse[stat], dsum = p.dsum[stat];
    const int64_t qo = attn_off(p.q, b, i, h), go = attn_off(p.dout, b, i, h);
    float s = 0.f, dp = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) {
        s += kv[u] * ld_elem(p.q.p, p.q.bf, qo + d);
        dp += vv[u] * ld_elem(p.dout.p, p.dout.bf, go + d);
      }
    }
    s = warp_allsum(s);
    dp = warp_allsum(dp);
    const float pr = expf(s - lse);
    const float ds = pr * (dp - dsum) * p.scale;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) {
        dk[u] += ds * ld_elem(p.q.p, p.q.bf, qo + d);
        dv[u] += pr * ld_elem(p.dout.p, p.dout.bf, go + d);
      }
    }
  }
  const int64_t ko2 = attn_off(p.dk, b, j, h), vo2 = attn_off(p.dv, b, j, h);
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    if (d < p.D) {
      st_elem(p.dk.p, p.dk.bf, ko2 + d, dk[u]);
      st_elem(p.dv.p, p.dv.bf, vo2 + d, dv[u]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// v2: tensor cores (bf16).
template <int D>
struct AttnCfg {
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");
  static constexpr int BQ = 64, BKV = 64, THREADS = 128;
  static constexpr int LD = D + 8;        // padded rows: conflict-free ldmatrix
  static constexpr int LDS = BQ + 8;      // dS^T rows in the backward
  static constexpr int FWD_SMEM = (BQ + 4 * BKV) * LD * 2;
  static constexpr int BWD_SMEM = (2 * BKV + 4 * BQ) * LD * 2 + BKV * LDS * 2 + 4 * BQ * 4;
};

// Copies rows [row0, row0+64) of a [S, D] bf16 slice (row stride rs) into a [64][LD] tile;
// rows past S are zero-filled.
template <int D>
__device__ __forceinline__ void attn_load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t rs, int row0,
                                               int S) {
  constexpr int PER_ROW = D / 8, LD = AttnCfg<D>::LD;
  for (int c = threadIdx.x; c < 64 * PER_ROW; c += 128) {
    const int r = c / PER_ROW, ch = c % PER_ROW, gr = row0 + r;
    const bool ok = gr < S;
    cp_async16(dst + r * LD + ch * 8, ok ? src + int64_t(gr) * rs + ch * 8 : src, ok);
  }
}

template <int D>
__global__ void __launch_bounds__(128) attn_fwd_mma_kernel(AttnParams p) {
  using C = AttnCfg<D>;
  constexpr int LD = C::LD, ND = D / 8, KD = D / 16;
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(dyn_smem());
  __nv_bfloat16* sK = sQ + 64 * LD;
  __nv_bfloat16* sV = sK + 2 * 64 * LD;

  const int qtiles = (p.Sq + 63) / 64;
  const int qt = blockIdx.x % qtiles, h = (blockIdx.x / qtiles) % p.H, b = blockIdx.x / (qtiles * p.H);
  const int q0 = qt * 64, shift = p.Sk - p.Sq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int lj = lane / 8, lr = lane % 8;  // ldmatrix: which 8x8 matrix this lane addresses, which row

  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q.p) + attn_off(p.q, b, 0, h);
  const __nv_bfloat16* k = static_cast<const __nv_bfloat16*>(p.k.p) + attn_off(p.k, b, 0, h);
  const __nv_bfloat16* v = static_cast<const __nv_bfloat16*>(p.v.p) + attn_off(p.v, b, 0, h);
  const int q_last = imin(q0 + 63, p.Sq - 1);
  const int kv_end = p.causal ? imax(0, imin(p.Sk, q_last + shift + 1)) : p.Sk;
  const int n_kv = (kv_end + 63) / 64;

  attn_load_tile<D>(sQ, q, p.q.ss, q0, p.Sq);
  if (n_kv > 0) {
    attn_load_tile<D>(sK, k, p.k.ss, 0, p.Sk);
    attn_load_tile<D>(sV, v, p.v.ss, 0, p.Sk);
  }
  cp_async_commit();

  float o[ND][4];
#pragma unroll
  for (int i = 0; i < ND; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // rows g and g+8 (log2 units)
  uint32_t qf[KD][4];
  const float sl2 = p.scale * kLog2e;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;

  for (int j = 0; j < n_kv; j++) {
    cp_async_wait<0>();
    __syncthreads();  // tile j landed; everyone is done with tile j-1's buffer, refilled next
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; kk++) ldsm_x4<false>(qf[kk], sQ + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
    }
    if (j + 1 < n_kv) {
      attn_load_tile<D>(sK + ((j + 1) & 1) * 64 * LD, k, p.k.ss, (j + 1) * 64, p.Sk);
      attn_load_tile<D>(sV + ((j + 1) & 1) * 64 * LD, v, p.v.ss, (j + 1) * 64, p.Sk);
    }
    cp_async_commit();
    const __nv_bfloat16* Kt = sK + (j & 1) * 64 * LD;
    const __nv_bfloat16* Vt = sV + (j & 1) * 64 * LD;

    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++)
#pragma unroll
      for (int np = 0; np < 4; np++) {
        uint32_t kb[4];
        ldsm_x4<false>(kb, Kt + (np * 16 + (lj / 2) * 8 + lr) * LD + kk * 16 + (lj % 2) * 8);
        const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
        mma_bf16(s[2 * np], qf[kk], b0);
        mma_bf16(s[2 * np + 1], qf[kk], b1);
      }

    // scale into log2 units and mask (keys past Sk, causal)
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = j * 64 + nt * 8 + 2 * t + (e & 1), row = e < 2 ? r0 : r1;
        const bool ok = key < p.Sk && (!p.causal || key <= row + shift);
        s[nt][e] = ok ? s[nt][e] * sl2 : -INFINITY;
        if (e < 2) mx0 = fmaxf(mx0, s[nt][e]);
        else mx1 = fmaxf(mx1, s[nt][e]);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // a row that has seen no key yet keeps exponent base 0: exp2(-inf - 0) = 0, never NaN
    const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
    const float al0 = exp2f(m0 - base0), al1 = exp2f(m1 - base1);
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
      s[nt][0] = exp2f(s[nt][0] - base0);
      s[nt][1] = exp2f(s[nt][1] - base0);
      s[nt][2] = exp2f(s[nt][2] - base1);
      s[nt][3] = exp2f(s[nt][3] - base1);
      sum0 += s[nt][0] + s[nt][1];
      sum1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * al0 + sum0;  // per-thread partial sums; the quad adds them up at the end
    l1 = l1 * al1 + sum1;
    m0 = mn0;
    m1 = mn1;
#pragma unroll
    for (int i = 0; i < ND; i++) {
      o[i][0] *= al0;
      o[i][1] *= al0;
      o[i][2] *= al1;
      o[i][3] *= al1;
    }
    // O += P V, P straight from the accumulators (its C layout is the A layout of the next mma)
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < KD; dp++) {
        uint32_t vb[4];
        ldsm_x4<true>(vb, Vt + (kk * 16 + (lj % 2) * 8 + lr) * LD + dp * 16 + (lj / 2) * 8);
        const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
        mma_bf16(o[2 * dp], a, b0);
        mma_bf16(o[2 * dp + 1], a, b1);
      }
    }
  }
  cp_async_wait<0>();  // a tile with no visible key still issued its Q copy

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.o.p) + attn_off(p.o, b, 0, h);
#pragma unroll
  for (int dt = 0; dt < ND; dt++) {
    const int col = dt * 8 + 2 * t;
    if (r0 < p.Sq)
      *reinterpret_cast<uint32_t*>(out + int64_t(r0) * p.o.ss + col) = pack_bf16(o[dt][0] * inv0, o[dt][1] * inv0);
    if (r1 < p.Sq)
      *reinterpret_cast<uint32_t*>(out + int64_t(r1) * p.o.ss + col) = pack_bf16(o[dt][2] * inv1, o[dt][3] * inv1);
  }
  if (t == 0) {
    float* lse = p.lse + (int64_t(b) * p.H + h) * p.Sq;
    if (r0 < p.Sq) lse[r0] = l0 > 0.f ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
    if (r1 < p.Sq) lse[r1] = l1 > 0.f ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
}

// Query-tile inputs of the backward: Q and dO through cp.async, lse (as log2 units, +inf for rows
// without keys or past Sq, so that P = exp2(s - lse) is 0 there) and dsum by plain loads.
template <int D>
__device__ __forceinline__ void attn_bwd_load_q(const AttnParams& p, int b, int h, int qt, __nv_bfloat16* sQ,
                                                __nv_bfloat16* sG, float* sL, float* sDs) {
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q.p) + attn_off(p.q, b, 0, h);
  const __nv_bfloat16* g = static_cast<const __nv_bfloat16*>(p.dout.p) + attn_off(p.dout, b, 0, h);
  attn_load_tile<D>(sQ, q, p.q.ss, qt * 64, p.Sq);
  attn_load_tile<D>(sG, g, p.dout.ss, qt * 64, p.Sq);
  if (threadIdx.x < 64) {
    const int i = qt * 64 + threadIdx.x;
    const int64_t stat = (int64_t(b) * p.H + h) * p.Sq + i;
    const float lse = i < p.Sq ? p.lse[stat] : -INFINITY;
    sL[threadIdx.x] = lse == -INFINITY ? INFINITY : lse * kLog2e;
    sDs[threadIdx.x] = i < p.Sq ? p.dsum[stat] : 0.f;
  }
}

template <int D>
__global__ void __launch_bounds__(128) attn_bwd_mma_kernel(AttnParams p) {
  using C = AttnCfg<D>;
  constexpr int LD = C::LD, LDS = C::LDS, ND = D / 8, KD = D / 16;
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(dyn_smem());
  __nv_bfloat16* sV = sK + 64 * LD;
  __nv_bfloat16* sQ = sV + 64 * LD;       // [2][64][LD]
  __nv_bfloat16* sG = sQ + 2 * 64 * LD;   // dO, [2][64][LD]
  __nv_bfloat16* sdS = sG + 2 * 64 * LD;  // dS^T [64 keys][LDS]
  float* sL = reinterpret_cast<float*>(sdS + 64 * LDS);  // [2][64]
  float* sDs = sL + 2 * 64;                              // [2][64]

  const int ktiles = (p.Sk + 63) / 64, qtiles = (p.Sq + 63) / 64;
  const int kt = blockIdx.x % ktiles, h = (blockIdx.x / ktiles) % p.H, b = blockIdx.x / (ktiles * p.H);
  const int j0 = kt * 64, shift = p.Sk - p.Sq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int lj = lane / 8, lr = lane % 8;
  const bool direct_dq = p.dq_acc == nullptr;  // one key tile: this block alone produces dq

  // the first query tile that sees any of keys j0..: i >= j0 - shift (all tiles when dq is direct,
  // so that rows without visible keys still get their zeros)
  int qt0 = 0;
  if (p.causal && !direct_dq) qt0 = imax(0, j0 - shift) / 64;

  const __nv_bfloat16* k = static_cast<const __nv_bfloat16*>(p.k.p) + attn_off(p.k, b, 0, h);
  const __nv_bfloat16* v = static_cast<const __nv_bfloat16*>(p.v.p) + attn_off(p.v, b, 0, h);
  attn_load_tile<D>(sK, k, p.k.ss, j0, p.Sk);
  attn_load_tile<D>(sV, v, p.v.ss, j0, p.Sk);
  if (qt0 < qtiles) attn_bwd_load_q<D>(p, b, h, qt0, sQ, sG, sL, sDs);
  cp_async_commit();

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int i = 0; i < ND; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;
  const float sl2 = p.scale * kLog2e;
  const int key0 = j0 + warp * 16 + g, key1 = key0 + 8;

  for (int qt = qt0; qt < qtiles; qt++) {
    const int buf = (qt - qt0) & 1;
    cp_async_wait<0>();
    __syncthreads();  // this tile landed; the other buffer and dS^T are free again
    if (qt + 1 < qtiles)
      attn_bwd_load_q<D>(p, b, h, qt + 1, sQ + (buf ^ 1) * 64 * LD, sG + (buf ^ 1) * 64 * LD, sL + (buf ^ 1) * 64,
                         sDs + (buf ^ 1) * 64);
    cp_async_commit();
    const __nv_bfloat16* Qt = sQ + buf * 64 * LD;
    const __nv_bfloat16* Gt = sG + buf * 64 * LD;
    const float* Lt = sL + buf * 64;
    const float* Dt = sDs + buf * 64;

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x 64 queries
    float st[8][4], dpt[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
      uint32_t ka[4], va[4];
      ldsm_x4<false>(ka, sK + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
      ldsm_x4<false>(va, sV + (warp * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < 4; np++) {
        uint32_t qb[4], gb[4];
        ldsm_x4<false>(qb, Qt + (np * 16 + (lj / 2) * 8 + lr) * LD + kk * 16 + (lj % 2) * 8);
        ldsm_x4<false>(gb, Gt + (np * 16 + (lj / 2) * 8 + lr) * LD + kk * 16 + (lj % 2) * 8);
        const uint32_t q0b[2] = {qb[0], qb[1]}, q1b[2] = {qb[2], qb[3]};
        const uint32_t g0b[2] = {gb[0], gb[1]}, g1b[2] = {gb[2], gb[3]};
        mma_bf16(st[2 * np], ka, q0b);
        mma_bf16(st[2 * np + 1], ka, q1b);
        mma_bf16(dpt[2 * np], va, g0b);
        mma_bf16(dpt[2 * np + 1], va, g1b);
      }
    }
    // P^T (in st) and dS^T (in dpt)
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int ql = nt * 8 + 2 * t + (e & 1), qi = qt * 64 + ql, key = e < 2 ? key0 : key1;
        const bool ok = key < p.Sk && qi < p.Sq && (!p.causal || key <= qi + shift);
        const float pr = ok ? exp2f(st[nt][e] * sl2 - Lt[ql]) : 0.f;
        st[nt][e] = pr;
        dpt[nt][e] = pr * (dpt[nt][e] - Dt[ql]);
      }
    // dV += P^T dO and dK += dS^T Q (scaled at the end)
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                              pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                              pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
      const uint32_t da[4] = {pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]), pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]),
                              pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                              pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < KD; dp++) {
        uint32_t gb[4], qb[4];
        ldsm_x4<true>(gb, Gt + (kk * 16 + (lj % 2) * 8 + lr) * LD + dp * 16 + (lj / 2) * 8);
        ldsm_x4<true>(qb, Qt + (kk * 16 + (lj % 2) * 8 + lr) * LD + dp * 16 + (lj / 2) * 8);
        const uint32_t g0b[2] = {gb[0], gb[1]}, g1b[2] = {gb[2], gb[3]};
        const uint32_t q0b[2] = {qb[0], qb[1]}, q1b[2] = {qb[2], qb[3]};
        mma_bf16(dv[2 * dp], pa, g0b);
        mma_bf16(dv[2 * dp + 1], pa, g1b);
        mma_bf16(dk[2 * dp], da, q0b);
        mma_bf16(dk[2 * dp + 1], da, q1b);
      }
    }
    // dS^T to shared memory: dQ needs it with queries as rows, summed over every warp's keys
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
      const int col = nt * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + g) * LDS + col) = pack_bf16(dpt[nt][0], dpt[nt][1]);
      *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + g + 8) * LDS + col) = pack_bf16(dpt[nt][2], dpt[nt][3]);
    }
    __syncthreads();
    // dQ rows warp*16.. of this query tile = dS (16 x 64 keys) K (64 x D)
    float dq[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      uint32_t a[4];
      ldsm_x4<true>(a, sdS + (kk * 16 + (lj / 2) * 8 + lr) * LDS + warp * 16 + (lj % 2) * 8);
#pragma unroll
      for (int dp = 0; dp < KD; dp++) {
        uint32_t kb[4];
        ldsm_x4<true>(kb, sK + (kk * 16 + (lj % 2) * 8 + lr) * LD + dp * 16 + (lj / 2) * 8);
        const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
        mma_bf16(dq[2 * dp], a, b0);
        mma_bf16(dq[2 * dp + 1], a, b1);
      }
    }
    const int qr0 = qt * 64 + warp * 16 + g, qr1 = qr0 + 8;
    if (direct_dq) {
      __nv_bfloat16* dqp = static_cast<__nv_bfloat16*>(p.dq.p) + attn_off(p.dq, b, 0, h);
#pragma unroll
      for (int dt = 0; dt < ND; dt++) {
        const int col = dt * 8 + 2 * t;
        if (qr0 < p.Sq)
          *reinterpret_cast<uint32_t*>(dqp + int64_t(qr0) * p.dq.ss + col) =
              pack_bf16(dq[dt][0] * p.scale, dq[dt][1] * p.scale);
        if (qr1 < p.Sq)
          *reinterpret_cast<uint32_t*>(dqp + int64_t(qr1) * p.dq.ss + col) =
              pack_bf16(dq[dt][2] * p.scale, dq[dt][3] * p.scale);
      }
    } else {
#pragma unroll
      for (int dt = 0; dt < ND; dt++) {
        const int col = dt * 8 + 2 * t;
        if (qr0 < p.Sq) {
          float* a0 = p.dq_acc + ((int64_t(b) * p.Sq + qr0) * p.H + h) * D + col;
          atomicAdd(a0, dq[dt][0] * p.scale);
          atomicAdd(a0 + 1, dq[dt][1] * p.scale);
        }
        if (qr1 < p.Sq) {
          float* a1 = p.dq_acc + ((int64_t(b) * p.Sq + qr1) * p.H + h) * D + col;
          atomicAdd(a1, dq[dt][2] * p.scale);
          atomicAdd(a1 + 1, dq[dt][3] * p.scale);
        }
      }
    }
  }
  cp_async_wait<0>();

  __nv_bfloat16* dkp = static_cast<__nv_bfloat16*>(p.dk.p) + attn_off(p.dk, b, 0, h);
  __nv_bfloat16* dvp = static_cast<__nv_bfloat16*>(p.dv.p) + attn_off(p.dv, b, 0, h);
#pragma unroll
  for (int dt = 0; dt < ND; dt++) {
    const int col = dt * 8 + 2 * t;
    if (key0 < p.Sk) {
      *reinterpret_cast<uint32_t*>(dkp + int64_t(key0) * p.dk.ss + col) =
          pack_bf16(dk[dt][0] * p.scale, dk[dt][1] * p.scale);
      *reinterpret_cast<uint32_t*>(dvp + int64_t(key0) * p.dv.ss + col) = pack_bf16(dv[dt][0], dv[dt][1]);
    }
    if (key1 < p.Sk) {
      *reinterpret_cast<uint32_t*>(dkp + int64_t(key1) * p.dk.ss + col) =
          pack_bf16(dk[dt][2] * p.scale, dk[dt][3] * p.scale);
      *reinterpret_cast<uint32_t*>(dvp + int64_t(key1) * p.dv.ss + col) = pack_bf16(dv[dt][2], dv[dt][3]);
    }
  }
}

// dq (any dtype, strided) from the f32 accumulation buffer [B,Sq,H,D].
__global__ void attn_bwd_dq_convert_kernel(AttnParams p) {
  const int64_t n = int64_t(p.B) * p.Sq * p.H * p.D;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(e % p.D);
    const int64_t r = e / p.D;
    const int h = int(r % p.H), i = int((r / p.H) % p.Sq), b = int(r / (int64_t(p.H) * p.Sq));
    st_elem(p.dq.p, p.dq.bf, attn_off(p.dq, b, i, h) + d, p.dq_acc[e]);
  }
}

// ------------------------------------------------------------------------------------------------
// Host side.
#if !defined(TSCLIP_EMU)
inline bool attn_view_mma_ok(const AttnView& v) {
  return v.bf && reinterpret_cast<uintptr_t>(v.p) % 16 == 0 && v.sb % 8 == 0 && v.ss % 8 == 0 && v.sh % 8 == 0;
}
// Whether v2 takes these tensors (bf16 everywhere, 16-byte rows, a head dim it is built for, and
// its shared memory within the device's opt-in limit `smem_optin`, bytes).
inline bool attn_mma_eligible(const AttnParams& p, bool backward, int smem_optin) {
  if (p.D != 64 && p.D != 80 && p.D != 128) return false;
  const int smem = p.D == 64    ? (backward ? AttnCfg<64>::BWD_SMEM : AttnCfg<64>::FWD_SMEM)
                   : p.D == 80 ? (backward ? AttnCfg<80>::BWD_SMEM : AttnCfg<80>::FWD_SMEM)
                               : (backward ? AttnCfg<128>::BWD_SMEM : AttnCfg<128>::FWD_SMEM);
  if (smem > smem_optin) return false;
  if (!attn_view_mma_ok(p.q) || !attn_view_mma_ok(p.k) || !attn_view_mma_ok(p.v) || !attn_view_mma_ok(p.o))
    return false;
  if (backward && (!attn_view_mma_ok(p.dout) || !attn_view_mma_ok(p.dq) || !attn_view_mma_ok(p.dk) ||
                   !attn_view_mma_ok(p.dv)))
    return false;
  return int64_t(p.B) * p.H * ((backward ? p.Sk : p.Sq) + 63) / 64 < (int64_t(1) << 31);
}

inline unsigned attn_rows_grid(int64_t rows) { return unsigned((rows + 3) / 4); }

inline cudaError_t attn_fwd_launch_simple(const AttnParams& p, cudaStream_t s) {
  const unsigned grid = attn_rows_grid(int64_t(p.B) * p.H * p.Sq);
  if (p.D <= 32) attn_fwd_simple_kernel<1><<<grid, 128, 0, s>>>(p);
  else if (p.D <= 64) attn_fwd_simple_kernel<2><<<grid, 128, 0, s>>>(p);
  else if (p.D <= 128) attn_fwd_simple_kernel<4><<<grid, 128, 0, s>>>(p);
  else attn_fwd_simple_kernel<8><<<grid, 128, 0, s>>>(p);
  return cudaGetLastError();
}

template <int D>
inline cudaError_t attn_fwd_launch_mma_t(const AttnParams& p, cudaStream_t s) {
  constexpr int smem = AttnCfg<D>::FWD_SMEM;
  static const cudaError_t e =  // once per kernel: the attribute stays set
      cudaFuncSetAttribute(attn_fwd_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  const unsigned grid = unsigned(int64_t(p.B) * p.H * ((p.Sq + 63) / 64));
  attn_fwd_mma_kernel<D><<<grid, 128, smem, s>>>(p);
  return cudaGetLastError();
}

// mma: the caller's choice (attn_mma_eligible) of v2 over v1.
inline cudaError_t attn_fwd_launch(const AttnParams& p, cudaStream_t s, bool mma) {
  if (p.B == 0 || p.H == 0 || p.Sq == 0) return cudaSuccess;
  if (!mma) return attn_fwd_launch_simple(p, s);  // also writes o = 0, lse = -inf when Sk = 0
  if (p.D == 64) return attn_fwd_launch_mma_t<64>(p, s);
  if (p.D == 80) return attn_fwd_launch_mma_t<80>(p, s);
  return attn_fwd_launch_mma_t<128>(p, s);
}

template <int D>
inline cudaError_t attn_bwd_launch_mma_t(const AttnParams& p, cudaStream_t s) {
  constexpr int smem = AttnCfg<D>::BWD_SMEM;
  static const cudaError_t e =
      cudaFuncSetAttribute(attn_bwd_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  const unsigned grid = unsigned(int64_t(p.B) * p.H * ((p.Sk + 63) / 64));
  attn_bwd_mma_kernel<D><<<grid, 128, smem, s>>>(p);
  return cudaGetLastError();
}

// Bytes of f32 workspace the backward needs besides dsum: the dq accumulator when the tensor-core
// path runs with more than one key tile.
inline size_t attn_bwd_dq_acc_bytes(const AttnParams& p, bool mma) {
  return mma && p.Sk > 64 ? size_t(p.B) * p.Sq * p.H * p.D * sizeof(float) : 0;
}

// mma: the caller's choice (attn_mma_eligible). p.dsum must hold B*H*Sq floats and p.dq_acc
// attn_bwd_dq_acc_bytes(p, mma) bytes (null when that is 0).
inline cudaError_t attn_bwd_launch(AttnParams p, cudaStream_t s, bool mma) {
  if (p.B == 0 || p.H == 0) return cudaSuccess;
  if (p.Sq == 0 || p.Sk == 0) mma = false;  // the simple kernels write the zeros such shapes need
  cudaError_t e = cudaSuccess;
  if (p.Sq > 0) {
    attn_bwd_dsum_kernel<<<attn_rows_grid(int64_t(p.B) * p.H * p.Sq), 128, 0, s>>>(p);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (!mma) {
    const int dpl = p.D <= 32 ? 1 : p.D <= 64 ? 2 : p.D <= 128 ? 4 : 8;
    if (p.Sq > 0) {
      const unsigned gq = attn_rows_grid(int64_t(p.B) * p.H * p.Sq);
      if (dpl == 1) attn_bwd_dq_simple_kernel<1><<<gq, 128, 0, s>>>(p);
      else if (dpl == 2) attn_bwd_dq_simple_kernel<2><<<gq, 128, 0, s>>>(p);
      else if (dpl == 4) attn_bwd_dq_simple_kernel<4><<<gq, 128, 0, s>>>(p);
      else attn_bwd_dq_simple_kernel<8><<<gq, 128, 0, s>>>(p);
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (p.Sk > 0) {
      const unsigned gk = attn_rows_grid(int64_t(p.B) * p.H * p.Sk);
      if (dpl == 1) attn_bwd_dkv_simple_kernel<1><<<gk, 128, 0, s>>>(p);
      else if (dpl == 2) attn_bwd_dkv_simple_kernel<2><<<gk, 128, 0, s>>>(p);
      else if (dpl == 4) attn_bwd_dkv_simple_kernel<4><<<gk, 128, 0, s>>>(p);
      else attn_bwd_dkv_simple_kernel<8><<<gk, 128, 0, s>>>(p);
    }
    return cudaGetLastError();
  }
  if (p.dq_acc) {
    e = cudaMemsetAsync(p.dq_acc, 0, attn_bwd_dq_acc_bytes(p, true), s);
    if (e != cudaSuccess) return e;
  }
  if (p.D == 64) e = attn_bwd_launch_mma_t<64>(p, s);
  else if (p.D == 80) e = attn_bwd_launch_mma_t<80>(p, s);
  else e = attn_bwd_launch_mma_t<128>(p, s);
  if (e != cudaSuccess || !p.dq_acc) return e;
  const int64_t n = int64_t(p.B) * p.Sq * p.H * p.D;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 65535 * 4) blocks = 65535 * 4;
  attn_bwd_dq_convert_kernel<<<unsigned(blocks), 256, 0, s>>>(p);
  return cudaGetLastError();
}
#endif  // !TSCLIP_EMU

}  // namespace tsclip::tc
