// Kernel lab: layer norm forward over rows of x [N, C]: y = (x - mean) * rstd * w + b, with mean
// and rstd = 1/sqrt(var + eps) saved for the backward. fp32 throughout.
//
// Versions:
//   1  one thread per row, three passes: the plainest correct kernel (uncoalesced: lanes read
//      addresses C floats apart).
//   2  one warp per row, three passes that hit L1 after the first: coalesced, no shared memory or
//      barriers. This is the kernel in native/ops/norm.cu (layernorm_fwd_kernel).
//   3  one warp per row holding the row in registers (C a multiple of 128, at most 1024), float4
//      loads: x is read from memory once and the statistics need no re-reads.
//
// Build: make -C native/cuda/dev layernorm_forward      Run: native/cuda/dev/build/layernorm_forward [version]
#include <cstring>

#include "lab.cuh"

namespace {

constexpr float kEps = 1e-5f;

void layernorm_cpu(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int N, int C) {
  for (int r = 0; r < N; r++) {
    const float* xr = x + size_t(r) * C;
    double s = 0;
    for (int c = 0; c < C; c++) s += xr[c];
    double m = s / C, v = 0;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    double rs = 1.0 / std::sqrt(v / C + kEps);
    for (int c = 0; c < C; c++) y[size_t(r) * C + c] = float((xr[c] - m) * rs * w[c] + b[c]);
    mean[r] = float(m);
    rstd[r] = float(rs);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// --- version 1 ---
__global__ void layernorm_v1(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                             int N, int C) {
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= N) return;
  const float* xr = x + size_t(r) * C;
  float s = 0.f;
  for (int c = 0; c < C; c++) s += xr[c];
  float m = s / C, v = 0.f;
  for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
  float rs = 1.f / sqrtf(v / C + kEps);
  for (int c = 0; c < C; c++) y[size_t(r) * C + c] = (xr[c] - m) * rs * w[c] + b[c];
  mean[r] = m;
  rstd[r] = rs;
}

// --- version 2 (native/ops/norm.cu) ---
__global__ void layernorm_v2(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                             int N, int C) {
  int lane = threadIdx.x & 31;
  int warps = gridDim.x * (blockDim.x >> 5);
  for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < N; r += warps) {
    const float* xr = x + size_t(r) * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    float m = warp_sum(s) / C, v = 0.f;
    for (int c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
    float rs = 1.f / sqrtf(warp_sum(v) / C + kEps);
    for (int c = lane; c < C; c += 32) y[size_t(r) * C + c] = (xr[c] - m) * rs * w[c] + b[c];
    if (lane == 0) mean[r] = m, rstd[r] = rs;
  }
}

// --- version 3: V float4 per lane, C == 128 * V ---
template <int V>
__global__ void layernorm_v3(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                             int N, int C) {
  int lane = threadIdx.x & 31;
  int warps = gridDim.x * (blockDim.x >> 5);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  for (int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < N; r += warps) {
    const float4* xr = reinterpret_cast<const float4*>(x + size_t(r) * C);
    float4 v[V];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < V; k++) {
      v[k] = __ldcs(xr + lane + 32 * k);  // streamed: not re-read
      s += (v[k].x + v[k].y) + (v[k].z + v[k].w);
    }
    float m = warp_sum(s) / C, q = 0.f;
#pragma unroll
    for (int k = 0; k < V; k++) {
      float a = v[k].x - m, bb = v[k].y - m, c = v[k].z - m, d = v[k].w - m;
      q += (a * a + bb * bb) + (c * c + d * d);
    }
    float rs = 1.f / sqrtf(warp_sum(q) / C + kEps);
    float4* yr = reinterpret_cast<float4*>(y + size_t(r) * C);
#pragma unroll
    for (int k = 0; k < V; k++) {
      int i = lane + 32 * k;
      float4 ww = w4[i], bv = b4[i], o;
      o.x = (v[k].x - m) * rs * ww.x + bv.x;
      o.y = (v[k].y - m) * rs * ww.y + bv.y;
      o.z = (v[k].z - m) * rs * ww.z + bv.z;
      o.w = (v[k].w - m) * rs * ww.w + bv.w;
      __stcs(yr + i, o);
    }
    if (lane == 0) mean[r] = m, rstd[r] = rs;
  }
}

bool launch(int version, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int N,
            int C, int sms) {
  const int threads = 256, rows_per_block = threads / 32;
  int warp_blocks = (N + rows_per_block - 1) / rows_per_block;
  if (warp_blocks > sms * 32) warp_blocks = sms * 32;
  switch (version) {
    case 1:
      layernorm_v1<<<(N + threads - 1) / threads, threads>>>(x, w, b, y, mean, rstd, N, C);
      return true;
    case 2:
      layernorm_v2<<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C);
      return true;
    case 3:
      if (C % 128) return false;
      switch (C / 128) {
        case 1: layernorm_v3<1><<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C); return true;
        case 2: layernorm_v3<2><<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C); return true;
        case 4: layernorm_v3<4><<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C); return true;
        case 6: layernorm_v3<6><<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C); return true;
        case 8: layernorm_v3<8><<<warp_blocks, threads>>>(x, w, b, y, mean, rstd, N, C); return true;
      }
      return false;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  int only = argc > 1 ? std::atoi(argv[1]) : 0;
  lab::print_device();
  int sms = 0;
  LAB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // CLIP text tower (batch 256 x 77 tokens, width 512) and ViT-B/32 image tower (256 x 50, 768).
  const int shapes[][2] = {{256 * 77, 512}, {256 * 50, 768}};
  bool all_ok = true;
  for (auto& sh : shapes) {
    int N = sh[0], C = sh[1];
    std::printf("N = %d, C = %d\n", N, C);
    auto x = lab::random_floats(size_t(N) * C, 1, -3.f, 5.f);  // nonzero mean, as in a residual stream
    auto w = lab::random_floats(C, 2, 0.5f, 1.5f);
    auto b = lab::random_floats(C, 3, -0.5f, 0.5f);
    std::vector<float> y(size_t(N) * C), mean(N), rstd(N);
    layernorm_cpu(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C);
    float *dx = lab::to_device(x), *dw = lab::to_device(w), *db = lab::to_device(b);
    float *dy = nullptr, *dm = nullptr, *dr = nullptr;
    LAB_CHECK(cudaMalloc(&dy, y.size() * sizeof(float)));
    LAB_CHECK(cudaMalloc(&dm, N * sizeof(float)));
    LAB_CHECK(cudaMalloc(&dr, N * sizeof(float)));
    double bytes = double(N) * C * 8 + double(N) * 8 + double(C) * 8;
    for (int v = 1; v <= 3; v++) {
      if (only && v != only) continue;
      LAB_CHECK(cudaMemset(dy, 0xff, y.size() * sizeof(float)));  // NaN: unwritten outputs fail
      if (!launch(v, dx, dw, db, dy, dm, dr, N, C, sms)) {
        std::printf("version %d: shape not supported\n", v);
        continue;
      }
      LAB_CHECK(cudaGetLastError());
      LAB_CHECK(cudaDeviceSynchronize());
      std::printf("version %d\n", v);
      bool ok = lab::validate("y", y, dy, 1e-5f, 1e-4f);
      ok &= lab::validate("mean", mean, dm, 1e-5f, 1e-4f);
      ok &= lab::validate("rstd", rstd, dr, 1e-5f, 1e-4f);
      all_ok &= ok;
      float ms = lab::time_ms(50, [&] { launch(v, dx, dw, db, dy, dm, dr, N, C, sms); });
      char name[64];
      std::snprintf(name, sizeof name, "layernorm_forward v%d", v);
      lab::report(name, ms, bytes);
    }
    for (float* p : {dx, dw, db, dy, dm, dr}) LAB_CHECK(cudaFree(p));
  }
  std::printf(all_ok ? "all versions agree with the CPU reference\n" : "MISMATCH\n");
  return all_ok ? 0 : 1;
}
