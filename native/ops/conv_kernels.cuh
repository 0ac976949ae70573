// 2-D convolution kernels (NCHW, square stride and padding, no dilation or groups) as implicit GEMMs,
// on raw pointers. Used by the conv ops (conv.cu), the kernel lab (native/cuda/dev/conv.cu) and the
// emulator test (native/cuda/dev/emu_test.cpp).
//
// Each direction is a GEMM whose operands are gathered from the tensors while loading (im2col on
// the fly, zero outside the image), so no unfolded copy is ever stored:
//   forward     m = (n, ho, wo)   n = o             k = (c, ky, kx)
//               A = x[n, c, ho*s-p+ky, wo*s-p+kx]   B = w[o, c, ky, kx]   C -> y (+ bias[o])
//   bwd data    m = (n, h, w)     n = c             k = (o, ky, kx)
//               A = dy[n, o, (h+p-ky)/s, (w+p-kx)/s] (zero unless divisible and inside)
//               B = w[o, c, ky, kx]                                        C -> dx
//   bwd weight  m = o             n = (c, ky, kx)   k = (n, ho, wo)
//               A = dy[n, o, ho, wo]                B = x[n, c, ho*s-p+ky, wo*s-p+kx]   C -> dw +=
//
// Versions (the lab keeps the numbers):
//   v1 simple: fp32 FMA, 64x64 tiles through shared memory, 4x4 outputs per thread, any dtype mix;
//              exact float32, the fallback. Its GEMM is laid out transposed (rows = o or c), as
//              it always was; the weight gradient splits K over grid z into partial tiles summed
//              in a fixed order (no atomics).
//   v2 mma:    tensor cores, mma.sync m16n8k16 bf16 (or m16n8k8 tf32 for f32 operands: 3xTF32 for
//              float32 accuracy, or plain tf32 when allowed), fp32 accumulation. 128x128 or
//              128x64 / 64x128 block tiles of 64x32 warp tiles. Operands are gathered into registers
//              one stage ahead (converted to the mma type there), stored into a double-buffered
//              shared tile after the current stage's mma, then read with ldmatrix. Each tile is
//              stored along the dimension its gather walks in memory, so that both the global
//              loads and the shared stores of a warp are contiguous. The K position of a thread's
//              loads is carried from stage to stage (no divisions in the main loop). The weight
//              gradient splits K like v1 when the tiles alone cannot fill the device.
//
// Build flavours: the v1 kernels compile under both CPU emulators (TSCLIP_CPU_EMU, from
// common.cuh, and TSCLIP_EMU, from tc.cuh) and nvcc; v2 needs tc.cuh, so not TSCLIP_CPU_EMU.
#pragma once

#if defined(TSCLIP_CPU_EMU)
#include "../cuda/common.cuh"
#else
#include "tc.cuh"
#endif

#include <cstdint>

