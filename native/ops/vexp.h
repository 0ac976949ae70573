// exp over arrays with explicit GCC vector types: libm's expf does not vectorise, and a scalar
// polynomial exp gets its range checks turned into branches (value-range threading) that stop
// the vectoriser. N floats per vector: 4 is SSE2 (every x86-64); files built for AVX2 / AVX-512
// pass 8 / 16. Everything is static so that files compiled for different ISAs share nothing.
#pragma once
#include <cstdint>

namespace tsclip {
namespace vexp_detail {

template <int N>
struct Vec {
  typedef float F __attribute__((vector_size(N * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(N * sizeof(float))));

  static F splat(float v) { return F{} + v; }

  // exp within ~2 ulp; exactly 0 below -87.34 (so -inf gives 0), +inf above 88.38, NaN stays NaN.
  static F exp(F x) {
    const float kHi = 88.3762626647949f, kLo = -87.3365447505531f;
    F xc = x > kHi ? splat(kHi) : x;
    xc = xc < kLo ? splat(kLo) : xc;
    // x = n ln2 + r, |r| <= ln2/2; adding 1.5*2^23 rounds to an integer (default rounding mode).
    const F fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    F r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    F p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    F y = p * r * r + r + 1.0f;
    const I bits = (__builtin_convertvector(fn, I) + 127) << 23;  // 2^n, n in [-126, 127]
    y = y * reinterpret_cast<const F&>(bits);
    y = x < kLo ? splat(0.f) : y;
    return x > kHi ? splat(__builtin_inff()) : y;
  }
};

}  // namespace vexp_detail

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

// exp(x) for one value (through the same code, so results match the array form).
static inline float vexp(float x) {
  float y;
  exp_affine<4>(&x, 1.0f, 0.0f, &y, 1);
  return y;
}

}  // namespace tsclip
