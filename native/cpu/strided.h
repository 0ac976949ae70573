// Walking strided tensors on the CPU: a multi-index counter over a shape, used by the kernels that
// accept arbitrary views (copy, binary). Contiguous cases take their own fast loops.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace tsclip {

// Element offset of linear index `i` (row-major over `shape`) in a tensor with `strides`.
inline int64_t strided_offset(int64_t i, int ndim, const int64_t* shape, const int64_t* strides) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; d--) {
    int64_t q = i / shape[d];
    off += (i - q * shape[d]) * strides[d];
    i = q;
  }
  return off;
}

// Iterates linear indices [begin, end) keeping up to three strided offsets in step.
template <int N>
struct StridedCursor {
  int ndim;
  const int64_t* shape;
  const int64_t* strides[N];
  int64_t idx[kMaxDims] = {};
  int64_t off[N] = {};

  void seek(int64_t i) {
    for (int d = ndim - 1; d >= 0; d--) {
      idx[d] = i % shape[d];
      i /= shape[d];
    }
    for (int k = 0; k < N; k++) {
      off[k] = 0;
      for (int d = 0; d < ndim; d++) off[k] += idx[d] * strides[k][d];
    }
  }
  void next() {
    for (int d = ndim - 1; d >= 0; d--) {
      idx[d]++;
      for (int k = 0; k < N; k++) off[k] += strides[k][d];
      if (idx[d] < shape[d]) return;
      for (int k = 0; k < N; k++) off[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
};

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

}  // namespace tsclip
