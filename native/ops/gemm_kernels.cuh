// GEMM kernels on raw pointers: c[b] = act(alpha * a[b] @ b[b] + bias) (+ c[b] when accumulating),
// fp32 accumulation, f32 or bf16 operands and output. Used by the gemm op (gemm.cu) and by the
// kernel lab (native/cuda/dev/gemm.cu), which times the versions below against each other.
//
// Versions (the lab keeps the numbers):
//   v1 simple: 64x64 tiles through shared memory, any strides, any dtypes; the fallback.
//   v2 mma:    mma.sync tensor cores (bf16 m16n8k16, or tf32 m16n8k8 for f32 operands), ldmatrix,
//              a 4-stage cp.async pipeline, 128x128 block tile, 8 warps of 64x32. Either operand
//              may be K-contiguous or M/N-contiguous (transposed views cost nothing). f32 operands
//              are split x = hi + lo into two tf32 parts and multiplied as hi*hi + hi*lo + lo*hi
//              (3xTF32: float32 accuracy at a third of the tf32 rate) unless tf32_fast allows
//              plain tf32 (10-bit mantissas, ~1e-3 relative).
//   v3 wgmma:  sm_90a only: TMA (cp.async.bulk.tensor) into 128-byte-swizzled tiles, a 4-stage
//              mbarrier ring filled by one producer warpgroup, two consumer warpgroups of 64 rows
//              issuing wgmma m64n128k16 from shared memory. bf16, both operands K-contiguous
//              (x @ W^T, the forward of every linear layer).
#pragma once
#include "tc.cuh"

#if !defined(TSCLIP_EMU)
#include <cuda.h>  // CUtensorMap and its enums only; the encoder comes from the driver at run time
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TSCLIP_SM90A 1
#endif

