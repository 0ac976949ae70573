// What this CPU can do, read once with cpuid; kernels pick their SIMD path from it at run time.
#pragma once
namespace tsclip {
struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false, avx512bf16 = false;
};
const CpuFeatures& cpu_features();
}  // namespace tsclip
