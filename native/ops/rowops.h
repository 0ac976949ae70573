// Argument checks and row reductions shared by the row-wise CPU kernels (norms, softmax, losses).
// The reductions keep 16 partial sums so that the compiler vectorises them without -ffast-math.
#pragma once
#include <cstdint>
#include <string>

#include "../tensor.h"

namespace tsclip {
namespace rowops {

inline void require_f32(const OpArgs& a, const TensorRef& t, const char* what) {
  a.require(t.defined(), std::string(what) + " is missing");
  a.require(t.dtype == DType::F32, std::string(what) + " must be float32, got " + t.describe());
}

// A defined float32 contiguous tensor with exactly `shape`.
inline void require_shape(const OpArgs& a, const TensorRef& t, const char* what,
                          std::initializer_list<int64_t> shape) {
  require_f32(a, t, what);
  std::string want = "[";
  int i = 0;
  bool ok = t.ndim == int(shape.size());
  for (int64_t s : shape) {
    want += (i ? "," : "") + std::to_string(s);
    if (ok && t.shape[i] != s) ok = false;
    i++;
  }
  want += "]";
  a.require(ok, std::string(what) + " must be float32" + want + ", got " + t.describe());
  a.require(t.contiguous(), std::string(what) + " " + t.describe() + " must be contiguous");
}

static inline float sum(const float* x, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) acc[j] += x[i + j];
  float s = 0;
  for (; i < n; i++) s += x[i];
  for (int j = 0; j < 16; j++) s += acc[j];
  return s;
}

static inline float dot(const float* x, const float* y, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) acc[j] += x[i + j] * y[i + j];
  float s = 0;
  for (; i < n; i++) s += x[i] * y[i];
  for (int j = 0; j < 16; j++) s += acc[j];
  return s;
}

// Sum of (x - c)^2.
static inline float sq_dev(const float* x, float c, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) {
      float d = x[i + j] - c;
      acc[j] += d * d;
    }
  float s = 0;
  for (; i < n; i++) s += (x[i] - c) * (x[i] - c);
  for (int j = 0; j < 16; j++) s += acc[j];
  return s;
}

static inline float max(const float* x, int64_t n) {
  float acc[16];
  for (int j = 0; j < 16; j++) acc[j] = -__builtin_inff();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) acc[j] = acc[j] > x[i + j] ? acc[j] : x[i + j];
  float m = -__builtin_inff();
  for (; i < n; i++) m = m > x[i] ? m : x[i];
  for (int j = 0; j < 16; j++) m = m > acc[j] ? m : acc[j];
  return m;
}

}  // namespace rowops
}  // namespace tsclip
