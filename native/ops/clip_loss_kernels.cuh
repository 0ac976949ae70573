// Contrastive (CLIP) loss kernels on raw pointers, tiled over the logits s_ij = exp(t) a_i . b_j so
// that no n x m buffer ever exists (the Inf-CL idea): memory stays O((n + m) D).
//
// Everything is built from one "row pass" over rows a [n,D] against columns b [m,D]:
//   forward:  lse_i = log sum_j exp(s_ij), an online max/sum along each row;
//   backward: dZ_ij = g (c_row (exp(s_ij - lse_r_i) - [j = i+off]) + c_col (exp(s_ij - lse_c_j) - [j = i+off])),
//             da_i = exp(t) sum_j dZ_ij b_j, and sum_ij dZ_ij s_ij (the gradient of t).
// The symmetric loss (1/2N) sum_i (lse_row_i - s_ii + lse_col_i - s_ii) runs it twice per direction:
// lse_col is the row pass of (txt, img); dtxt is the row pass of (txt, img) with the roles of the
// statistics swapped and off -> -off. The one-sided loss (local rows against gathered columns, for
// data parallel) sets c_col = 0 for the rows and c_row = 0 for the columns.
//
// Versions (the lab, native/cuda/dev/clip_loss.cu, keeps the numbers):
//   v1 simple: one warp per row, f32 arithmetic, any D and dtype: the exact path and the fallback.
//   v2 mma:    bf16 mma.sync; a block owns 64 rows and walks 64-column tiles; each tile's logits
//              come from a 3-stage cp.async ring of 64-wide D chunks of both operands; 8 warps as
//              4 (rows) x 2 (columns). The backward writes the tile's dZ to shared memory and adds
//              dZ b into register accumulators for a DC-wide slice of D (grid.y = D / DC slices).
#pragma once
#include <utility>

#include "tc.cuh"

namespace tsclip::tc {

struct ClipParams {
  const void* a = nullptr;  // rows [n, D], row stride lda, unit column stride
  const void* b = nullptr;  // columns [m, D]
  int64_t lda = 0, ldb = 0;
  bool a_bf = false, b_bf = false;
  int n = 0, m = 0, D = 0;
  const float* log_scale = nullptr;  // device scalar t
  float* lse_out = nullptr;          // forward: [n]
  const float* lse_r = nullptr;      // backward: [n] row statistics
  const float* lse_c = nullptr;      // backward: [m] column statistics
  float c_row = 0.f, c_col = 0.f;
  const float* dloss = nullptr;  // device scalar g
  int offset = 0;                // row i's label is column i + offset
  void* da = nullptr;            // backward: [n, D], row stride ldda
  int64_t ldda = 0;
  bool da_bf = false;
  float* ds_part = nullptr;  // backward: one partial of sum dZ s per row block (v2) or per row (v1); may be null
};

constexpr float kClipLog2e = 1.4426950408889634f;

__device__ __forceinline__ float clip_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// exp(x) for x <= 0 or so, differences taken before scaling so large logits keep their precision
__device__ __forceinline__ float clip_exp(float x) { return exp2f(x * kClipLog2e); }

// dZ_ij / g for one logit s = exp(t) a.b, given the statistics (natural log).
__device__ __forceinline__ float clip_dz(const ClipParams& p, float s, float lr, float lc, bool label) {
  float dz = 0.f;
  if (p.c_row != 0.f) dz += p.c_row * clip_exp(s - lr);
  if (p.c_col != 0.f) dz += p.c_col * clip_exp(s - lc);
  if (label) dz -= p.c_row + p.c_col;
  return dz;
}

// ------------------------------------------------------------------------------------------------
// v1: one warp per row; DPL = D elements per lane (D <= 32 * DPL).
template <int DPL>
__global__ void __launch_bounds__(128) clip_rowlse_simple_kernel(ClipParams p) {
  const int lane = threadIdx.x % 32;
  const int i = blockIdx.x * 4 + threadIdx.x / 32;
  if (i >= p.n) return;
  const float et = expf(*p.log_scale);
  float av[DPL];
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    av[u] = d < p.D ? ld_elem(p.a, p.a_bf, i * p.lda + d) : 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j < p.m; j++) {
    float dot = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) dot += av[u] * ld_elem(p.b, p.b_bf, j * p.ldb + d);
    }
    const float s = et * clip_warp_sum(dot);  // the same order of operations as the loss's diagonal
    const float mn = fmaxf(m, s);
    l = l * clip_exp(m - mn) + clip_exp(s - mn);
    m = mn;
  }
  if (lane == 0) p.lse_out[i] = p.m > 0 ? m + logf(l) : -INFINITY;
}