namespace tsclip::convk {

struct ConvShape {
  int N, C, H, W, O, kh, kw, Ho, Wo, stride, pad;
};

__device__ __forceinline__ float conv_ld(const void* p, bool bf, int64_t i) {
  return bf ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void conv_st(void* p, bool bf, int64_t i, float v) {
  if (bf) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}
__device__ __forceinline__ int conv_imin(int a, int b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------
// v1: the tiled fp32 kernel. P provides float a(m, k), float b(k, n), void store(m, n, v, split).
constexpr int kSimpleBM = 64, kSimpleBN = 64, kSimpleBK = 16, kSimpleThreads = 256;

template <class P>
__global__ void __launch_bounds__(kSimpleThreads) conv_simple_kernel(P p, int M, int N, int K, int k_per_split) {
  __shared__ float As[kSimpleBK][kSimpleBM + 4];
  __shared__ float Bs[kSimpleBK][kSimpleBN + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.y * kSimpleBM, n0 = blockIdx.x * kSimpleBN;
  const int kb = blockIdx.z * k_per_split;
  const int ke = conv_imin(K, kb + k_per_split);
  float acc[4][4] = {};
  for (int k0 = kb; k0 < ke; k0 += kSimpleBK) {
#pragma unroll
    for (int i = 0; i < (kSimpleBM * kSimpleBK) / kSimpleThreads; i++) {
      int e = tid + i * kSimpleThreads, mm = e / kSimpleBK, kk = e % kSimpleBK;
      int gm = m0 + mm, gk = k0 + kk;
      As[kk][mm] = (gm < M && gk < ke) ? p.a(gm, gk) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < (kSimpleBN * kSimpleBK) / kSimpleThreads; i++) {
      int e = tid + i * kSimpleThreads, kk = e / kSimpleBN, nn = e % kSimpleBN;
      int gk = k0 + kk, gn = n0 + nn;
      Bs[kk][nn] = (gn < N && gk < ke) ? p.b(gk, gn) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimpleBK; kk++) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) p.store(m, n, acc[i][j], int(blockIdx.z));
    }
}

// x[n, c, h, w] with zero padding outside the image.
__device__ __forceinline__ float conv_x_at(const void* x, bool xb, const ConvShape& s, int n, int c, int h, int w) {
  if (h < 0 || h >= s.H || w < 0 || w >= s.W) return 0.f;
  return conv_ld(x, xb, ((int64_t(n) * s.C + c) * s.H + h) * s.W + w);
}

// C[o, (n,ho,wo)] = sum over k=(c,ky,kx) of w[o, k] * x[n, c, ho*s-p+ky, wo*s-p+kx] (+ bias[o])
struct ConvFwd {
  const void* x; const void* w; const void* bias; void* y;
  bool xb, wb, biasb, yb;
  ConvShape s;
  __device__ float a(int m, int k) const { return conv_ld(w, wb, int64_t(m) * (s.C * s.kh * s.kw) + k); }
  __device__ float b(int k, int col) const {
    int khw = s.kh * s.kw, c = k / khw, r = k - c * khw, ky = r / s.kw, kx = r - ky * s.kw;
    int hw = s.Ho * s.Wo, n = col / hw, q = col - n * hw, ho = q / s.Wo, wo = q - ho * s.Wo;
    return conv_x_at(x, xb, s, n, c, ho * s.stride - s.pad + ky, wo * s.stride - s.pad + kx);
  }
  __device__ void store(int m, int col, float v, int) const {
    int hw = s.Ho * s.Wo, n = col / hw, q = col - n * hw;
    if (bias) v += conv_ld(bias, biasb, m);
    conv_st(y, yb, (int64_t(n) * s.O + m) * hw + q, v);
  }
};

// C[c, (n,h,w)] = sum over k=(o,ky,kx) of w[o, c, ky, kx] * dy[n, o, (h+p-ky)/s, (w+p-kx)/s]
struct ConvBwdData {
  const void* dy; const void* w; void* dx;
  bool dyb, wb, dxb;
  ConvShape s;
  __device__ float a(int m, int k) const {
    int khw = s.kh * s.kw, o = k / khw, r = k - o * khw;
    return conv_ld(w, wb, (int64_t(o) * s.C + m) * khw + r);
  }
  __device__ float b(int k, int col) const {
    int khw = s.kh * s.kw, o = k / khw, r = k - o * khw, ky = r / s.kw, kx = r - ky * s.kw;
    int hw = s.H * s.W, n = col / hw, q = col - n * hw, h = q / s.W, w = q - h * s.W;
    int th = h + s.pad - ky, tw = w + s.pad - kx;
    if (th < 0 || tw < 0 || th % s.stride || tw % s.stride) return 0.f;
    int ho = th / s.stride, wo = tw / s.stride;
    if (ho >= s.Ho || wo >= s.Wo) return 0.f;
    return conv_ld(dy, dyb, ((int64_t(n) * s.O + o) * s.Ho + ho) * s.Wo + wo);
  }
  __device__ void store(int m, int col, float v, int) const {
    int hw = s.H * s.W, n = col / hw, q = col - n * hw;
    conv_st(dx, dxb, (int64_t(n) * s.C + m) * hw + q, v);
  }
};

// part[split, o, (c,ky,kx)] = sum over this split's k=(n,ho,wo) of dy[n, o, ho, wo] * x[...]
struct ConvBwdWeight {
  const void* dy; const void* x; float* part;
  bool dyb, xb;
  ConvShape s;
  __device__ float a(int m, int k) const {
    int hw = s.Ho * s.Wo, n = k / hw, q = k - n * hw;
    return conv_ld(dy, dyb, (int64_t(n) * s.O + m) * hw + q);
  }
  __device__ float b(int k, int col) const {
    int hw = s.Ho * s.Wo, n = k / hw, q = k - n * hw, ho = q / s.Wo, wo = q - ho * s.Wo;
    int khw = s.kh * s.kw, c = col / khw, r = col - c * khw, ky = r / s.kw, kx = r - ky * s.kw;
    return conv_x_at(x, xb, s, n, c, ho * s.stride - s.pad + ky, wo * s.stride - s.pad + kx);
  }
  __device__ void store(int m, int col, float v, int split) const {
    int cols = s.C * s.kh * s.kw;
    part[(int64_t(split) * s.O + m) * cols + col] = v;
  }
};

// dw[i] += sum over splits of part[split, i], in split order (deterministic). 1-D grid-stride.
__global__ void conv_sum_splits_kernel(const float* part, int64_t n, int splits, void* dw, bool dwb) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < splits; k++) s += part[int64_t(k) * n + i];
    conv_st(dw, dwb, i, conv_ld(dw, dwb, i) + s);
  }
}

// v1 weight gradient: K split so that about four blocks per SM run, each with at least 8 slices.
// Returns the splits; *k_per_split is a multiple of the slice depth.
inline int conv_simple_splits(int64_t M, int64_t N, int64_t K, int sm_count, int64_t* k_per_split) {
  const int64_t tiles = ((M + kSimpleBM - 1) / kSimpleBM) * ((N + kSimpleBN - 1) / kSimpleBN);
  const int64_t target = int64_t(sm_count) * 4;
  int64_t splits = (target + tiles - 1) / tiles, most = (K + 8 * kSimpleBK - 1) / (8 * kSimpleBK);
  if (splits > most) splits = most;
  if (splits > 65535) splits = 65535;
  if (splits < 1) splits = 1;
  int64_t kps = (K + splits - 1) / splits;
  kps = (kps + kSimpleBK - 1) / kSimpleBK * kSimpleBK;
  if (kps < 1) kps = 1;
  *k_per_split = kps;
  return int((K + kps - 1) / kps);
}

#if !defined(TSCLIP_CPU_EMU)
// ---------------------------------------------------------------------------------------------
// v2: tensor cores.

