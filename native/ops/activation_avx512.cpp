// exp-based activations on 16-float vectors (this file is compiled for AVX-512).
#include "activation_impl.h"

namespace tsclip {
void exp_activation_avx512(UnaryKind k, const float* x, const float* dy, float* y, int64_t n) {
  exp_activation<16>(k, x, dy, y, n);
}
}  // namespace tsclip
