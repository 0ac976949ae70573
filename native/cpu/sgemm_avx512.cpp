// AVX-512 pieces of sgemm: an MR x 32 micro-kernel on zmm registers and packing routines that
// transpose 16x16 blocks in registers (packing a K-contiguous operand is a transpose).
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "sgemm.h"

namespace tsclip {
namespace sgemm_detail {
namespace {

// 10 rows x 32 columns: 20 accumulators + 2 B vectors in the 32 zmm registers; 10 divides
// CLIP's row counts (50 tokens per image), so the common shapes have no ragged tile.
constexpr int MR = 10;
constexpr int NR = 32;

inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

template <int M>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int n, float alpha,
           float beta, const float* bias) {
  __m512 c0[M], c1[M];
#pragma GCC unroll 16
  for (int i = 0; i < M; i++) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
    // The C tile is touched only after the k loop; start fetching it now.
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 31), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) {
      __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
    a += MR;
    b += NR;
  }
  const __mmask16 m0 = lanes(n), m1 = lanes(n - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int i = 0; i < M; i++) {
    float* ci = c + i * ldc;
    __m512 r0 = _mm512_fmadd_ps(c0[i], va, bias0), r1 = _mm512_fmadd_ps(c1[i], va, bias1);
    if (beta == 1.0f) {
      r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, ci));
      r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, ci + 16));
    } else if (beta != 0.0f) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
    }
    _mm512_mask_storeu_ps(ci, m0, r0);
    _mm512_mask_storeu_ps(ci + 16, m1, r1);
  }
}

// In-place transpose of 16 rows of 16 floats (r[i][j] -> r[j][i]).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Now each 128-bit lane of u[4g + c] holds rows 4g..4g+3 of column 4*lane + c.
  for (int g = 0; g < 4; g++) {
    __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  // Gather lane L of the four row groups into column 4L + c.
  for (int c = 0; c < 4; c++) {
    __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    __m512 w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    __m512 v1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_shuffle_f32x4(v0, v1, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, v1, 0xdd);
    r[4 + c] = _mm512_shuffle_f32x4(w0, w1, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(w0, w1, 0xdd);
  }
}

// Loads `rows` rows (stride ld) of up to 16 floats from src (k lanes under km), zero elsewhere,
// and transposes them: r[t] then holds element t of each row.
inline void load_transpose(const float* src, int64_t ld, int rows, __mmask16 km, __m512 r[16]) {
  for (int i = 0; i < 16; i++)
    r[i] = i < rows ? _mm512_maskz_loadu_ps(km, src + i * ld) : _mm512_setzero_ps();
  transpose16(r);
}

void pack_a(bool trans, const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int m = int(std::min<int64_t>(MR, mc - i0));
    const __mmask16 mm = lanes(m);
    if (trans) {  // element (i, k) at A[k*lda + i]: each k is already a contiguous row of MR
      const float* src = A + i0;
      for (int64_t k = 0; k < kc; k++)
        _mm512_mask_storeu_ps(dst + k * MR, mm, _mm512_maskz_loadu_ps(mm, src + k * lda));
      continue;
    }
    const float* src = A + i0 * lda;
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int kk = int(std::min<int64_t>(16, kc - k0));
      __m512 r[16];
      load_transpose(src + k0, lda, m, lanes(kk), r);
      for (int t = 0; t < kk; t++) _mm512_mask_storeu_ps(dst + (k0 + t) * MR, mm, r[t]);
    }
  }
}

void pack_b(bool trans, const float* B, int64_t ldb, int64_t nc, int64_t kc, float* dst) {
  if (!trans) {
    // Element (k, j) at B[k*ldb + j]. Walk each source row once, end to end, scattering it over
    // the slivers: reading sliver by sliver would touch 2 lines per row at a large stride, which
    // the prefetchers do not follow.
    const int64_t full = nc / NR * NR;
    const __mmask16 m0 = lanes(nc - full), m1 = lanes(nc - full - 16);
    for (int64_t k = 0; k < kc; k++) {
      const float* src = B + k * ldb;
      float* d = dst + k * NR;
      for (int64_t j0 = 0; j0 < full; j0 += NR, d += NR * kc) {
        _mm512_store_ps(d, _mm512_loadu_ps(src + j0));
        _mm512_store_ps(d + 16, _mm512_loadu_ps(src + j0 + 16));
      }
      if (full < nc) {
        _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, src + full));
        _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, src + full + 16));
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t n = std::min<int64_t>(NR, nc - j0);
    // element (k, j) at B[j*ldb + k]: transpose 16 columns x 16 k at a time
    for (int h = 0; h < 2; h++) {
      const int rows = int(std::max<int64_t>(0, std::min<int64_t>(16, n - 16 * h)));
      const float* src = B + (j0 + 16 * h) * ldb;
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const int kk = int(std::min<int64_t>(16, kc - k0));
        __m512 r[16];
        load_transpose(src + k0, ldb, rows, lanes(kk), r);
        for (int t = 0; t < kk; t++) _mm512_store_ps(dst + (k0 + t) * NR + 16 * h, r[t]);
      }
    }
  }
}

template <int... I>
constexpr Kernels make(std::integer_sequence<int, I...>) {
  return Kernels{"avx512", MR, NR, 120, 256, 512, {nullptr, &micro<I + 1>...}, &pack_a, &pack_b};
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k = make(std::make_integer_sequence<int, MR>{});
  return k;
}

}  // namespace sgemm_detail
}  // namespace tsclip
