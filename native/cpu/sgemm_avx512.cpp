// AVX-512 pieces of sgemm: a 10 x 32 micro-kernel on zmm registers and the packing routines
// (packing a K-contiguous operand is a transpose, done in registers 4 columns at a time).
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
           float beta, const float* bias, PrefetchRange pf) {
  __m512 c0[M], c1[M];
#pragma GCC unroll 16
  for (int i = 0; i < M; i++) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
    // The C tile is touched only after the k loop; start fetching it now.
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 31), _MM_HINT_T0);
  }
  auto step = [&]() __attribute__((always_inline)) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) {
      __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
    a += MR;
    b += NR;
  };
  // The first pf.count steps also prefetch one line each.
  int64_t k = 0;
  const char* row = pf.row;
  for (int64_t line = pf.line; k < pf.count; k++) {
    _mm_prefetch(row + line * 64, _MM_HINT_T0);
    if (++line == pf.per_row) line = 0, row += pf.ld;
    step();
  }
#pragma GCC unroll 4
  for (; k < kc; k++) step();
  const __mmask16 m0 = lanes(n), m1 = lanes(n - 16);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  if (n == NR) {  // full tile: plain loads and stores (masked stores are slow on Zen 4)
#pragma GCC unroll 16
    for (int i = 0; i < M; i++) {
      float* ci = c + i * ldc;
      __m512 r0 = _mm512_fmadd_ps(c0[i], va, bias0), r1 = _mm512_fmadd_ps(c1[i], va, bias1);
      if (beta == 1.0f) {
        r0 = _mm512_add_ps(r0, _mm512_loadu_ps(ci));
        r1 = _mm512_add_ps(r1, _mm512_loadu_ps(ci + 16));
      } else if (beta != 0.0f) {
        r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
        r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
      }
      _mm512_storeu_ps(ci, r0);
      _mm512_storeu_ps(ci + 16, r1);
    }
    return;
  }
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

