// Shared helpers of the standalone kernel-lab programs (layernorm_forward.cu, softmax_forward.cu,
// adamw.cu): error checks, deterministic random data, validation against a CPU reference, and
// timing with CUDA events after flushing L2, reported as achieved GB/s.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define LAB_CHECK(expr)                                                                                   \
  do {                                                                                                    \
    cudaError_t lab_err_ = (expr);                                                                        \
    if (lab_err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "CUDA error %s (%s) in %s at %s:%d\n", cudaGetErrorName(lab_err_),             \
                   cudaGetErrorString(lab_err_), #expr, __FILE__, __LINE__);                              \
      std::exit(1);                                                                                       \
    }                                                                                                     \
  } while (0)

namespace lab {

// xorshift: the same data on every run and machine.
inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    v[i] = lo + (hi - lo) * float(s >> 40) / float(1 << 24);
  }
  return v;
}

template <class T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  LAB_CHECK(cudaMalloc(&d, h.size() * sizeof(T)));
  LAB_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  LAB_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Passes when |ref - gpu| <= tol + |ref| * eps everywhere; prints the worst element and the first
// few failures.
inline bool validate(const char* what, const std::vector<float>& ref, const float* dev, float tol, float eps) {
  std::vector<float> got = to_host(dev, ref.size());
  size_t bad = 0, worst = 0;
  double worst_err = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    double err = std::fabs(double(ref[i]) - double(got[i]));
    bool ok = err <= tol + std::fabs(ref[i]) * eps;  // NaN fails
    if (!(err <= worst_err)) worst_err = err, worst = i;
    if (!ok && bad++ < 5) std::printf("  %s[%zu]: ref %.8g, gpu %.8g\n", what, i, ref[i], got[i]);
  }
  std::printf("  %-6s max |err| %.3g at %zu: %s\n", what, worst_err, worst, bad ? "FAIL" : "ok");
  return bad == 0;
}

// Mean time in ms of `launch` over `reps` runs, each after writing a buffer twice the L2 size so
// that the kernel reads its inputs from memory, as in a real model.
template <class F>
float time_ms(int reps, F&& launch) {
  int dev = 0;
  LAB_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  LAB_CHECK(cudaGetDeviceProperties(&p, dev));
  size_t flush_bytes = size_t(p.l2CacheSize) * 2;
  void* flush = nullptr;
  LAB_CHECK(cudaMalloc(&flush, flush_bytes));
  cudaEvent_t t0, t1;
  LAB_CHECK(cudaEventCreate(&t0));
  LAB_CHECK(cudaEventCreate(&t1));
  launch();  // warm-up
  LAB_CHECK(cudaGetLastError());
  float total = 0;
  for (int r = 0; r < reps; r++) {
    LAB_CHECK(cudaMemset(flush, r & 0xff, flush_bytes));
    LAB_CHECK(cudaEventRecord(t0));
    launch();
    LAB_CHECK(cudaEventRecord(t1));
    LAB_CHECK(cudaEventSynchronize(t1));
    float ms = 0;
    LAB_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    total += ms;
  }
  LAB_CHECK(cudaGetLastError());
  LAB_CHECK(cudaEventDestroy(t0));
  LAB_CHECK(cudaEventDestroy(t1));
  LAB_CHECK(cudaFree(flush));
  return total / float(reps);
}

inline void report(const char* name, float ms, double bytes) {
  std::printf("  %-34s %9.4f ms  %8.1f GB/s\n", name, ms, bytes / (double(ms) * 1e-3) / 1e9);
}

inline void print_device() {
  int dev = 0;
  LAB_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  LAB_CHECK(cudaGetDeviceProperties(&p, dev));
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", p.name, p.major, p.minor, p.multiProcessorCount,
              double(p.totalGlobalMem) / (1 << 30));
}

}  // namespace lab
