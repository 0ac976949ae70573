// The activations built on exp (quick_gelu, sigmoid, exp) and their derivatives, over arrays with
// N-float vectors: included by elementwise.cpp (N = 4, any x86-64) and by the AVX2 / AVX-512
// files (N = 8 / 16), which are compiled for their ISA. libm's expf, one element at a time, cost
// ~3 ns per element; the 16-wide path ~0.4 ns.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kinds.h"
#include "vexp.h"

namespace tsclip {
namespace {

// y = f(x), or y = dy * f'(x) when dy is given, for f = quick_gelu, sigmoid or exp.
template <int N>
void exp_activation(UnaryKind k, const float* x, const float* dy, float* y, int64_t n) {
  constexpr int64_t kBlock = 256;
  float t[kBlock];
  // quick_gelu(x) = x * s(1.702 x) and sigmoid(x) = s(x), with s(v) = 1 / (1 + exp(-v)).
  const float c = k == UnaryKind::QuickGelu ? 1.702f : 1.0f;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t m = std::min(kBlock, n - b);
    const float *xb = x + b, *gb = dy ? dy + b : nullptr;
    float* yb = y + b;
    exp_affine<N>(xb, k == UnaryKind::Exp ? 1.0f : -c, 0.0f, t, m);
    // One plain loop per case, so that each vectorises.
    if (k == UnaryKind::Exp) {
      if (gb) for (int64_t i = 0; i < m; i++) yb[i] = gb[i] * t[i];
      else std::copy(t, t + m, yb);
      continue;
    }
    for (int64_t i = 0; i < m; i++) t[i] = 1.0f / (1.0f + t[i]);  // s
    if (!gb && k == UnaryKind::QuickGelu) for (int64_t i = 0; i < m; i++) yb[i] = xb[i] * t[i];
    else if (!gb) std::copy(t, t + m, yb);
    else if (k == UnaryKind::QuickGelu) for (int64_t i = 0; i < m; i++) yb[i] = gb[i] * (t[i] + c * xb[i] * t[i] * (1.0f - t[i]));
    else for (int64_t i = 0; i < m; i++) yb[i] = gb[i] * t[i] * (1.0f - t[i]);
  }
}

}  // namespace

// The wider variants (activation_avx2.cpp, activation_avx512.cpp), same contract.
void exp_activation_avx2(UnaryKind k, const float* x, const float* dy, float* y, int64_t n);
void exp_activation_avx512(UnaryKind k, const float* x, const float* dy, float* y, int64_t n);

}  // namespace tsclip
