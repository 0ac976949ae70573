// exp-based activations on 8-float vectors (this file is compiled for AVX2 + FMA).
#include "activation_impl.h"

namespace tsclip {
void exp_activation_avx2(UnaryKind k, const float* x, const float* dy, float* y, int64_t n) {
  exp_activation<8>(k, x, dy, y, n);
}
}  // namespace tsclip