enum ConvDir : int { kConvFwd = 0, kConvBwdData = 1, kConvBwdWeight = 2 };

struct ConvTcParams {
  ConvShape s{};
  int dir = kConvFwd;
  const void* a = nullptr;     // forward: x; bwd data: dy; bwd weight: dy
  const void* b = nullptr;     // forward: w; bwd data: w;  bwd weight: x
  const void* bias = nullptr;  // forward only: [O] or null
  void* out = nullptr;         // forward: y; bwd data: dx; bwd weight: dw (accumulated onto)
  float* part = nullptr;       // bwd weight with splits > 1: [splits, O, C*kh*kw] partial sums
  bool a_bf16 = false, b_bf16 = false, bias_bf16 = false, out_bf16 = false;
  bool bf16_mma = false;   // operands rounded to bf16 (m16n8k16), else f32 through tf32 (m16n8k8)
  bool tf32_fast = false;  // f32: one tf32 product instead of the float32-accurate three
  int M = 0, Ng = 0, K = 0;  // the GEMM: C[M, Ng] = A[M, K] B[K, Ng]
  int k_per_split = 0;       // K range of one grid-z slice (a multiple of the stage depth)
};

// Fills the GEMM sizes of p.dir from p.s.
inline void conv_tc_sizes(ConvTcParams& p) {
  const ConvShape& s = p.s;
  const int khw = s.kh * s.kw;
  if (p.dir == kConvFwd) p.M = s.N * s.Ho * s.Wo, p.Ng = s.O, p.K = s.C * khw;
  else if (p.dir == kConvBwdData) p.M = s.N * s.H * s.W, p.Ng = s.C, p.K = s.O * khw;
  else p.M = s.O, p.Ng = s.C * khw, p.K = s.N * s.Ho * s.Wo;
  p.k_per_split = p.K;
}

// A column of the weight gradient's B operand: x offset c*H*W + ky*W + kx and the tap (one
// 16-byte shared load).
struct __align__(16) ConvCol {
  int off, ky, kx, unused;
};

constexpr int conv_mma_kt(int esz) { return esz == 2 ? 32 : 16; }  // k per stage: 64-byte rows
constexpr int conv_cmax(int a, int b) { return a > b ? a : b; }
// Elements of one operand tile of R rows: stored K-major [R][KT + 16 bytes] or R-major [KT][R + 8].
constexpr int conv_tile_elems(int esz, int R) {
  return conv_cmax(R * (conv_mma_kt(esz) + 16 / esz), conv_mma_kt(esz) * (R + 8));
}
constexpr int conv_tiles_bytes(int esz, int bm, int bn) {
  return 2 * (conv_tile_elems(esz, bm) + conv_tile_elems(esz, bn)) * esz;
}
constexpr int conv_smem_bytes(int esz, int bm, int bn) {
  return conv_tiles_bytes(esz, bm, bn) + bn * int(sizeof(ConvCol));
}

template <class T, int BM_, int BN_>
struct ConvCfg {
  static constexpr int BM = BM_, BN = BN_, ESZ = int(sizeof(T));
  static constexpr int WARPS_N = BN / 32, THREADS = (BM / 64) * WARPS_N * 32;
  static constexpr int KT = conv_mma_kt(ESZ);
  static constexpr int LDK = KT + 16 / ESZ;         // K-major tile row pitch (16-byte pad)
  static constexpr int LDA = BM + 8, LDB = BN + 8;  // M- / N-major tile row pitch
  static constexpr int A_ELEMS = conv_tile_elems(ESZ, BM), B_ELEMS = conv_tile_elems(ESZ, BN);
  static constexpr int STAGE = A_ELEMS + B_ELEMS;
  static constexpr int TILES_BYTES = conv_tiles_bytes(ESZ, BM, BN);
  static constexpr int SMEM = conv_smem_bytes(ESZ, BM, BN);
  static_assert(BM % 64 == 0 && BN % 32 == 0, "warp tiles are 64 x 32");
};

// A position k = (outer, ky, kx) in a mixed radix (., kh, kw), with the linear offset
// outer*so + ky*sy + kx*sx; moved by one or by a fixed step without dividing.
struct ConvRadix {
  int kh, kw, so, sy, sx;
};
struct ConvCursor {
  int outer, ky, kx, off;
  __device__ __forceinline__ void set(int k, const ConvRadix& r) {
    const int khw = r.kh * r.kw;
    outer = k / khw;
    const int t = k - outer * khw;
    ky = t / r.kw;
    kx = t - ky * r.kw;
    off = outer * r.so + ky * r.sy + kx * r.sx;
  }
  __device__ __forceinline__ void next(const ConvRadix& r) {
    kx++;
    off += r.sx;
    if (kx == r.kw) {
      kx = 0;
      off += r.sy - r.kw * r.sx;
      if (++ky == r.kh) {
        ky = 0;
        off += r.so - r.kh * r.sy;
      }
    }
  }
  // d: the step itself decomposed (d.ky < kh, d.kx < kw), so one carry per digit suffices.
  __device__ __forceinline__ void add(const ConvCursor& d, const ConvRadix& r) {
    kx += d.kx;
    ky += d.ky;
    outer += d.outer;
    if (kx >= r.kw) kx -= r.kw, ky++;
    if (ky >= r.kh) ky -= r.kh, outer++;
    off = outer * r.so + ky * r.sy + kx * r.sx;
  }
};

