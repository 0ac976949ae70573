// Shared by the kernel lab programs (native/cuda/dev/*.cu): error checks that exit, seeded inputs,
// bf16 rounding on the host, validation |ref - gpu| <= atol + rtol*|ref| (NaN fails), and timing
// with CUDA events (warm-up, L2 flushed before every repetition, the median reported).
// Every program prints human-readable lines and machine-readable ones:
//   RESULT <lab> <case> <version> ms=<median> tflops=<..> gbs=<..> err=<..> ok=<0|1>
// which bench/gpu.sh collects into its table. The lab never links the addon: it includes the
// kernel headers of native/ops/ directly.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define LAB_CHECK(expr)                                                                          \
  do {                                                                                           \
    cudaError_t lab_err_ = (expr);                                                               \
    if (lab_err_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "CUDA error %s (%s) in %s at %s:%d\n", cudaGetErrorName(lab_err_),    \
                   cudaGetErrorString(lab_err_), #expr, __FILE__, __LINE__);                     \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

namespace lab {

inline int g_failures = 0;
inline bool g_quick = false;  // --quick: validation on small sizes only (for compute-sanitizer)

inline void parse_args(int argc, char** argv) {
  for (int i = 1; i < argc; i++)
    if (!std::strcmp(argv[i], "--quick")) g_quick = true;
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return uint32_t(s >> 11);
  }
  float uniform() { return (next() & 0xffffff) / float(0x1000000); }
  float normal() {
    float u = uniform() + 1e-7f, v = uniform();
    return std::sqrt(-2.f * std::log(u)) * std::cos(6.2831853f * v);
  }
};

inline uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf2f(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Host values (already rounded to the storage type) mirrored on the device.
struct DevBuf {
  bool bf = false;
  size_t n = 0;
  std::vector<float> host;  // values as stored
  void* dev = nullptr;
  DevBuf() = default;
  DevBuf(size_t count, bool bf16) : bf(bf16), n(count), host(count, 0.f) {
    LAB_CHECK(cudaMalloc(&dev, std::max<size_t>(bytes(), 16)));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (dev) cudaFree(dev);
  }
  size_t bytes() const { return n * (bf ? 2 : 4); }
  void set(size_t i, float v) { host[i] = bf ? bf2f(f2bf(v)) : v; }
  void fill_normal(Rng& r, float scale = 1.f) {
    for (size_t i = 0; i < n; i++) set(i, r.normal() * scale);
  }
  void upload() {
    if (bf) {
      std::vector<uint16_t> h(n);
      for (size_t i = 0; i < n; i++) h[i] = f2bf(host[i]);
      LAB_CHECK(cudaMemcpy(dev, h.data(), n * 2, cudaMemcpyHostToDevice));
    } else {
      LAB_CHECK(cudaMemcpy(dev, host.data(), n * 4, cudaMemcpyHostToDevice));
    }
  }
  // NaN everywhere (0xFF bytes are NaN in f32 and bf16): unwritten outputs fail validation
  void poison() { LAB_CHECK(cudaMemset(dev, 0xff, bytes())); }
  std::vector<float> download() const {
    std::vector<float> out(n);
    if (bf) {
      std::vector<uint16_t> h(n);
      LAB_CHECK(cudaMemcpy(h.data(), dev, n * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < n; i++) out[i] = bf2f(h[i]);
    } else {
      LAB_CHECK(cudaMemcpy(out.data(), dev, n * 4, cudaMemcpyDeviceToHost));
    }
    return out;
  }
};

// Compares ref[i] with got[idx[i]] (idx empty: element i). Prints one line; returns the max error
// relative to atol + rtol*|ref| (<= 1 passes).
inline double validate(const std::string& what, const std::vector<double>& ref, const std::vector<float>& got,
                       double atol, double rtol, const std::vector<size_t>& idx = {}) {
  double worst = 0, worst_abs = 0;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double g = got[idx.empty() ? i : idx[i]];
    const double e = std::fabs(ref[i] - g), lim = atol + rtol * std::fabs(ref[i]);
    const double q = e / lim;
    if (!(q <= 1.0)) {
      if (!bad) first = i;
      bad++;
    }
    if (!(q <= worst)) worst = q;
    if (!(e <= worst_abs)) worst_abs = e;
  }
  if (bad) {
    g_failures++;
    std::printf("  FAIL %-44s %zu of %zu off, max |err| %.3g; first #%zu ref %.6g got %.6g\n", what.c_str(), bad,
                ref.size(), worst_abs, first, ref[first], double(got[idx.empty() ? first : idx[first]]));
  } else {
    std::printf("  ok   %-44s max |err| %.3g (%.2f of tolerance) over %zu\n", what.c_str(), worst_abs, worst,
                ref.size());
  }
  std::fflush(stdout);
  return worst;
}

// Norm-wise check for bf16 results: ||ref - got|| <= rel ||ref||, and each |err| <= elem * rms(ref).
inline double validate_norm(const std::string& what, const std::vector<double>& ref, const std::vector<float>& got,
                            double rel, double elem, const std::vector<size_t>& idx = {}) {
  double se = 0, sr = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double g = got[idx.empty() ? i : idx[i]];
    se += (ref[i] - g) * (ref[i] - g);
    sr += ref[i] * ref[i];
  }
  const double r = std::sqrt(se / std::max(sr, 1e-300));
  if (!(r <= rel)) {
    g_failures++;
    std::printf("  FAIL %-44s relative error %.3g > %.3g\n", what.c_str(), r, rel);
    return r / rel;
  }
  const double rms = std::sqrt(sr / double(std::max<size_t>(ref.size(), 1)));
  char buf[64];
  std::snprintf(buf, sizeof buf, " (norm rel %.2g)", r);
  return validate(what + buf, ref, got, elem * rms + 1e-7, 0.0, idx);
}

// Times fn() (which launches on `s`): warm-up, then `reps` runs each after an L2 flush (untimed),
// median of the event-measured times, in ms.
struct Timer {
  cudaStream_t s = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  cudaEvent_t a, b;
  Timer() {
    LAB_CHECK(cudaStreamCreate(&s));
    int dev = 0, l2 = 0;
    LAB_CHECK(cudaGetDevice(&dev));
    LAB_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    flush_bytes = size_t(std::max(l2, 1 << 20)) * 2;
    LAB_CHECK(cudaMalloc(&flush, flush_bytes));
    LAB_CHECK(cudaEventCreate(&a));
    LAB_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaFree(flush);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaStreamDestroy(s);
  }
  template <class F>
  double median_ms(F&& fn, int reps = 20, int warmup = 3) {
    for (int i = 0; i < warmup; i++) fn();
    LAB_CHECK(cudaStreamSynchronize(s));
    LAB_CHECK(cudaGetLastError());
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
      LAB_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, s));
      LAB_CHECK(cudaEventRecord(a, s));
      fn();
      LAB_CHECK(cudaEventRecord(b, s));
      LAB_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      LAB_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    LAB_CHECK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

inline void result(const char* lab_name, const std::string& cas, const std::string& version, double ms, double flops,
                   double bytes, double err, bool ok) {
  const double tf = ms > 0 ? flops / (ms * 1e-3) / 1e12 : 0, gbs = ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0;
  std::printf("  %-10s %-28s %9.4f ms %8.1f TFLOP/s %8.1f GB/s  %s\n", version.c_str(), cas.c_str(), ms, tf, gbs,
              ok ? "" : "(INVALID)");
  std::printf("RESULT %s %s %s ms=%.5f tflops=%.2f gbs=%.1f err=%.3g ok=%d\n", lab_name, cas.c_str(), version.c_str(),
              ms, tf, gbs, err, ok ? 1 : 0);
  std::fflush(stdout);
}

inline void device_banner(const char* lab_name) {
  int dev = 0;
  cudaDeviceProp p{};
  LAB_CHECK(cudaGetDevice(&dev));
  LAB_CHECK(cudaGetDeviceProperties(&p, dev));
  std::printf("== %s on %s (sm_%d%d, %d SMs, %.0f MB L2)%s\n", lab_name, p.name, p.major, p.minor,
              p.multiProcessorCount, p.l2CacheSize / 1e6, g_quick ? " [quick]" : "");
}

inline int finish(const char* lab_name) {
  std::printf("== %s: %s\n", lab_name, g_failures ? "VALIDATION FAILED" : "all validations passed");
  std::printf("RESULT %s summary all ok=%d\n", lab_name, g_failures ? 0 : 1);
  return g_failures ? 1 : 0;
}

}  // namespace lab