template <int DPL>
__global__ void __launch_bounds__(128) clip_bwd_simple_kernel(ClipParams p) {
  const int lane = threadIdx.x % 32;
  const int i = blockIdx.x * 4 + threadIdx.x / 32;
  if (i >= p.n) return;
  const float et = expf(*p.log_scale), g = *p.dloss;
  const float lr = p.c_row != 0.f ? p.lse_r[i] : 0.f;
  float av[DPL], acc[DPL];
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    av[u] = d < p.D ? ld_elem(p.a, p.a_bf, i * p.lda + d) : 0.f;
    acc[u] = 0.f;
  }
  float ds = 0.f;
  for (int j = 0; j < p.m; j++) {
    float dot = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) dot += av[u] * ld_elem(p.b, p.b_bf, j * p.ldb + d);
    }
    const float s = et * clip_warp_sum(dot);
    const float lc = p.c_col != 0.f ? p.lse_c[j] : 0.f;
    const float dz = g * clip_dz(p, s, lr, lc, j == i + p.offset);
    ds += dz * s;
#pragma unroll
    for (int u = 0; u < DPL; u++) {
      const int d = lane + 32 * u;
      if (d < p.D) acc[u] += dz * ld_elem(p.b, p.b_bf, j * p.ldb + d);
    }
  }
#pragma unroll
  for (int u = 0; u < DPL; u++) {
    const int d = lane + 32 * u;
    if (d < p.D) st_elem(p.da, p.da_bf, i * p.ldda + d, acc[u] * et);
  }
  if (lane == 0 && p.ds_part) p.ds_part[i] = ds;
}

// ------------------------------------------------------------------------------------------------
// v2: tensor cores. Rows, columns and D chunks of 64; the ring holds (a chunk, b chunk) pairs in
// the logits phase and b chunks alone in the accumulation phase of the backward.
struct ClipCfg {
  static constexpr int BR = 64, BC = 64, BD = 64, THREADS = 256, STAGES = 3;
  static constexpr int LD = BD + 8;  // padded rows of a chunk / of dZ
  static constexpr int CHUNK = 64 * LD;  // elements of one 64 x 64 chunk
  static constexpr int SMEM = STAGES * 2 * CHUNK * 2 + 64 * LD * 2 + 2 * 64 * 4;
};

// Copies a [64 rows][64 d] chunk of a row-major [rows, D] bf16 matrix (zero past the edges).
__device__ __forceinline__ void clip_load_chunk(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t ld, int row0,
                                                int rows, int d0, int D) {
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int c = threadIdx.x + i * 256, r = c / 8, ch = (c % 8) * 8;
    const int gr = row0 + r, gd = d0 + ch;
    const bool ok = gr < rows && gd < D;
    cp_async16(dst + r * ClipCfg::LD + ch, ok ? src + gr * ld + gd : src, ok);
  }
}