// Far outside any image: a row past M gets this as its top-left corner, so every tap is invalid.
constexpr int kConvFar = -(1 << 30);

template <class T>
__device__ __forceinline__ T conv_to(float v);
template <>
__device__ __forceinline__ float conv_to<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 conv_to<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Thread layouts of the gathers (THREADS threads, one stage of KT):
//   along rows ("row run"): an R-row tile stored [KT][R + 8]; thread t takes row t % R and a run of
//     L = KT / G consecutive k (G = THREADS / R groups); a warp covers 32 consecutive rows.
//   along k ("k run"): an R-row tile stored [R][KT + pad]; thread t takes k = t % KT and rows
//     t / KT + i * S (S = THREADS / KT); a warp covers 32 / KT rows of consecutive k.
template <class Cfg, int R>
struct RowRun {
  static constexpr int G = Cfg::THREADS / R, L = Cfg::KT / G;
  static_assert(Cfg::THREADS % R == 0 && Cfg::KT % G == 0, "row-run layout");
  template <class T>
  __device__ __forceinline__ static void store(T* dst, const float (&v)[L], int tid) {
    const int r = tid % R, k0 = (tid / R) * L;
#pragma unroll
    for (int j = 0; j < L; j++) dst[(k0 + j) * (R + 8) + r] = conv_to<T>(v[j]);
  }
};
template <class Cfg, int R>
struct KRun {
  static constexpr int S = Cfg::THREADS / Cfg::KT, NR = R / S;
  static_assert(Cfg::THREADS % Cfg::KT == 0 && R % S == 0, "k-run layout");
  template <class T>
  __device__ __forceinline__ static void store(T* dst, const float (&v)[NR], int tid) {
    const int kk = tid % Cfg::KT, r0 = tid / Cfg::KT;
#pragma unroll
    for (int i = 0; i < NR; i++) dst[(r0 + i * S) * Cfg::LDK + kk] = conv_to<T>(v[i]);
  }
};

// The decomposition of a step of KT in radix r.
__device__ __forceinline__ ConvCursor conv_step(const ConvRadix& r, int step) {
  ConvCursor d;
  d.set(step, r);
  return d;
}

// Forward: A = x gathered along output pixels (row run), B = w rows along k (k run).
template <class Cfg>
struct ConvFwdLoader {
  using RA = RowRun<Cfg, Cfg::BM>;
  using RB = KRun<Cfg, Cfg::BN>;
  static constexpr int NA = RA::L, NB = RB::NR;
  ConvRadix rk;
  ConvCursor ck, step;  // k of this thread's run at the current stage (warp-uniform)
  int x_base, h0, w0;   // this thread's output pixel: x offset of its window's corner, and the corner
  __device__ __forceinline__ void init(const ConvTcParams& p, int m0, int, int kb, int tid, ConvCol*) {
    const ConvShape& s = p.s;
    const int m = m0 + tid % Cfg::BM;
    if (m < p.M) {
      const int hw = s.Ho * s.Wo, n = m / hw, q = m - n * hw, ho = q / s.Wo, wo = q - ho * s.Wo;
      h0 = ho * s.stride - s.pad;
      w0 = wo * s.stride - s.pad;
      x_base = n * s.C * s.H * s.W + h0 * s.W + w0;
    } else {
      h0 = kConvFar, w0 = 0, x_base = 0;
    }
    rk = ConvRadix{s.kh, s.kw, s.H * s.W, s.W, 1};
    ck.set(kb + (tid / Cfg::BM) * RA::L, rk);
    step = conv_step(rk, Cfg::KT);
  }
  __device__ __forceinline__ void load(const ConvTcParams& p, int k0, int ke, int m0, int n0, int tid, float (&ra)[NA],
                                       float (&rb)[NB]) const {
    (void)m0;
    const ConvShape& s = p.s;
    ConvCursor c = ck;
    int k = k0 + (tid / Cfg::BM) * RA::L;
#pragma unroll
    for (int j = 0; j < NA; j++) {
      const bool ok = k < ke && unsigned(h0 + c.ky) < unsigned(s.H) && unsigned(w0 + c.kx) < unsigned(s.W);
      ra[j] = ok ? tc::ld_elem(p.a, p.a_bf16, x_base + c.off) : 0.f;
      k++;
      c.next(rk);
    }
    const int kb = k0 + tid % Cfg::KT, r0 = tid / Cfg::KT;
#pragma unroll
    for (int i = 0; i < NB; i++) {
      const int n = n0 + r0 + i * RB::S;
      rb[i] = kb < ke && n < p.Ng ? tc::ld_elem(p.b, p.b_bf16, int64_t(n) * p.K + kb) : 0.f;
    }
  }
  __device__ __forceinline__ void next_stage() { ck.add(step, rk); }
};

