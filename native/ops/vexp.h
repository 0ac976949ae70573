// exp over arrays with explicit GCC vector types: libm's expf does not vectorise, and a scalar
// polynomial exp gets its range checks turned into branches (value-range threading) that stop
// the vectoriser. N floats per vector: 4 is SSE2 (every x86-64); files built for AVX2 / AVX-512
// pass 8 / 16. Everything has internal linkage, so files compiled for different ISAs share nothing.
#pragma once
#include <cstdint>

namespace tsclip {
namespace {  // internal linkage: each file keeps the code built for its own ISA
namespace vexp_detail {

template <int N>
struct Vec {
  typedef float F __attribute__((vector_size(N * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(N * sizeof(float))));

  static F splat(float v) { return F{} + v; }

  // exp within ~2 ulp; exactly 0 below -87.34 (so -inf gives 0), +inf above 88.72, NaN stays NaN.
  static F exp(F x) {
    const float kHi = 88.72283935546875f, kLo = -87.3365447505531f;  // ln(FLT_MAX), ln(FLT_MIN)
    F xc = x > kHi ? splat(kHi) : x;
    xc = xc < kLo ? splat(kLo) : xc;
    // x = n ln2 + r, |r| <= ln2/2. Adding 1.5*2^23 rounds to an integer (default rounding mode)
    // and leaves n in the low mantissa bits: bits(t) - bits(1.5*2^23) = n.
    const F t = xc * 1.44269504088896341f + 12582912.0f;
    const F fn = t - 12582912.0f;
    F r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    F p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    F y = p * r * r + r + 1.0f;
    // 2^n as two powers of two, so that n up to 128 (x up to ln(FLT_MAX)) stays finite.
    const I n = (I)t - 0x4B400000, h = n >> 1;
    const I b1 = (h + 127) << 23, b2 = (n - h + 127) << 23;
    y = y * (F)b1 * (F)b2;
    y = x < kLo ? splat(0.f) : y;
    return x > kHi ? splat(__builtin_inff()) : y;
  }
};

}  // namespace vexp_detail
}  // namespace

// y[j] = exp(a * x[j] - b) for j < n (y may be x).
template <int N = 4>
static inline void exp_affine(const float* x, float a, float b, float* y, int64_t n) {
  using V = vexp_detail::Vec<N>;
  typename V::F va = V::splat(a), vb = V::splat(b), v;
  int64_t j = 0;
  for (; j + N <= n; j += N) {
    __builtin_memcpy(&v, x + j, sizeof v);
    v = V::exp(va * v - vb);
    __builtin_memcpy(y + j, &v, sizeof v);
  }
  if (j < n) {
    float t[N] = {};
    for (int64_t k = j; k < n; k++) t[k - j] = x[k];
    __builtin_memcpy(&v, t, sizeof v);
    v = V::exp(va * v - vb);
    __builtin_memcpy(t, &v, sizeof v);
    for (int64_t k = j; k < n; k++) y[k] = t[k - j];
  }
}

}  // namespace tsclip