// Transposes 4 columns of up to 16 rows (stride ld) starting at src: out[c] holds column c,
// element r = row r. Rows == 0: `rows` rows at run time, columns under a clear bit of km read
// as zero; otherwise exactly Rows rows and 4 columns. Masked 128-bit broadcasts place rows i,
// 4+i, 8+i, 12+i in the four lanes of y[i], so only in-lane 4x4 transposes need shuffles: half
// the shuffles of a register 16x16 transpose, and twice as fast on Zen 4.
template <int Rows>
inline void transpose4x16(const float* src, int64_t ld, int rows, __mmask8 km, __m512 out[4]) {
  __m512 y[4];
  for (int i = 0; i < 4; i++) {
    __m512 v = _mm512_setzero_ps();
    for (int g = 0; g < 4; g++) {
      const int r = 4 * g + i;
      const __mmask16 lane = __mmask16(0xF << (4 * g));
      if (Rows == 0 && r < rows)
        v = _mm512_mask_broadcast_f32x4(v, lane, _mm_maskz_loadu_ps(km, src + r * ld));
      else if (Rows != 0 && r < Rows)
        v = _mm512_mask_broadcast_f32x4(v, lane, _mm_loadu_ps(src + r * ld));
    }
    y[i] = v;
  }
  const __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(y[0], y[1]));
  const __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(y[0], y[1]));
  const __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(y[2], y[3]));
  const __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(y[2], y[3]));
  out[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
  out[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
  out[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
  out[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
}

// Writes columns [0, kc) of `rows` <= 16 rows (stride ld) as rows of dst, dst_ld apart. Each
// store writes 16 floats (lanes past `rows` are zero): with dst_ld < 16 the stores overlap and
// each one rewrites the tail of the one before, so dst needs 16 floats of slack at the end.
// Plain overlapping stores, because masked stores are slow on Zen 4.
template <int FullRows>
void transpose_rows(const float* src, int64_t ld, int rows, int64_t kc, float* dst, int64_t dst_ld) {
  __m512 col[4];
  int64_t k = 0;
  if (rows == FullRows)
    for (; k + 4 <= kc; k += 4) {
      transpose4x16<FullRows>(src + k, ld, rows, 0xF, col);
      for (int c = 0; c < 4; c++) _mm512_storeu_ps(dst + (k + c) * dst_ld, col[c]);
    }
  for (; k < kc; k += 4) {
    const int kk = int(std::min<int64_t>(4, kc - k));
    transpose4x16<0>(src + k, ld, rows, __mmask8((1u << kk) - 1), col);
    for (int c = 0; c < kk; c++) _mm512_storeu_ps(dst + (k + c) * dst_ld, col[c]);
  }
}

void pack_a(bool trans, const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int m = int(std::min<int64_t>(MR, mc - i0));
    const __mmask16 mm = lanes(m);
    if (trans) {  // element (i, k) at A[k*lda + i]: each k is already a contiguous row of MR
      const float* src = A + i0;
      for (int64_t k = 0; k < kc; k++)  // overlapping stores, as in transpose_rows
        _mm512_storeu_ps(dst + k * MR, _mm512_maskz_loadu_ps(mm, src + k * lda));
      continue;
    }
    transpose_rows<MR>(A + i0 * lda, lda, m, kc, dst, MR);
  }
}

void pack_b(bool trans, const float* B, int64_t ldb, int64_t nc, int64_t kc, float* dst) {
  if (!trans) {
    // Element (k, j) at B[k*ldb + j]. Four source rows at a time are copied across all slivers:
    // sliver by sliver alone would read 2 lines per row at a large stride (the prefetchers lose
    // track), row by row alone would write 2 lines per sliver at a 32 KiB stride (one L1 set).
    const int64_t full = nc / NR * NR;
    const __mmask16 m0 = lanes(nc - full), m1 = lanes(nc - full - 16);
    for (int64_t k0 = 0; k0 < kc; k0 += 4) {
      const int kk = int(std::min<int64_t>(4, kc - k0));
      const float* src = B + k0 * ldb;
      float* d = dst + k0 * NR;
      for (int64_t j0 = 0; j0 < full; j0 += NR, d += NR * kc)
        for (int k = 0; k < kk; k++) {
          _mm512_store_ps(d + k * NR, _mm512_loadu_ps(src + k * ldb + j0));
          _mm512_store_ps(d + k * NR + 16, _mm512_loadu_ps(src + k * ldb + j0 + 16));
        }
      if (full < nc)
        for (int k = 0; k < kk; k++) {
          _mm512_store_ps(d + k * NR, _mm512_maskz_loadu_ps(m0, src + k * ldb + full));
          _mm512_store_ps(d + k * NR + 16, _mm512_maskz_loadu_ps(m1, src + k * ldb + full + 16));
        }
    }
    return;
  }
  // element (k, j) at B[j*ldb + k]: rows of the source become columns of the sliver
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t n = std::min<int64_t>(NR, nc - j0);
    for (int h = 0; h < 2; h++) {
      const int rows = int(std::max<int64_t>(0, std::min<int64_t>(16, n - 16 * h)));
      if (rows == 0) {  // zero padding keeps the unused lanes finite
        for (int64_t k = 0; k < kc; k++) _mm512_store_ps(dst + k * NR + 16 * h, _mm512_setzero_ps());
        continue;
      }
      transpose_rows<16>(B + (j0 + 16 * h) * ldb, ldb, rows, kc, dst + 16 * h, NR);
    }
  }
}

// e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so r is exact), e^r by its Taylor
// series to r^6 (relative error ~1e-7), and scalef for the 2^n that also underflows cleanly.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// 1 + erf(x) without cancellation for negative x: erfc(|x|) by Abramowitz & Stegun 7.1.26
// (absolute error <= 1.5e-7), then 2 - erfc for x >= 0.
inline __m512 one_plus_erf16(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  for (float c : {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
  const __m512 erfc = _mm512_mul_ps(_mm512_mul_ps(p, t), exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax)));
  const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mask_sub_ps(erfc, pos, _mm512_set1_ps(2.0f), erfc);
}

inline __m512 act16(GemmAct act, __m512 v) {
  switch (act) {
    case GemmAct::Relu: return _mm512_max_ps(v, _mm512_setzero_ps());
    case GemmAct::QuickGelu:  // v * sigmoid(1.702 v)
      return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)))));
    case GemmAct::Gelu:
      return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)),
                           one_plus_erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f))));
    case GemmAct::None: break;
  }
  return v;
}

void act_tile(GemmAct act, float* c, int64_t ldc, int m, int n) {
  for (int i = 0; i < m; i++) {
    float* ci = c + i * ldc;
    int j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(ci + j, act16(act, _mm512_loadu_ps(ci + j)));
    if (j < n) {
      const __mmask16 mk = lanes(n - j);
      _mm512_mask_storeu_ps(ci + j, mk, act16(act, _mm512_maskz_loadu_ps(mk, ci + j)));
    }
  }
}

template <int... I>
constexpr Kernels make(std::integer_sequence<int, I...>) {
  return Kernels{"avx512", MR, NR, 120, 256, 256, {nullptr, &micro<I + 1>...}, &pack_a, &pack_b, &act_tile};
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k = make(std::make_integer_sequence<int, MR>{});
  return k;
}

}  // namespace sgemm_detail
}  // namespace tsclip