namespace tsclip::tc {

// Epilogue activations: UnaryKind + 1, 0 = none.
enum GemmAct : int { kActNone = 0, kActRelu = 1, kActQuickGelu = 2, kActGelu = 3 };

struct GemmParams {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* bias = nullptr;  // [N] or null
  void* c = nullptr;
  int M = 0, N = 0, K = 0, batch = 1;
  int64_t sa_b = 0, sa_m = 0, sa_k = 0;  // element strides; batch stride 0 = shared by the batch
  int64_t sb_b = 0, sb_k = 0, sb_n = 0;
  int64_t sc_b = 0, sc_m = 0;  // c's column stride is 1
  int64_t s_bias = 1;
  float alpha = 1.f;
  int accumulate = 0;
  int act = kActNone;
  bool a_bf16 = false, b_bf16 = false, c_bf16 = false, bias_bf16 = false;
  bool c_pairs = false;  // c's base and row stride allow 2-element stores at even columns
  bool tf32_fast = false;  // f32 operands: one tf32 product instead of the float32-accurate three
};

__device__ __forceinline__ float gemm_act(float v, int act) {
  switch (act) {
    case kActRelu: return fmaxf(v, 0.f);
    case kActQuickGelu: return v / (1.f + expf(-1.702f * v));
    case kActGelu: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    default: return v;
  }
}

// Finishes columns n and n+1 of row m (n+1 may be past the edge) and stores them.
__device__ __forceinline__ void gemm_store2(const GemmParams& p, void* c, int m, int n, float v0, float v1) {
  if (m >= p.M || n >= p.N) return;
  const bool two = n + 1 < p.N;
  v0 *= p.alpha;
  v1 *= p.alpha;
  if (p.bias) {
    v0 += ld_elem(p.bias, p.bias_bf16, n * p.s_bias);
    if (two) v1 += ld_elem(p.bias, p.bias_bf16, (n + 1) * p.s_bias);
  }
  if (p.act != kActNone) v0 = gemm_act(v0, p.act), v1 = gemm_act(v1, p.act);
  const int64_t i = int64_t(m) * p.sc_m + n;
  if (two && p.c_pairs) {
    if (p.c_bf16) {
      uint32_t* q = reinterpret_cast<uint32_t*>(static_cast<__nv_bfloat16*>(c) + i);
      if (p.accumulate) {
        uint32_t old = *q;
        v0 += bf16_bits_to_float(uint16_t(old & 0xffff));
        v1 += bf16_bits_to_float(uint16_t(old >> 16));
      }
      *q = pack_bf16(v0, v1);
    } else {
      float2* q = reinterpret_cast<float2*>(static_cast<float*>(c) + i);
      if (p.accumulate) {
        float2 old = *q;
        v0 += old.x;
        v1 += old.y;
      }
      *q = make_float2(v0, v1);
    }
    return;
  }
  if (p.accumulate) v0 += ld_elem(c, p.c_bf16, i);
  st_elem(c, p.c_bf16, i, v0);
  if (two) {
    if (p.accumulate) v1 += ld_elem(c, p.c_bf16, i + 1);
    st_elem(c, p.c_bf16, i + 1, v1);
  }
}

__device__ __forceinline__ const void* elem_ptr(const void* base, bool bf, int64_t i) {
  return bf ? static_cast<const void*>(static_cast<const __nv_bfloat16*>(base) + i)
            : static_cast<const void*>(static_cast<const float*>(base) + i);
}

// ---------------------------------------------------------------------------------------------
// v1: the fallback. 256 threads, 64x64 tile, BK = 16, 4x4 outputs per thread.
constexpr int kSimpleTile = 64, kSimpleBK = 16;

__global__ void __launch_bounds__(256) gemm_simple_kernel(GemmParams p) {
  __shared__ float As[kSimpleBK][kSimpleTile + 4];
  __shared__ float Bs[kSimpleBK][kSimpleTile + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * kSimpleTile, n0 = blockIdx.x * kSimpleTile;
  for (int bz = blockIdx.z; bz < p.batch; bz += gridDim.z) {
    const void* a = elem_ptr(p.a, p.a_bf16, bz * p.sa_b);
    const void* b = elem_ptr(p.b, p.b_bf16, bz * p.sb_b);
    void* c = p.c_bf16 ? static_cast<void*>(static_cast<__nv_bfloat16*>(p.c) + bz * p.sc_b)
                       : static_cast<void*>(static_cast<float*>(p.c) + bz * p.sc_b);
    float acc[4][4] = {};
    for (int k0 = 0; k0 < p.K; k0 += kSimpleBK) {
      for (int e = tid; e < kSimpleTile * kSimpleBK; e += 256) {
        // walk the contiguous dimension fastest so that a warp's loads coalesce
        int mm, kk;
        if (p.sa_k == 1) mm = e / kSimpleBK, kk = e % kSimpleBK;
        else mm = e % kSimpleTile, kk = e / kSimpleTile;
        int gm = m0 + mm, gk = k0 + kk;
        As[kk][mm] = gm < p.M && gk < p.K ? ld_elem(a, p.a_bf16, gm * p.sa_m + gk * p.sa_k) : 0.f;
        int nn;
        if (p.sb_n == 1) nn = e % kSimpleTile, kk = e / kSimpleTile;
        else nn = e / kSimpleBK, kk = e % kSimpleBK;
        int gn = n0 + nn;
        gk = k0 + kk;
        Bs[kk][nn] = gn < p.N && gk < p.K ? ld_elem(b, p.b_bf16, gk * p.sb_k + gn * p.sb_n) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimpleBK; kk++) {
        float av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; j++) bv[j] = Bs[kk][tx * 4 + j];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      gemm_store2(p, c, m0 + ty + 16 * i, n0 + tx * 4, acc[i][0], acc[i][1]);
      gemm_store2(p, c, m0 + ty + 16 * i, n0 + tx * 4 + 2, acc[i][2], acc[i][3]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// v2: mma.sync. T = __nv_bfloat16 (m16n8k16) or float (tf32 m16n8k8). AK: a is K-contiguous
// (else M-contiguous); BK: b is K-contiguous (else N-contiguous).
template <class T>
struct MmaCfg {
  static constexpr int BM = 128, BN = 128, THREADS = 256, STAGES = 4;
  static constexpr int EPC = 16 / int(sizeof(T));          // elements per 16-byte chunk
  static constexpr int KT = sizeof(T) == 2 ? 32 : 16;      // k per stage: 64 bytes per row
  static constexpr int LDK = KT + EPC;                     // K-contiguous tile rows, padded 16 B
  static constexpr int LDM = BM + 8;                       // M/N-contiguous tile rows, padded
  static constexpr int A_K_ELEMS = BM * LDK, A_M_ELEMS = KT * LDM;
  static constexpr int TILE_ELEMS = A_K_ELEMS > A_M_ELEMS ? A_K_ELEMS : A_M_ELEMS;
  static constexpr int STAGE_BYTES = 2 * TILE_ELEMS * int(sizeof(T));
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};

// Copies one operand tile (BM or BN rows of KT) of stage data into shared memory.
// KMajor: tile stored [row][k]; else [k][row]. `rows` = M or N, `sr`/`sk` = element strides.
template <class T, bool KMajor>
__device__ __forceinline__ void mma_load_tile(T* dst, const T* src, int r0, int rows, int k0, int K, int64_t sr,
                                              int64_t sk) {
  using C = MmaCfg<T>;
  constexpr int CHUNKS = C::BM * C::KT / C::EPC;  // 512 for both element types
  static_assert(CHUNKS % C::THREADS == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int i = 0; i < CHUNKS / C::THREADS; i++) {
    const int c = threadIdx.x + i * C::THREADS;
    int r, k;
    T* d;
    if constexpr (KMajor) {
      constexpr int PER_ROW = C::KT / C::EPC;
      r = c / PER_ROW;
      k = (c % PER_ROW) * C::EPC;
      d = dst + r * C::LDK + k;
    } else {
      constexpr int PER_ROW = C::BM / C::EPC;
      k = c / PER_ROW;
      r = (c % PER_ROW) * C::EPC;
      d = dst + k * C::LDM + r;
    }
    const int gr = r0 + r, gk = k0 + k;
    const bool ok = gr < rows && gk < K;
    cp_async16(d, ok ? src + gr * sr + gk * sk : src, ok);
  }
}

template <class T, bool AK, bool BK>
__global__ void __launch_bounds__(256) gemm_mma_kernel(GemmParams p) {
  using C = MmaCfg<T>;
  T* smem = reinterpret_cast<T*>(dyn_smem());
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 4, wn = warp % 4;  // warp tile: rows wm*64.., cols wn*32..
  const int g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.y * C::BM, n0 = blockIdx.x * C::BN;
  const int KTILES = (p.K + C::KT - 1) / C::KT;

  for (int bz = blockIdx.z; bz < p.batch; bz += gridDim.z) {
    const T* a = static_cast<const T*>(p.a) + bz * p.sa_b;
    const T* b = static_cast<const T*>(p.b) + bz * p.sb_b;
    auto tile_a = [&](int s) { return smem + s * 2 * C::TILE_ELEMS; };
    auto tile_b = [&](int s) { return smem + s * 2 * C::TILE_ELEMS + C::TILE_ELEMS; };
    auto load_stage = [&](int s, int kt) {
      mma_load_tile<T, AK>(tile_a(s), a, m0, p.M, kt * C::KT, p.K, p.sa_m, p.sa_k);
      mma_load_tile<T, BK>(tile_b(s), b, n0, p.N, kt * C::KT, p.K, p.sb_n, p.sb_k);
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int r = 0; r < 4; r++) acc[i][j][r] = 0.f;

#pragma unroll
    for (int s = 0; s < C::STAGES - 1; s++) {
      if (s < KTILES) load_stage(s, s);
      cp_async_commit();
    }
    for (int kt = 0; kt < KTILES; kt++) {
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();  // tile kt visible to all; everyone is done with the stage refilled next
      const int pre = kt + C::STAGES - 1;
      if (pre < KTILES) load_stage(pre % C::STAGES, pre);
      cp_async_commit();

      const T* As = tile_a(kt % C::STAGES);
      const T* Bs = tile_b(kt % C::STAGES);
      if constexpr (sizeof(T) == 2) {
#pragma unroll
        for (int ks = 0; ks < C::KT / 16; ks++) {
          uint32_t af[4][4], bfr[4][2];
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const int rb = wm * 64 + i * 16;
            if constexpr (AK) {
              ldsm_x4<false>(af[i], As + (rb + lane % 16) * C::LDK + ks * 16 + (lane / 16) * 8);
            } else {
              const int j = lane / 8, r = lane % 8;
              ldsm_x4<true>(af[i], As + (ks * 16 + (j / 2) * 8 + r) * C::LDM + rb + (j % 2) * 8);
            }
          }
#pragma unroll
          for (int pr = 0; pr < 2; pr++) {
            const int cb = wn * 32 + pr * 16, j = lane / 8, r = lane % 8;
            uint32_t q[4];
            if constexpr (BK) ldsm_x4<false>(q, Bs + (cb + (j / 2) * 8 + r) * C::LDK + ks * 16 + (j % 2) * 8);
            else ldsm_x4<true>(q, Bs + (ks * 16 + (j % 2) * 8 + r) * C::LDM + cb + (j / 2) * 8);
            bfr[2 * pr][0] = q[0];
            bfr[2 * pr][1] = q[1];
            bfr[2 * pr + 1][0] = q[2];
            bfr[2 * pr + 1][1] = q[3];
          }
#pragma unroll
          for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) mma_bf16(acc[i][j], af[i], bfr[j]);
        }
      } else {
        // tf32: x = hi + lo, both tf32; hi*hi + hi*lo + lo*hi recovers float32 accuracy
        auto split = [](float x, uint32_t& hi, uint32_t& lo) {
          hi = to_tf32(x);
          lo = to_tf32(x - __uint_as_float(hi));
        };
#pragma unroll
        for (int ks = 0; ks < C::KT / 8; ks++) {
          uint32_t ah[4][4], al[4][4], bh[4][2], bl[4][2];
          const int k_lo = ks * 8 + t, k_hi = k_lo + 4;
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const int r_lo = wm * 64 + i * 16 + g, r_hi = r_lo + 8;
            auto at = [&](int r, int k) { return AK ? As[r * C::LDK + k] : As[k * C::LDM + r]; };
            split(at(r_lo, k_lo), ah[i][0], al[i][0]);
            split(at(r_hi, k_lo), ah[i][1], al[i][1]);
            split(at(r_lo, k_hi), ah[i][2], al[i][2]);
            split(at(r_hi, k_hi), ah[i][3], al[i][3]);
          }
#pragma unroll
          for (int j = 0; j < 4; j++) {
            const int n = wn * 32 + j * 8 + g;
            auto bt = [&](int k) { return BK ? Bs[n * C::LDK + k] : Bs[k * C::LDM + n]; };
            split(bt(k_lo), bh[j][0], bl[j][0]);
            split(bt(k_hi), bh[j][1], bl[j][1]);
          }
          if (!p.tf32_fast) {
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
              for (int j = 0; j < 4; j++) {
                mma_tf32(acc[i][j], al[i], bh[j]);  // the correction terms, then hi*hi
                mma_tf32(acc[i][j], ah[i], bl[j]);
              }
          }
#pragma unroll
          for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) mma_tf32(acc[i][j], ah[i], bh[j]);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next batch entry refills stage 0

    void* c = p.c_bf16 ? static_cast<void*>(static_cast<__nv_bfloat16*>(p.c) + bz * p.sc_b)
                       : static_cast<void*>(static_cast<float*>(p.c) + bz * p.sc_b);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int row = m0 + wm * 64 + i * 16 + g, col = n0 + wn * 32 + j * 8 + 2 * t;
        gemm_store2(p, c, row, col, acc[i][j][0], acc[i][j][1]);
        gemm_store2(p, c, row + 8, col, acc[i][j][2], acc[i][j][3]);
      }
  }
}

// Whether v2 can take these operands: one dtype for a and b, 16-byte aligned chunks along each
// operand's contiguous dimension (so a chunk is wholly inside or outside the matrix).
inline bool gemm_mma_eligible(const GemmParams& p, bool* ak, bool* bk) {
  if (p.a_bf16 != p.b_bf16) return false;
  const int epc = p.a_bf16 ? 8 : 4;
  const int64_t esz = p.a_bf16 ? 2 : 4;
  auto aligned = [&](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (!aligned(p.a) || !aligned(p.b)) return false;
  if (p.sa_b % epc || p.sb_b % epc) return false;
  (void)esz;
  if (p.sa_k == 1 && p.sa_m % epc == 0 && p.K % epc == 0) *ak = true;
  else if (p.sa_m == 1 && p.sa_k % epc == 0 && p.M % epc == 0) *ak = false;
  else return false;
  if (p.sb_k == 1 && p.sb_n % epc == 0 && p.K % epc == 0) *bk = true;
  else if (p.sb_n == 1 && p.sb_k % epc == 0 && p.N % epc == 0) *bk = false;
  else return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// v3: wgmma (sm_90a). Block = 3 warpgroups: 0 produces (one thread issues the bulk tensor copies),
// 1 and 2 consume rows 0-63 and 64-127 of the 128 x BN tile.
constexpr int kWgBM = 128, kWgBK = 64, kWgStages = 4;
template <int BN>
constexpr int wgmma_smem_bytes() {
  return kWgStages * (kWgBM + BN) * kWgBK * 2 + 1024 /* alignment */ + 2 * kWgStages * 8 /* barriers */;
}

#if defined(TSCLIP_SM90A)
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Spins until the phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t a = smem_u32(bar);
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.b32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  }
}
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}
// Shared-memory matrix descriptor for a K-major tile of 128-byte rows written by the copy engine
// with the 128-byte swizzle: 8-row core groups 1024 bytes apart (SBO), LBO unused (1).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* p) {
  const uint64_t addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// d += A(64x16, smem) * B(16x128, smem), both K-major.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, "
      "%43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db));
}
#endif  // TSCLIP_SM90A

#if !defined(TSCLIP_EMU)
template <int BN>
__global__ void __launch_bounds__(384, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      GemmParams p, int a_batched, int b_batched) {
#if defined(TSCLIP_SM90A)
  constexpr int NH = BN / 128;
  constexpr int A_BYTES = kWgBM * kWgBK * 2, B_BYTES = BN * kWgBK * 2;
  unsigned char* base = dyn_smem();
  base += (1024 - smem_u32(base) % 1024) % 1024;  // the 128-byte swizzle repeats every 1024 bytes
  unsigned char* sa = base;
  unsigned char* sb = base + kWgStages * A_BYTES;
  uint64_t* full = reinterpret_cast<uint64_t*>(sb + kWgStages * B_BYTES);
  uint64_t* empty = full + kWgStages;

  const int wg = threadIdx.x / 128, tw = threadIdx.x % 128;
  const int m0 = blockIdx.y * kWgBM, n0 = blockIdx.x * BN, bz = blockIdx.z;
  const int KTILES = (p.K + kWgBK - 1) / kWgBK;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kWgStages; s++) {
      mbar_init(&full[s], 1);   // the producer's arrive, plus the copies' bytes
      mbar_init(&empty[s], 8);  // one arrive per consumer warp, each after its own wait_group
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    if (tw == 0) {
      for (int kt = 0; kt < KTILES; kt++) {
        const int s = kt % kWgStages;
        if (kt >= kWgStages) mbar_wait(&empty[s], ((kt / kWgStages) - 1) & 1);
        mbar_expect_tx(&full[s], A_BYTES + B_BYTES);
        tma_load_3d(sa + s * A_BYTES, &map_a, kt * kWgBK, m0, a_batched ? bz : 0, &full[s]);
        tma_load_3d(sb + s * B_BYTES, &map_b, kt * kWgBK, n0, b_batched ? bz : 0, &full[s]);
      }
    }
    return;
  }

  float d[NH][64];
#pragma unroll
  for (int h = 0; h < NH; h++)
#pragma unroll
    for (int i = 0; i < 64; i++) d[h][i] = 0.f;
  const int row_off = (wg - 1) * 64;
  for (int kt = 0; kt < KTILES; kt++) {
    const int s = kt % kWgStages;
    mbar_wait(&full[s], (kt / kWgStages) & 1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kWgBK / 16; kk++) {
      const uint64_t da = wgmma_desc_sw128(sa + s * A_BYTES + row_off * 128 + kk * 32);
#pragma unroll
      for (int h = 0; h < NH; h++) {
        const uint64_t db = wgmma_desc_sw128(sb + s * B_BYTES + h * 128 * 128 + kk * 32);
        wgmma_m64n128k16(d[h], da, db);
      }
    }
    wgmma_commit();
    wgmma_wait0();
    if (tw % 32 == 0) mbar_arrive(&empty[s]);
  }

  void* c = p.c_bf16 ? static_cast<void*>(static_cast<__nv_bfloat16*>(p.c) + bz * p.sc_b)
                     : static_cast<void*>(static_cast<float*>(p.c) + bz * p.sc_b);
  const int lane = tw % 32, g = lane / 4, t = lane % 4;
  const int row = m0 + row_off + (tw / 32) * 16 + g;
#pragma unroll
  for (int h = 0; h < NH; h++)
#pragma unroll
    for (int j = 0; j < 16; j++) {
      const int col = n0 + h * 128 + j * 8 + 2 * t;
      gemm_store2(p, c, row, col, d[h][j * 4 + 0], d[h][j * 4 + 1]);
      gemm_store2(p, c, row + 8, col, d[h][j * 4 + 2], d[h][j * 4 + 3]);
    }
#else
  __trap();  // launched only on sm_90 devices, whose code is built from the sm_90a branch
#endif
}
#endif  // !TSCLIP_EMU

// ---------------------------------------------------------------------------------------------
// Host side: path choice and launches. Returns the CUDA error of the launch (no exceptions, so the
// lab can use it without the addon).
#if !defined(TSCLIP_EMU)
enum class GemmPath : int { Auto = 0, Simple = 1, Mma = 2, Wgmma = 3 };
inline const char* gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::Simple: return "simple";
    case GemmPath::Mma: return "mma";
    case GemmPath::Wgmma: return "wgmma";
    default: return "auto";
  }
}

using TensorMapEncodeFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                       const cuuint64_t*, const cuuint32_t*, const cuuint32_t*,
                                       CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                       CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver (we link only the runtime); null when unavailable.
inline TensorMapEncodeFn tensor_map_encoder() {
  static TensorMapEncodeFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return TensorMapEncodeFn(nullptr);
    }
    return reinterpret_cast<TensorMapEncodeFn>(f);
  }();
  return fn;
}

// A [batch][rows][K] bf16 operand, K contiguous, as a 3-D map with 64 x box_rows boxes.
inline bool make_kmajor_map(CUtensorMap* map, const void* ptr, int rows, int K, int64_t s_row, int64_t s_batch,
                            int batch, int box_rows) {
  TensorMapEncodeFn enc = tensor_map_encoder();
  if (!enc) return false;
  const bool batched = s_batch != 0 && batch > 1;
  cuuint64_t dims[3] = {cuuint64_t(K), cuuint64_t(rows), cuuint64_t(batched ? batch : 1)};
  cuuint64_t strides[2] = {cuuint64_t(s_row * 2), cuuint64_t(batched ? s_batch * 2 : s_row * 2 * rows)};
  cuuint32_t box[3] = {cuuint32_t(kWgBK), cuuint32_t(box_rows), 1};
  cuuint32_t estr[3] = {1, 1, 1};
  return enc(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(ptr), dims, strides, box, estr,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

inline bool gemm_wgmma_eligible(const GemmParams& p, int sm_major) {
  if (sm_major != 9 || !p.a_bf16 || !p.b_bf16) return false;
  if (p.sa_k != 1 || p.sb_k != 1) return false;
  if (p.sa_m % 8 || p.sb_n % 8 || p.sa_b % 8 || p.sb_b % 8) return false;
  if (reinterpret_cast<uintptr_t>(p.a) % 16 || reinterpret_cast<uintptr_t>(p.b) % 16) return false;
  if (p.batch > 65535) return false;
  // small products are latency-bound: the simpler kernel starts faster
  return double(p.M) * p.N * p.K >= 8.0 * 1024 * 1024;
}

inline unsigned gemm_grid_z(int batch) { return unsigned(batch < 65535 ? (batch < 1 ? 1 : batch) : 65535); }

inline cudaError_t gemm_launch_simple(const GemmParams& p, cudaStream_t s) {
  dim3 grid((p.N + kSimpleTile - 1) / kSimpleTile, (p.M + kSimpleTile - 1) / kSimpleTile, gemm_grid_z(p.batch));
  gemm_simple_kernel<<<grid, 256, 0, s>>>(p);
  return cudaGetLastError();
}

template <class T, bool AK, bool BK>
inline cudaError_t gemm_launch_mma_t(const GemmParams& p, cudaStream_t s) {
  using C = MmaCfg<T>;
  auto kern = gemm_mma_kernel<T, AK, BK>;
  // once per kernel (the attribute stays set on the device)
  static const cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM_BYTES);
  if (e != cudaSuccess) return e;
  dim3 grid((p.N + C::BN - 1) / C::BN, (p.M + C::BM - 1) / C::BM, gemm_grid_z(p.batch));
  kern<<<grid, C::THREADS, C::SMEM_BYTES, s>>>(p);
  return cudaGetLastError();
}

inline cudaError_t gemm_launch_mma(const GemmParams& p, cudaStream_t s, bool ak, bool bk) {
  if (p.a_bf16) {
    if (ak) return bk ? gemm_launch_mma_t<__nv_bfloat16, true, true>(p, s) : gemm_launch_mma_t<__nv_bfloat16, true, false>(p, s);
    return bk ? gemm_launch_mma_t<__nv_bfloat16, false, true>(p, s) : gemm_launch_mma_t<__nv_bfloat16, false, false>(p, s);
  }
  if (ak) return bk ? gemm_launch_mma_t<float, true, true>(p, s) : gemm_launch_mma_t<float, true, false>(p, s);
  return bk ? gemm_launch_mma_t<float, false, true>(p, s) : gemm_launch_mma_t<float, false, false>(p, s);
}

template <int BN>
inline cudaError_t gemm_launch_wgmma_t(const GemmParams& p, cudaStream_t s) {
  CUtensorMap ma, mb;
  if (!make_kmajor_map(&ma, p.a, p.M, p.K, p.sa_m, p.sa_b, p.batch, kWgBM) ||
      !make_kmajor_map(&mb, p.b, p.N, p.K, p.sb_n, p.sb_b, p.batch, BN))
    return cudaErrorNotSupported;
  constexpr int smem = wgmma_smem_bytes<BN>();
  auto kern = gemm_wgmma_kernel<BN>;
  static const cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  dim3 grid((p.N + BN - 1) / BN, (p.M + kWgBM - 1) / kWgBM, unsigned(p.batch));
  kern<<<grid, 384, smem, s>>>(ma, mb, p, p.sa_b != 0 && p.batch > 1, p.sb_b != 0 && p.batch > 1);
  return cudaGetLastError();
}

// Chooses a path (or takes `want`, falling back when the operands do not fit it) and launches.
// `used` reports the path taken; wg_bn forces wgmma's tile width (128 or 256; 0 chooses).
inline cudaError_t gemm_launch(const GemmParams& p, cudaStream_t s, int sm_major, GemmPath want, GemmPath* used,
                               int wg_bn = 0) {
  bool ak = false, bk = false;
  const bool mma_ok = gemm_mma_eligible(p, &ak, &bk);
  const bool wg_ok = mma_ok && gemm_wgmma_eligible(p, sm_major);
  GemmPath path = want;
  if (path == GemmPath::Auto) path = wg_ok ? GemmPath::Wgmma : mma_ok ? GemmPath::Mma : GemmPath::Simple;
  if (path == GemmPath::Wgmma && !wg_ok) path = mma_ok ? GemmPath::Mma : GemmPath::Simple;
  if (path == GemmPath::Mma && !mma_ok) path = GemmPath::Simple;
  if (path == GemmPath::Wgmma) {
    // wide tiles halve the loads per flop when there are enough of them to fill the device
    const bool wide = wg_bn ? wg_bn == 256 : p.N % 256 == 0 && double((p.M + 127) / 128) * (p.N / 256) * p.batch >= 132;
    cudaError_t e = wide ? gemm_launch_wgmma_t<256>(p, s) : gemm_launch_wgmma_t<128>(p, s);
    if (e != cudaErrorNotSupported) {
      if (used) *used = path;
      return e;
    }
    path = GemmPath::Mma;  // no tensor-map encoder in this driver
  }
  if (used) *used = path;
  if (path == GemmPath::Mma) return gemm_launch_mma(p, s, ak, bk);
  return gemm_launch_simple(p, s);
}
#endif  // !TSCLIP_EMU

}  // namespace tsclip::tc
