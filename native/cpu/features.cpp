#include "features.h"

#include <cstdlib>
#include <cstring>

namespace tsclip {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
    // TSCLIP_SIMD=avx2|scalar caps the path (for testing the fallbacks).
    if (const char* cap = std::getenv("TSCLIP_SIMD")) {
      if (!std::strcmp(cap, "avx2") || !std::strcmp(cap, "scalar")) r.avx512f = r.avx512bf16 = false;
      if (!std::strcmp(cap, "scalar")) r.avx2 = r.fma = false;
    }
    return r;
  }();
  return f;
}

}  // namespace tsclip