// Backward data: A = dy gathered along input pixels (row run); B = w, along k (k run, kh*kw > 1:
// runs of kh*kw contiguous taps) or along c (row run; 1x1: w is [O, C], contiguous in c).
template <class Cfg, bool BKM>
struct ConvBwdDataLoader {
  using RA = RowRun<Cfg, Cfg::BM>;
  static constexpr int NA = RA::L;
  static constexpr int NB = BKM ? KRun<Cfg, Cfg::BN>::NR : RowRun<Cfg, Cfg::BN>::L;
  ConvRadix rk, rw;     // k = (o, ky, kx) for dy (offset o*Ho*Wo) and for w (offset o*C*kh*kw + ky*kw + kx)
  ConvCursor ck, stepk;  // A's run (warp-uniform)
  ConvCursor cw, stepw;  // B's k: per lane (k run) or the run start (row run)
  int dy_base, hp, wp;   // this thread's input pixel, shifted by the padding
  __device__ __forceinline__ void init(const ConvTcParams& p, int m0, int, int kb, int tid, ConvCol*) {
    const ConvShape& s = p.s;
    const int m = m0 + tid % Cfg::BM;
    if (m < p.M) {
      const int hw = s.H * s.W, n = m / hw, q = m - n * hw, h = q / s.W, w = q - h * s.W;
      hp = h + s.pad;
      wp = w + s.pad;
      dy_base = n * s.O * s.Ho * s.Wo;
    } else {
      hp = kConvFar, wp = 0, dy_base = 0;
    }
    rk = ConvRadix{s.kh, s.kw, s.Ho * s.Wo, 0, 0};
    ck.set(kb + (tid / Cfg::BM) * RA::L, rk);
    stepk = conv_step(rk, Cfg::KT);
    rw = ConvRadix{s.kh, s.kw, s.C * s.kh * s.kw, s.kw, 1};
    if constexpr (BKM) cw.set(kb + tid % Cfg::KT, rw);
    else cw.set(kb + (tid / Cfg::BN) * RowRun<Cfg, Cfg::BN>::L, rw);
    stepw = conv_step(rw, Cfg::KT);
  }
  __device__ __forceinline__ void load(const ConvTcParams& p, int k0, int ke, int, int n0, int tid, float (&ra)[NA],
                                       float (&rb)[NB]) const {
    const ConvShape& s = p.s;
    ConvCursor c = ck;
    int k = k0 + (tid / Cfg::BM) * RA::L;
    if (s.stride == 1) {
#pragma unroll
      for (int j = 0; j < NA; j++) {
        const int th = hp - c.ky, tw = wp - c.kx;
        const bool ok = k < ke && unsigned(th) < unsigned(s.Ho) && unsigned(tw) < unsigned(s.Wo);
        ra[j] = ok ? tc::ld_elem(p.a, p.a_bf16, dy_base + c.off + th * s.Wo + tw) : 0.f;
        k++;
        c.next(rk);
      }
    } else {
      // only taps with h + p - ky divisible by the stride reach an output (a stride-phase split
      // would skip the zeros instead of multiplying them)
#pragma unroll
      for (int j = 0; j < NA; j++) {
        int th = hp - c.ky, tw = wp - c.kx;
        bool ok = k < ke && th >= 0 && tw >= 0 && th % s.stride == 0 && tw % s.stride == 0;
        th /= s.stride;
        tw /= s.stride;
        ok = ok && th < s.Ho && tw < s.Wo;
        ra[j] = ok ? tc::ld_elem(p.a, p.a_bf16, dy_base + c.off + th * s.Wo + tw) : 0.f;
        k++;
        c.next(rk);
      }
    }
    const int khw = s.kh * s.kw;
    if constexpr (BKM) {
      const int kk = k0 + tid % Cfg::KT, r0 = tid / Cfg::KT;
#pragma unroll
      for (int i = 0; i < NB; i++) {
        const int cc = n0 + r0 + i * KRun<Cfg, Cfg::BN>::S;
        rb[i] = kk < ke && cc < p.Ng ? tc::ld_elem(p.b, p.b_bf16, cw.off + cc * khw) : 0.f;
      }
    } else {
      const int cc = n0 + tid % Cfg::BN;
      ConvCursor d = cw;
      int kk = k0 + (tid / Cfg::BN) * RowRun<Cfg, Cfg::BN>::L;
#pragma unroll
      for (int j = 0; j < NB; j++) {
        rb[j] = kk < ke && cc < p.Ng ? tc::ld_elem(p.b, p.b_bf16, d.off + cc * khw) : 0.f;
        kk++;
        d.next(rw);
      }
    }
  }
  __device__ __forceinline__ void next_stage() {
    ck.add(stepk, rk);
    cw.add(stepw, rw);
  }
};

