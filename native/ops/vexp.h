// A branch-free single-precision exp that compilers vectorise inside loops (libm's expf stops
// vectorisation without -ffast-math). Used by softmax, attention and the losses. Everything is
// static so that translation units compiled for different ISAs never share a definition.
#pragma once
#include <cstdint>

namespace tsclip {
namespace vexp_detail {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kHi = 88.3762626647949f, kLo = -87.3365447505531f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
}  // namespace vexp_detail

// exp(x) within ~2 ulp; exactly 0 below -87.34 (so -inf gives 0), +inf above 88.38, NaN stays NaN.
static inline float vexp(float x) {
  using namespace vexp_detail;
  float xc = x > kHi ? kHi : x;
  xc = xc < kLo ? kLo : xc;
  float fn = (xc * kLog2e + kRound) - kRound;  // round to nearest (default rounding mode)
  float r = xc - fn * kLn2Hi;
  r = r - fn * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t bits = (int32_t(fn) + 127) << 23;  // fn in [-126, 127]: a normal power of two
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  y *= scale;
  y = x < kLo ? 0.0f : y;
  y = x > kHi ? __builtin_inff() : y;
  return x != x ? x : y;
}

}  // namespace tsclip
