// AVX2+FMA pieces of sgemm: a 6 x 16 micro-kernel on ymm registers (12 accumulators, 2 B
// vectors, 1 broadcast of the 16 registers) and packing with 8x8 in-register transposes.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "sgemm.h"

namespace tsclip {
namespace sgemm_detail {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

template <int M>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int n, float alpha,
           float beta, const float* bias, PrefetchRange pf) {
  __m256 c0[M], c1[M];
#pragma GCC unroll 8
  for (int i = 0; i < M; i++) {
    c0[i] = _mm256_setzero_ps();
    c1[i] = _mm256_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 15), _MM_HINT_T0);
  }
  // The first pf.count steps also prefetch one line each.
  const char* row = pf.row;
  int64_t line = pf.line;
  for (int64_t k = 0; k < kc; k++) {
    if (k < pf.count) {
      _mm_prefetch(row + line * 64, _MM_HINT_T0);
      if (++line == pf.per_row) line = 0, row += pf.ld;
    }
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) {
      __m256 ai = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
    a += MR;
    b += NR;
  }
  const __m256 va = _mm256_set1_ps(alpha);
  if (n == NR) {
    const __m256 vb = _mm256_set1_ps(beta);
    const __m256 bias0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 bias1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) {
      float* ci = c + i * ldc;
      __m256 r0 = _mm256_fmadd_ps(c0[i], va, bias0), r1 = _mm256_fmadd_ps(c1[i], va, bias1);
      if (beta != 0.0f) {
        r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
        r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
      }
      _mm256_storeu_ps(ci, r0);
      _mm256_storeu_ps(ci + 8, r1);
    }
    return;
  }
  // Ragged right edge: finish through a small buffer (masked stores are slow on some cores).
  alignas(32) float tile[NR];
#pragma GCC unroll 8  // constant indices keep the accumulators in registers in the k loop
  for (int i = 0; i < M; i++) {
    _mm256_store_ps(tile, _mm256_mul_ps(c0[i], va));
    _mm256_store_ps(tile + 8, _mm256_mul_ps(c1[i], va));
    float* ci = c + i * ldc;
    for (int j = 0; j < n; j++) {
      float v = tile[j] + (bias ? bias[j] : 0.0f);
      ci[j] = beta == 0.0f ? v : v + beta * ci[j];
    }
  }
}

inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; g++) {
    s[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {
    r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
  }
}

// Loads `rows` rows (stride ld) of kk <= 8 floats, zero elsewhere, and transposes them.
inline void load_transpose(const float* src, int64_t ld, int rows, int kk, __m256 r[8]) {
  const __m256i km = _mm256_cmpgt_epi32(_mm256_set1_epi32(kk), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int i = 0; i < 8; i++)
    r[i] = i >= rows ? _mm256_setzero_ps()
           : kk == 8 ? _mm256_loadu_ps(src + i * ld)
                     : _mm256_maskload_ps(src + i * ld, km);
  transpose8(r);
}

void pack_a(bool trans, const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int m = int(std::min<int64_t>(MR, mc - i0));
    if (trans) {  // each k is a contiguous run of m floats
      const float* src = A + i0;
      for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < m; i++) dst[k * MR + i] = src[k * lda + i];
      continue;
    }
    const float* src = A + i0 * lda;
    for (int64_t k0 = 0; k0 < kc; k0 += 8) {
      const int kk = int(std::min<int64_t>(8, kc - k0));
      __m256 r[8];
      load_transpose(src + k0, lda, m, kk, r);
      // Stores of 8 overlap by 2 going forward; each later store rewrites the overlap, and the
      // caller's buffer has slack for the last one.
      for (int t = 0; t < kk; t++) _mm256_storeu_ps(dst + (k0 + t) * MR, r[t]);
    }
  }
}

void pack_b(bool trans, const float* B, int64_t ldb, int64_t nc, int64_t kc, float* dst) {
  if (!trans) {  // four source rows at a time across all slivers (see the AVX-512 variant)
    const int64_t full = nc / NR * NR;
    for (int64_t k0 = 0; k0 < kc; k0 += 4) {
      const int kk = int(std::min<int64_t>(4, kc - k0));
      const float* src = B + k0 * ldb;
      float* d = dst + k0 * NR;
      for (int64_t j0 = 0; j0 < full; j0 += NR, d += NR * kc)
        for (int k = 0; k < kk; k++) {
          _mm256_store_ps(d + k * NR, _mm256_loadu_ps(src + k * ldb + j0));
          _mm256_store_ps(d + k * NR + 8, _mm256_loadu_ps(src + k * ldb + j0 + 8));
        }
      if (full < nc)
        for (int k = 0; k < kk; k++)
          for (int64_t j = 0; j < NR; j++) d[k * NR + j] = full + j < nc ? src[k * ldb + full + j] : 0.0f;
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t n = std::min<int64_t>(NR, nc - j0);
    for (int h = 0; h < 2; h++) {
      const int rows = int(std::max<int64_t>(0, std::min<int64_t>(8, n - 8 * h)));
      const float* src = B + (j0 + 8 * h) * ldb;
      for (int64_t k0 = 0; k0 < kc; k0 += 8) {
        const int kk = int(std::min<int64_t>(8, kc - k0));
        __m256 r[8];
        load_transpose(src + k0, ldb, rows, kk, r);
        for (int t = 0; t < kk; t++) _mm256_store_ps(dst + (k0 + t) * NR + 8 * h, r[t]);
      }
    }
  }
}

// e^x as in the AVX-512 variant; 2^n is built in the exponent bits, so x is clamped to the
// normal range (e^-87.3 is the smallest normal float).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 1 + erf(x) as in the AVX-512 variant.
inline __m256 one_plus_erf8(__m256 x) {
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(ax, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  for (float c : {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
  const __m256 erfc = _mm256_mul_ps(_mm256_mul_ps(p, t), exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax), ax)));
  const __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_blendv_ps(erfc, _mm256_sub_ps(_mm256_set1_ps(2.0f), erfc), pos);
}

inline __m256 act8(GemmAct act, __m256 v) {
  switch (act) {
    case GemmAct::Relu: return _mm256_max_ps(v, _mm256_setzero_ps());
    case GemmAct::QuickGelu:
      return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_mul_ps(v, _mm256_set1_ps(-1.702f)))));
    case GemmAct::Gelu:
      return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)),
                           one_plus_erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f))));
    case GemmAct::None: break;
  }
  return v;
}

void act_tile(GemmAct act, float* c, int64_t ldc, int m, int n) {
  for (int i = 0; i < m; i++) {
    float* ci = c + i * ldc;
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(ci + j, act8(act, _mm256_loadu_ps(ci + j)));
    for (; j < n; j++) ci[j] = gemm_act_scalar(act, ci[j]);
  }
}

template <int... I>
constexpr Kernels make(std::integer_sequence<int, I...>) {
  return Kernels{"avx2", MR, NR, 96, 256, 256, {nullptr, &micro<I + 1>...}, &pack_a, &pack_b, &act_tile};
}

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels k = make(std::make_integer_sequence<int, MR>{});
  return k;
}

}  // namespace sgemm_detail
}  // namespace tsclip