// Backward weight: k = (n, ho, wo) along both operands (k runs): A = dy rows o, B = x gathered for
// the columns (c, ky, kx) of a shared table. One cursor per lane gives both offsets.
template <class Cfg>
struct ConvBwdWeightLoader {
  using RA = KRun<Cfg, Cfg::BM>;
  using RB = KRun<Cfg, Cfg::BN>;
  static constexpr int NA = RA::NR, NB = RB::NR;
  ConvRadix rp;  // k = (n, ho, wo), offset n*C*H*W + ho*s*W + wo*s (x at the window corner + p*(W+1))
  ConvCursor cp, step;
  const ConvCol* cols;
  __device__ __forceinline__ void init(const ConvTcParams& p, int, int n0, int kb, int tid, ConvCol* table) {
    const ConvShape& s = p.s;
    const int khw = s.kh * s.kw;
    for (int j = tid; j < Cfg::BN; j += Cfg::THREADS) {
      const int col = n0 + j;
      ConvCol e{0, 1 << 30, 0, 0};  // past the last column: every row out of range
      if (col < p.Ng) {
        const int c = col / khw, r = col - c * khw;
        e.ky = r / s.kw;
        e.kx = r - e.ky * s.kw;
        e.off = c * s.H * s.W + e.ky * s.W + e.kx;
      }
      table[j] = e;
    }
    cols = table;
    rp = ConvRadix{s.Ho, s.Wo, s.C * s.H * s.W, s.stride * s.W, s.stride};
    cp.set(kb + tid % Cfg::KT, rp);
    step = conv_step(rp, Cfg::KT);
  }
  __device__ __forceinline__ void load(const ConvTcParams& p, int k0, int ke, int m0, int, int tid, float (&ra)[NA],
                                       float (&rb)[NB]) const {
    const ConvShape& s = p.s;
    const int k = k0 + tid % Cfg::KT, r0 = tid / Cfg::KT;
    const bool kok = k < ke;
    const int hw = s.Ho * s.Wo;
    const int dy_off = cp.outer * s.O * hw + cp.ky * s.Wo + cp.kx;
#pragma unroll
    for (int i = 0; i < NA; i++) {
      const int o = m0 + r0 + i * RA::S;
      ra[i] = kok && o < p.M ? tc::ld_elem(p.a, p.a_bf16, dy_off + o * hw) : 0.f;
    }
    const int h0 = cp.ky * s.stride - s.pad, w0 = cp.kx * s.stride - s.pad;
    const int x_off = cp.off - s.pad * s.W - s.pad;
#pragma unroll
    for (int i = 0; i < NB; i++) {
      const ConvCol e = cols[r0 + i * RB::S];
      const bool ok = kok && unsigned(h0 + e.ky) < unsigned(s.H) && unsigned(w0 + e.kx) < unsigned(s.W);
      rb[i] = ok ? tc::ld_elem(p.b, p.b_bf16, x_off + e.off) : 0.f;
    }
  }
  __device__ __forceinline__ void next_stage() { cp.add(step, rp); }
};

// One stage of mma over the block's tiles: the warp's 64 x 32 outputs (4 x 4 fragments).
// AK / BK: the A / B tile is K-major (else M- / N-major, read through ldmatrix.trans).
template <class T, class Cfg, bool AK, bool BK>
__device__ __forceinline__ void conv_mma_stage(const T* As, const T* Bs, float (&acc)[4][4][4], int wm, int wn,
                                               int lane, bool tf32_fast) {
  constexpr int KT = Cfg::KT, LDK = Cfg::LDK, LDA = Cfg::LDA, LDB = Cfg::LDB;
  if constexpr (sizeof(T) == 2) {
    (void)tf32_fast;
#pragma unroll
    for (int ks = 0; ks < KT / 16; ks++) {
      uint32_t af[4][4], bfr[4][2];
      const int j = lane / 8, r = lane % 8;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int rb = wm * 64 + i * 16;
        if constexpr (AK) tc::ldsm_x4<false>(af[i], As + (rb + lane % 16) * LDK + ks * 16 + (lane / 16) * 8);
        else tc::ldsm_x4<true>(af[i], As + (ks * 16 + (j / 2) * 8 + r) * LDA + rb + (j % 2) * 8);
      }
#pragma unroll
      for (int pr = 0; pr < 2; pr++) {
        const int cb = wn * 32 + pr * 16;
        uint32_t q[4];
        if constexpr (BK) tc::ldsm_x4<false>(q, Bs + (cb + (j / 2) * 8 + r) * LDK + ks * 16 + (j % 2) * 8);
        else tc::ldsm_x4<true>(q, Bs + (ks * 16 + (j % 2) * 8 + r) * LDB + cb + (j / 2) * 8);
        bfr[2 * pr][0] = q[0];
        bfr[2 * pr][1] = q[1];
        bfr[2 * pr + 1][0] = q[2];
        bfr[2 * pr + 1][1] = q[3];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int jj = 0; jj < 4; jj++) tc::mma_bf16(acc[i][jj], af[i], bfr[jj]);
    }
  } else {
    // x = hi + lo, both tf32; hi*hi + hi*lo + lo*hi recovers float32 accuracy (as the gemm does)
    auto split = [](float x, uint32_t& hi, uint32_t& lo) {
      hi = tc::to_tf32(x);
      lo = tc::to_tf32(x - __uint_as_float(hi));
    };
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int ks = 0; ks < KT / 8; ks++) {
      uint32_t ah[4][4], al[4][4], bh[4][2], bl[4][2];
      const int k_lo = ks * 8 + t, k_hi = k_lo + 4;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int r_lo = wm * 64 + i * 16 + g, r_hi = r_lo + 8;
        auto at = [&](int rr, int k) { return AK ? As[rr * LDK + k] : As[k * LDA + rr]; };
        split(at(r_lo, k_lo), ah[i][0], al[i][0]);
        split(at(r_hi, k_lo), ah[i][1], al[i][1]);
        split(at(r_lo, k_hi), ah[i][2], al[i][2]);
        split(at(r_hi, k_hi), ah[i][3], al[i][3]);
      }