template <int DC, bool BWD>
__global__ void __launch_bounds__(256) clip_mma_kernel(ClipParams p) {
  using C = ClipCfg;
  constexpr int NC3 = DC / 64;  // accumulation chunks per column tile (backward)
  __nv_bfloat16* ring = reinterpret_cast<__nv_bfloat16*>(dyn_smem());
  __nv_bfloat16* sdz = ring + C::STAGES * 2 * C::CHUNK;
  float* sred = reinterpret_cast<float*>(sdz + 64 * C::LD);  // [2][64]

  const __nv_bfloat16* A = static_cast<const __nv_bfloat16*>(p.a);
  const __nv_bfloat16* B = static_cast<const __nv_bfloat16*>(p.b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int lj = lane / 8, lr = lane % 8;
  const int wr = warp / 2, wc = warp % 2;
  const int r0 = blockIdx.x * C::BR;
  const int ra = r0 + wr * 16 + g, rb = ra + 8;  // this thread's two rows
  const int dc0 = blockIdx.y * DC;
  const int nk1 = (p.D + 63) / 64;
  const int nk3 = BWD ? imin(NC3, (p.D - dc0 + 63) / 64) : 0;
  const int per_tile = nk1 + nk3;
  const int ntiles = (p.m + 63) / 64;
  const int total = ntiles * per_tile;
  const float et = expf(*p.log_scale);

  auto load_step = [&](int st) {
    __nv_bfloat16* slot = ring + (st % C::STAGES) * 2 * C::CHUNK;
    const int jt = st / per_tile, r = st - jt * per_tile;
    if (r < nk1) {
      clip_load_chunk(slot, A, p.lda, r0, p.n, r * 64, p.D);
      clip_load_chunk(slot + C::CHUNK, B, p.ldb, jt * 64, p.m, r * 64, p.D);
    } else {
      clip_load_chunk(slot + C::CHUNK, B, p.ldb, jt * 64, p.m, dc0 + (r - nk1) * 64, p.D);
    }
  };

  float s[4][4];
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;  // forward: this thread's columns (natural log)
  float acc[BWD ? NC3 : 1][4][4];
  float ds = 0.f, g_loss = 0.f, lr_a = 0.f, lr_b = 0.f;
  if constexpr (BWD) {
#pragma unroll
    for (int c = 0; c < NC3; c++)
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[c][j][e] = 0.f;
    g_loss = *p.dloss;
    if (p.c_row != 0.f) {
      lr_a = ra < p.n ? p.lse_r[ra] : 0.f;
      lr_b = rb < p.n ? p.lse_r[rb] : 0.f;
    }
  }

#pragma unroll
  for (int st = 0; st < C::STAGES - 1; st++) {
    if (st < total) load_step(st);
    cp_async_commit();
  }
  for (int st = 0; st < total; st++) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();  // step st landed; the slot refilled next (and dZ) is free
    if (st + C::STAGES - 1 < total) load_step(st + C::STAGES - 1);
    cp_async_commit();

    const __nv_bfloat16* sa = ring + (st % C::STAGES) * 2 * C::CHUNK;
    const __nv_bfloat16* sb = sa + C::CHUNK;
    const int jt = st / per_tile, r = st - jt * per_tile;
    if (r < nk1) {
      if (r == 0) {
#pragma unroll
        for (int j = 0; j < 4; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      }
      // logits of rows wr*16.. x columns wc*32.. for this D chunk
#pragma unroll
      for (int kk = 0; kk < 4; kk++) {
        uint32_t af[4];
        ldsm_x4<false>(af, sa + (wr * 16 + lane % 16) * C::LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < 2; np++) {
          uint32_t bq[4];
          ldsm_x4<false>(bq, sb + (wc * 32 + np * 16 + (lj / 2) * 8 + lr) * C::LD + kk * 16 + (lj % 2) * 8);
          const uint32_t b0[2] = {bq[0], bq[1]}, b1[2] = {bq[2], bq[3]};
          mma_bf16(s[2 * np], af, b0);
          mma_bf16(s[2 * np + 1], af, b1);
        }
      }
      if (r == nk1 - 1) {
        if constexpr (!BWD) {
          // online max / sum over this thread's columns
          float xa[8], xb[8], mxa = m_a, mxb = m_b;
#pragma unroll
          for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              const int col = jt * 64 + wc * 32 + j * 8 + 2 * t + e;
              const bool ok = col < p.m;
              xa[j * 2 + e] = ok ? et * s[j][e] : -INFINITY;
              xb[j * 2 + e] = ok ? et * s[j][2 + e] : -INFINITY;
              mxa = fmaxf(mxa, xa[j * 2 + e]);
              mxb = fmaxf(mxb, xb[j * 2 + e]);
            }
          if (mxa != -INFINITY) {
            float sum = 0.f;
#pragma unroll
            for (int u = 0; u < 8; u++) sum += clip_exp(xa[u] - mxa);
            l_a = l_a * clip_exp(m_a - mxa) + sum;
            m_a = mxa;
          }
          if (mxb != -INFINITY) {
            float sum = 0.f;
#pragma unroll
            for (int u = 0; u < 8; u++) sum += clip_exp(xb[u] - mxb);
            l_b = l_b * clip_exp(m_b - mxb) + sum;
            m_b = mxb;
          }
        } else {
          // dZ for the tile into shared memory, and this thread's share of sum dZ s
#pragma unroll
          for (int j = 0; j < 4; j++) {
            const int cl = wc * 32 + j * 8 + 2 * t, col = jt * 64 + cl;
            float lc[2] = {0.f, 0.f};
            if (p.c_col != 0.f) {
              if (col < p.m) lc[0] = p.lse_c[col];
              if (col + 1 < p.m) lc[1] = p.lse_c[col + 1];
            }
            float z[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int row = e < 2 ? ra : rb, cc = col + (e & 1);
              const float sv = et * s[j][e];
              const bool ok = row < p.n && cc < p.m;
              z[e] = ok ? g_loss * clip_dz(p, sv, e < 2 ? lr_a : lr_b, lc[e & 1], cc == row + p.offset) : 0.f;
              ds += z[e] * (ok ? sv : 0.f);
            }
            *reinterpret_cast<uint32_t*>(sdz + (wr * 16 + g) * C::LD + cl) = pack_bf16(z[0], z[1]);
            *reinterpret_cast<uint32_t*>(sdz + (wr * 16 + g + 8) * C::LD + cl) = pack_bf16(z[2], z[3]);
          }
        }
      }
    } else if constexpr (BWD) {
      // da[rows wr*16.., d dc0 + c3*64 + wc*32 ..] += dZ (16 x 64 columns) b (64 columns x 32 d)
      const int c3 = r - nk1;
#pragma unroll
      for (int cc = 0; cc < NC3; cc++) {
        if (cc != c3) continue;  // register arrays need constant indices
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
          uint32_t af[4];
          ldsm_x4<false>(af, sdz + (wr * 16 + lane % 16) * C::LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
          for (int np = 0; np < 2; np++) {
            uint32_t bq[4];
            ldsm_x4<true>(bq, sb + (kk * 16 + (lj % 2) * 8 + lr) * C::LD + wc * 32 + np * 16 + (lj / 2) * 8);
            const uint32_t b0[2] = {bq[0], bq[1]}, b1[2] = {bq[2], bq[3]};
            mma_bf16(acc[cc][2 * np], af, b0);
            mma_bf16(acc[cc][2 * np + 1], af, b1);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  if constexpr (!BWD) {
    // merge the four threads of a quad, then the two column warps of a row group
    auto merge = [](float& m, float& l, float m2, float l2) {
      const float mn = fmaxf(m, m2);
      if (mn == -INFINITY) return;
      l = l * clip_exp(m - mn) + l2 * clip_exp(m2 - mn);
      m = mn;
    };
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
      const float ma2 = __shfl_xor_sync(0xffffffffu, m_a, o), la2 = __shfl_xor_sync(0xffffffffu, l_a, o);
      const float mb2 = __shfl_xor_sync(0xffffffffu, m_b, o), lb2 = __shfl_xor_sync(0xffffffffu, l_b, o);
      merge(m_a, l_a, ma2, la2);
      merge(m_b, l_b, mb2, lb2);
    }
    __syncthreads();
    if (wc == 1 && t == 0) {
      sred[wr * 16 + g] = m_a, sred[64 + wr * 16 + g] = l_a;
      sred[wr * 16 + g + 8] = m_b, sred[64 + wr * 16 + g + 8] = l_b;
    }
    __syncthreads();
    if (wc == 0 && t == 0) {
      merge(m_a, l_a, sred[wr * 16 + g], sred[64 + wr * 16 + g]);
      merge(m_b, l_b, sred[wr * 16 + g + 8], sred[64 + wr * 16 + g + 8]);
      if (ra < p.n) p.lse_out[ra] = l_a > 0.f ? m_a + logf(l_a) : -INFINITY;
      if (rb < p.n) p.lse_out[rb] = l_b > 0.f ? m_b + logf(l_b) : -INFINITY;
    }
  } else {
#pragma unroll
    for (int cc = 0; cc < NC3; cc++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int d = dc0 + cc * 64 + wc * 32 + j * 8 + 2 * t;
        if (d >= p.D) continue;
        if (ra < p.n) {
          st_elem(p.da, p.da_bf, ra * p.ldda + d, acc[cc][j][0] * et);
          st_elem(p.da, p.da_bf, ra * p.ldda + d + 1, acc[cc][j][1] * et);
        }
        if (rb < p.n) {
          st_elem(p.da, p.da_bf, rb * p.ldda + d, acc[cc][j][2] * et);
          st_elem(p.da, p.da_bf, rb * p.ldda + d + 1, acc[cc][j][3] * et);
        }
      }
    if (p.ds_part && blockIdx.y == 0) {
      ds = clip_warp_sum(ds);
      __syncthreads();
      if (lane == 0) sred[warp] = ds;
      __syncthreads();
      if (threadIdx.x == 0) {
        float tot = 0.f;
        for (int w = 0; w < 8; w++) tot += sred[w];
        p.ds_part[blockIdx.x] = tot;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Small kernels shared by both versions.

// loss = w_lse * sum_i (lse1_i + lse2_i) - w_diag * sum_i exp(t) a_i . b_{i+off} over i < n, one
// block (lse2 may be null). Deterministic: a fixed order of partial sums.
__global__ void __launch_bounds__(1024) clip_loss_reduce_kernel(ClipParams p, const float* lse1, const float* lse2,
                                                                float w_lse, float w_diag, float* loss) {
  __shared__ float red[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float et = expf(*p.log_scale);
  float acc = 0.f;
  for (int i = warp; i < p.n; i += 32) {
    float dot = 0.f;
    for (int d = lane; d < p.D; d += 32)
      dot += ld_elem(p.a, p.a_bf, i * p.lda + d) * ld_elem(p.b, p.b_bf, (i + p.offset) * p.ldb + d);
    dot = clip_warp_sum(dot);
    if (lane == 0) acc += w_lse * (lse1[i] + (lse2 ? lse2[i] : 0.f)) - w_diag * (et * dot);
  }
  if (lane == 0) red[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float tot = 0.f;
    for (int w = 0; w < 32; w++) tot += red[w];
    *loss = tot;
  }
}

// out[0] = sum of n partials, one block.
__global__ void __launch_bounds__(1024) clip_sum_kernel(const float* part, int n, float* out) {
  __shared__ float red[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < n; i += 1024) acc += part[i];
  acc = clip_warp_sum(acc);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float tot = 0.f;
    for (int w = 0; w < 32; w++) tot += red[w];
    *out = tot;
  }
}

// f32 [n, D] (row stride ld) -> contiguous bf16 [n, D], for the tensor-core path.
__global__ void clip_to_bf16_kernel(const float* src, int64_t ld, int64_t n, int D, __nv_bfloat16* dst) {
  const int64_t total = n * D;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = __float2bfloat16_rn(src[(e / D) * ld + e % D]);
}

// ------------------------------------------------------------------------------------------------
// Host side. The parameter plans below are shared with the emulator test (native/cuda/dev), so it
// runs the passes exactly as the ops set them up.

// The same logits seen from the columns: operands, statistics and weights trade places and column
// j's label is row j - offset.
inline ClipParams clip_swapped(ClipParams q) {
  std::swap(q.a, q.b);
  std::swap(q.lda, q.ldb);
  std::swap(q.a_bf, q.b_bf);
  std::swap(q.n, q.m);
  std::swap(q.lse_r, q.lse_c);
  std::swap(q.c_row, q.c_col);
  q.offset = -q.offset;
  return q;
}

// clip_ce's backward (one direction, `weight` per row, row i labelled i + offset) as two row passes:
// rows -> the gradient of a (set .da) and the partials of ds (set .ds_part); cols -> the gradient
// of b, the swapped problem, whose only statistics are the rows' (c_col = weight on lse).
struct ClipCeBwdPlan {
  ClipParams rows, cols;
};
inline ClipCeBwdPlan clip_ce_bwd_plan(const ClipParams& p, const float* lse, float weight, int offset) {
  ClipCeBwdPlan plan;
  plan.rows = p;
  plan.rows.lse_r = lse, plan.rows.lse_c = nullptr;
  plan.rows.c_row = weight, plan.rows.c_col = 0.f;
  plan.rows.offset = offset;
  plan.rows.ds_part = nullptr;
  plan.cols = clip_swapped(plan.rows);
  return plan;
}

#if !defined(TSCLIP_EMU)
// v2 takes bf16 operands with 16-byte rows.
inline bool clip_mma_eligible(const ClipParams& p) {
  auto al = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return p.a_bf && p.b_bf && al(p.a) && al(p.b) && p.lda % 8 == 0 && p.ldb % 8 == 0 && p.D % 8 == 0 && p.D > 0 &&
         p.n > 0 && p.m > 0;
}
inline int clip_dc(int D) { return D <= 128 ? 128 : D <= 256 ? 256 : 512; }
// Row blocks of v2 (= ds_part entries of its backward).
inline int clip_row_blocks(int n) { return (n + ClipCfg::BR - 1) / ClipCfg::BR; }

template <int DC, bool BWD>
inline cudaError_t clip_launch_mma_t(const ClipParams& p, cudaStream_t s) {
  static const cudaError_t e =  // once per kernel: the attribute stays set
      cudaFuncSetAttribute(clip_mma_kernel<DC, BWD>, cudaFuncAttributeMaxDynamicSharedMemorySize, ClipCfg::SMEM);
  if (e != cudaSuccess) return e;
  dim3 grid(unsigned(clip_row_blocks(p.n)), BWD ? unsigned((p.D + DC - 1) / DC) : 1u);
  clip_mma_kernel<DC, BWD><<<grid, ClipCfg::THREADS, ClipCfg::SMEM, s>>>(p);
  return cudaGetLastError();
}

// Row pass. Forward: p.lse_out. Backward: p.da and (if set) p.ds_part, which needs
// clip_row_blocks(n) floats for v2 or n floats for v1.
inline cudaError_t clip_row_pass(const ClipParams& p, cudaStream_t s, bool mma, bool backward) {
  if (p.n == 0) return cudaSuccess;
  if (mma) {
    const int dc = clip_dc(p.D);
    if (!backward) return clip_launch_mma_t<128, false>(p, s);
    if (dc == 128) return clip_launch_mma_t<128, true>(p, s);
    if (dc == 256) return clip_launch_mma_t<256, true>(p, s);
    return clip_launch_mma_t<512, true>(p, s);
  }
  const unsigned grid = unsigned((p.n + 3) / 4);
  const int dpl = p.D <= 128 ? 4 : p.D <= 512 ? 16 : p.D <= 1024 ? 32 : 64;
  if (!backward) {
    if (dpl == 4) clip_rowlse_simple_kernel<4><<<grid, 128, 0, s>>>(p);
    else if (dpl == 16) clip_rowlse_simple_kernel<16><<<grid, 128, 0, s>>>(p);
    else if (dpl == 32) clip_rowlse_simple_kernel<32><<<grid, 128, 0, s>>>(p);
    else clip_rowlse_simple_kernel<64><<<grid, 128, 0, s>>>(p);
  } else {
    if (dpl == 4) clip_bwd_simple_kernel<4><<<grid, 128, 0, s>>>(p);
    else if (dpl == 16) clip_bwd_simple_kernel<16><<<grid, 128, 0, s>>>(p);
    else if (dpl == 32) clip_bwd_simple_kernel<32><<<grid, 128, 0, s>>>(p);
    else clip_bwd_simple_kernel<64><<<grid, 128, 0, s>>>(p);
  }
  return cudaGetLastError();
}
#endif  // !TSCLIP_EMU

}  // namespace tsclip::tc
