// Kernel lab: softmax over the last axis of x [rows, n] (attention probabilities). fp32. The op in
// native/ops/norm.cu adds an additive mask and the causal limit to version 2; the lab times the
// core without them.
//
// Versions:
//   1  one thread per row, three passes (max, sum, write): the plainest correct kernel
//      (uncoalesced: lanes read addresses n floats apart).
//   2  one warp per row, one pass keeping a running max and rescaled sum (online softmax), one pass
//      to write: coalesced, no shared memory. This is softmax_fwd_kernel in native/ops/norm.cu.
//   3  one warp per row holding the row in registers (n <= 32 * V): x is read once, exp computed
//      once per element.
//
// Build: make -C native/cuda/dev softmax_forward      Run: native/cuda/dev/build/softmax_forward [version]
#include "lab.cuh"

namespace {

void softmax_cpu(const float* x, float* y, int rows, int n) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + size_t(r) * n;
    double m = -INFINITY, s = 0;
    for (int j = 0; j < n; j++) m = xr[j] > m ? xr[j] : m;
    for (int j = 0; j < n; j++) s += std::exp(double(xr[j]) - m);
    for (int j = 0; j < n; j++) y[size_t(r) * n + j] = float(std::exp(double(xr[j]) - m) / s);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// --- version 1 ---
__global__ void softmax_v1(const float* x, float* y, int rows, int n) {
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float* xr = x + size_t(r) * n;
  float m = -INFINITY, s = 0.f;
  for (int j = 0; j < n; j++) m = fmaxf(m, xr[j]);
  for (int j = 0; j < n; j++) s += expf(xr[j] - m);
  for (int j = 0; j < n; j++) y[size_t(r) * n + j] = expf(xr[j] - m) / s;
}

// --- version 2 (native/ops/norm.cu, without mask and causal limit) ---
__global__ void softmax_v2(const float* x, float* y, int rows, int n) {
  int lane = threadIdx.x & 31;
  int warps = gridDim.x * (blockDim.x >> 5);
  for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const float* xr = x + size_t(r) * n;
    float m = -INFINITY, s = 0.f;
    for (int j = lane; j < n; j += 32) {
      float v = xr[j];
      if (v > m) {
        s = s * expf(m - v) + 1.f;
        m = v;
      } else {
        s += expf(v - m);
      }
    }
    float M = warp_max(m);
    s = m == -INFINITY ? 0.f : s * expf(m - M);
    float inv = 1.f / warp_sum(s);
    for (int j = lane; j < n; j += 32) y[size_t(r) * n + j] = expf(xr[j] - M) * inv;
  }
}

// --- version 3: the row in V registers per lane ---
template <int V>
__global__ void softmax_v3(const float* x, float* y, int rows, int n) {
  int lane = threadIdx.x & 31;
  int warps = gridDim.x * (blockDim.x >> 5);
  for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const float* xr = x + size_t(r) * n;
    float v[V];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < V; k++) {
      int j = lane + 32 * k;
      v[k] = j < n ? __ldcs(xr + j) : -INFINITY;
      m = fmaxf(m, v[k]);
    }
    m = warp_max(m);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < V; k++) {
      v[k] = expf(v[k] - m);  // padding: exp(-inf) = 0
      s += v[k];
    }
    float inv = 1.f / warp_sum(s);
#pragma unroll
    for (int k = 0; k < V; k++) {
      int j = lane + 32 * k;
      if (j < n) __stcs(y + size_t(r) * n + j, v[k] * inv);
    }
  }
}

bool launch(int version, const float* x, float* y, int rows, int n, int sms) {
  const int threads = 256;
  int warp_blocks = (rows + 7) / 8;
  if (warp_blocks > sms * 32) warp_blocks = sms * 32;
  switch (version) {
    case 1: softmax_v1<<<(rows + threads - 1) / threads, threads>>>(x, y, rows, n); return true;
    case 2: softmax_v2<<<warp_blocks, threads>>>(x, y, rows, n); return true;
    case 3:
      if (n <= 32) softmax_v3<1><<<warp_blocks, threads>>>(x, y, rows, n);
      else if (n <= 64) softmax_v3<2><<<warp_blocks, threads>>>(x, y, rows, n);
      else if (n <= 128) softmax_v3<4><<<warp_blocks, threads>>>(x, y, rows, n);
      else if (n <= 256) softmax_v3<8><<<warp_blocks, threads>>>(x, y, rows, n);
      else if (n <= 512) softmax_v3<16><<<warp_blocks, threads>>>(x, y, rows, n);
      else if (n <= 1024) softmax_v3<32><<<warp_blocks, threads>>>(x, y, rows, n);
      else return false;
      return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  int only = argc > 1 ? std::atoi(argv[1]) : 0;
  lab::print_device();
  int sms = 0;
  LAB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // Attention rows of the text tower [256 x 8 heads x 77, 77], ViT-B/32 [256 x 12 x 50, 50], and a
  // long row for the register-limit case.
  const int shapes[][2] = {{256 * 8 * 77, 77}, {256 * 12 * 50, 50}, {4096, 1000}};
  bool all_ok = true;
  for (auto& sh : shapes) {
    int rows = sh[0], n = sh[1];
    std::printf("rows = %d, n = %d\n", rows, n);
    auto x = lab::random_floats(size_t(rows) * n, 7, -8.f, 8.f);
    std::vector<float> y(x.size());
    softmax_cpu(x.data(), y.data(), rows, n);
    float* dx = lab::to_device(x);
    float* dy = nullptr;
    LAB_CHECK(cudaMalloc(&dy, y.size() * sizeof(float)));
    double bytes = double(rows) * n * 8;
    for (int v = 1; v <= 3; v++) {
      if (only && v != only) continue;
      LAB_CHECK(cudaMemset(dy, 0xff, y.size() * sizeof(float)));
      if (!launch(v, dx, dy, rows, n, sms)) {
        std::printf("version %d: shape not supported\n", v);
        continue;
      }
      LAB_CHECK(cudaGetLastError());
      LAB_CHECK(cudaDeviceSynchronize());
      std::printf("version %d\n", v);
      all_ok &= lab::validate("y", y, dy, 1e-7f, 1e-5f);
      float ms = lab::time_ms(50, [&] { launch(v, dx, dy, rows, n, sms); });
      char name[64];
      std::snprintf(name, sizeof name, "softmax_forward v%d", v);
      lab::report(name, ms, bytes);
    }
    LAB_CHECK(cudaFree(dx));
    LAB_CHECK(cudaFree(dy));
  }
  std::printf(all_ok ? "all versions agree with the CPU reference\n" : "MISMATCH\n");
  return all_ok ? 0 : 1;
}