#pragma unroll
      for (int jj = 0; jj < 4; jj++) {
        const int n = wn * 32 + jj * 8 + g;
        auto bt = [&](int k) { return BK ? Bs[n * LDK + k] : Bs[k * LDB + n]; };
        split(bt(k_lo), bh[jj][0], bl[jj][0]);
        split(bt(k_hi), bh[jj][1], bl[jj][1]);
      }
      if (!tf32_fast) {
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int jj = 0; jj < 4; jj++) {
            tc::mma_tf32(acc[i][jj], al[i], bh[jj]);  // the correction terms first, then hi*hi
            tc::mma_tf32(acc[i][jj], ah[i], bl[jj]);
          }
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int jj = 0; jj < 4; jj++) tc::mma_tf32(acc[i][jj], ah[i], bh[jj]);
    }
  }
}

template <int DIR, class Cfg, bool BKM>
struct ConvLoaderOf;
template <class Cfg, bool BKM>
struct ConvLoaderOf<kConvFwd, Cfg, BKM> { using type = ConvFwdLoader<Cfg>; };
template <class Cfg, bool BKM>
struct ConvLoaderOf<kConvBwdData, Cfg, BKM> { using type = ConvBwdDataLoader<Cfg, BKM>; };
template <class Cfg, bool BKM>
struct ConvLoaderOf<kConvBwdWeight, Cfg, BKM> { using type = ConvBwdWeightLoader<Cfg>; };

// grid (M tiles, Ng tiles, K splits). BKM: bwd data's B tile is K-major (else C-major).
template <class T, int BM, int BN, int DIR, bool BKM>
__global__ void __launch_bounds__(ConvCfg<T, BM, BN>::THREADS) conv_mma_kernel(ConvTcParams p) {
  using Cfg = ConvCfg<T, BM, BN>;
  using Loader = typename ConvLoaderOf<DIR, Cfg, BKM>::type;
  constexpr bool AK = DIR == kConvBwdWeight;
  constexpr bool BK = DIR == kConvBwdData ? BKM : true;
  constexpr int KT = Cfg::KT;
  T* smem = reinterpret_cast<T*>(tc::dyn_smem());
  ConvCol* table = reinterpret_cast<ConvCol*>(tc::dyn_smem() + Cfg::TILES_BYTES);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int kb = blockIdx.z * p.k_per_split, ke = tc::imin(p.K, kb + p.k_per_split);
  const int nkt = ke > kb ? (ke - kb + KT - 1) / KT : 0;
  auto tile_a = [&](int buf) { return smem + buf * Cfg::STAGE; };
  auto tile_b = [&](int buf) { return smem + buf * Cfg::STAGE + Cfg::A_ELEMS; };
  auto store_stage = [&](int buf, const float(&ra)[Loader::NA], const float(&rb)[Loader::NB]) {
    if constexpr (AK) KRun<Cfg, BM>::store(tile_a(buf), ra, tid);
    else RowRun<Cfg, BM>::store(tile_a(buf), ra, tid);
    if constexpr (BK) KRun<Cfg, BN>::store(tile_b(buf), rb, tid);
    else RowRun<Cfg, BN>::store(tile_b(buf), rb, tid);
  };

  Loader ld;
  ld.init(p, m0, n0, kb, tid, table);
  if constexpr (DIR == kConvBwdWeight) __syncthreads();  // the column table

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int r = 0; r < 4; r++) acc[i][j][r] = 0.f;

  float ra[Loader::NA], rb[Loader::NB];
  if (nkt > 0) {
    ld.load(p, kb, ke, m0, n0, tid, ra, rb);
    store_stage(0, ra, rb);
  }
  __syncthreads();
  for (int kt = 0; kt < nkt; kt++) {
    const bool more = kt + 1 < nkt;
    if (more) {  // the next stage's loads are in flight during this stage's mma
      ld.next_stage();
      ld.load(p, kb + (kt + 1) * KT, ke, m0, n0, tid, ra, rb);
    }
    conv_mma_stage<T, Cfg, AK, BK>(tile_a(kt & 1), tile_b(kt & 1), acc, wm, wn, lane, p.tf32_fast);
    // the other buffer was last read in stage kt-1, which every thread finished before the barrier
    if (more) store_stage((kt + 1) & 1, ra, rb);
    __syncthreads();
  }

  // epilogue: accumulator (i, j, r) is row wm*64 + i*16 + g (+8 for r >= 2), col wn*32 + j*8 + 2t (+1)
  const ConvShape& s = p.s;
  const int g = lane / 4, t = lane % 4;
  if constexpr (DIR == kConvBwdWeight) {
    float* part = p.part ? p.part + int64_t(blockIdx.z) * p.M * p.Ng : nullptr;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm * 64 + i * 16 + g + 8 * h;
        if (m >= p.M) continue;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int col = n0 + wn * 32 + j * 8 + 2 * t + e;
            if (col >= p.Ng) continue;
            const int64_t idx = int64_t(m) * p.Ng + col;
            const float v = acc[i][j][2 * h + e];
            if (part) part[idx] = v;
            else tc::st_elem(p.out, p.out_bf16, idx, tc::ld_elem(p.out, p.out_bf16, idx) + v);
          }
      }
  } else {
    // C[m, col] -> out[img, col, pixel]: 8 lanes of a warp store 8 consecutive pixels of a plane
    const int hw = DIR == kConvFwd ? s.Ho * s.Wo : s.H * s.W;
    const int planes = DIR == kConvFwd ? s.O : s.C;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm * 64 + i * 16 + g + 8 * h;
        if (m >= p.M) continue;
        const int img = m / hw, q = m - img * hw;
        const int64_t base = int64_t(img) * planes * hw + q;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int col = n0 + wn * 32 + j * 8 + 2 * t + e;
            if (col >= p.Ng) continue;
            float v = acc[i][j][2 * h + e];
            if (DIR == kConvFwd && p.bias) v += tc::ld_elem(p.bias, p.bias_bf16, col);
            tc::st_elem(p.out, p.out_bf16, base + int64_t(col) * hw, v);
          }
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: the plan (tile shape, grid, K splits) and the kernel that runs it. No CUDA calls,
// so that the emulator test runs the same choice as the op.
using ConvKernel = void (*)(ConvTcParams);

struct ConvTcPlan {
  bool ok = false;  // false: the grid does not fit; use v1
  int bm = 0, bn = 0;
  bool b_kmajor = true;  // bwd data: B tile K-major (kh*kw > 1) or C-major (1x1)
  int threads = 0, smem = 0;
  unsigned gx = 0, gy = 0, gz = 1;
  int splits = 1, k_per_split = 0;
  int64_t part_elems = 0;  // floats of the partial sums (splits > 1), [splits, M, Ng]
};

// sm_count sizes the weight gradient's K split (about four blocks per SM, each split at least 16
// stages deep); want_splits > 0 imposes a split count (tests).
inline ConvTcPlan conv_tc_plan(const ConvTcParams& p, int sm_count, int want_splits = 0) {
  ConvTcPlan pl;
  const int esz = p.bf16_mma ? 2 : 4, kt = conv_mma_kt(esz);
  if (p.dir == kConvBwdWeight) pl.bm = p.M <= 64 ? 64 : 128, pl.bn = 128;
  else pl.bm = 128, pl.bn = p.Ng <= 64 ? 64 : 128;
  pl.b_kmajor = !(p.dir == kConvBwdData && p.s.kh * p.s.kw == 1);
  pl.threads = (pl.bm / 64) * (pl.bn / 32) * 32;
  pl.smem = conv_smem_bytes(esz, pl.bm, pl.bn);
  const int64_t gx = (int64_t(p.M) + pl.bm - 1) / pl.bm, gy = (int64_t(p.Ng) + pl.bn - 1) / pl.bn;
  if (p.M <= 0 || p.Ng <= 0 || gx > 0x7fffffff || gy > 65535) return pl;
  pl.gx = unsigned(gx), pl.gy = unsigned(gy);
  pl.k_per_split = p.K;
  if (p.dir == kConvBwdWeight && p.K > 0) {
    const int64_t stages = (int64_t(p.K) + kt - 1) / kt, tiles = gx * gy;
    int64_t splits = want_splits > 0 ? want_splits : (4 * int64_t(sm_count) + tiles - 1) / tiles;
    if (want_splits <= 0 && splits > stages / 16) splits = stages / 16;  // at least 16 stages each
    const int64_t max_part = int64_t(1) << 26;                           // 256 MB of partial sums
    if (splits * p.M * p.Ng > max_part) splits = max_part / (int64_t(p.M) * p.Ng);
    if (splits > stages) splits = stages;
    if (splits > 65535) splits = 65535;
    if (splits < 1) splits = 1;
    const int64_t kps = (stages + splits - 1) / splits * kt;
    pl.k_per_split = int(kps < p.K ? kps : p.K);
    pl.splits = int((p.K + int64_t(pl.k_per_split) - 1) / pl.k_per_split);
    if (pl.splits > 1) pl.part_elems = int64_t(pl.splits) * p.M * p.Ng;
  }
  pl.gz = unsigned(pl.splits);
  pl.ok = true;
  return pl;
}

template <class T>
inline ConvKernel conv_tc_kernel_t(int dir, int bm, int bn, bool bkm) {
  if (dir == kConvFwd) return bn == 64 ? conv_mma_kernel<T, 128, 64, kConvFwd, true> : conv_mma_kernel<T, 128, 128, kConvFwd, true>;
  if (dir == kConvBwdData) {
    if (bn == 64) return bkm ? conv_mma_kernel<T, 128, 64, kConvBwdData, true> : conv_mma_kernel<T, 128, 64, kConvBwdData, false>;
    return bkm ? conv_mma_kernel<T, 128, 128, kConvBwdData, true> : conv_mma_kernel<T, 128, 128, kConvBwdData, false>;
  }
  (void)bn;
  return bm == 64 ? conv_mma_kernel<T, 64, 128, kConvBwdWeight, true> : conv_mma_kernel<T, 128, 128, kConvBwdWeight, true>;
}

// The kernel of a plan; launch it as kernel<<<dim3(gx, gy, gz), threads, smem>>>(p) with
// p.k_per_split = plan.k_per_split and p.part set when plan.part_elems > 0 (then sum the
// splits into dw with conv_sum_splits_kernel).
inline ConvKernel conv_tc_kernel(const ConvTcParams& p, const ConvTcPlan& pl) {
  return p.bf16_mma ? conv_tc_kernel_t<__nv_bfloat16>(p.dir, pl.bm, pl.bn, pl.b_kmajor)
                    : conv_tc_kernel_t<float>(p.dir, pl.bm, pl.bn, pl.b_kmajor);
}

#endif  // !TSCLIP_CPU_EMU

}  // namespace tsclip::convk
