// Kernel lab: one AdamW step over a flat fp32 parameter, in PyTorch's order of operations
// (torch.optim.AdamW): p *= 1 - lr*wd; m += (1-b1)(g - m); v = b2 v + (1-b2) g^2;
// p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
// Memory-bound: 4 arrays read, 3 written.
//
// Versions:
//   1  one thread per element, scalar loads: the plainest correct kernel.
//   2  grid-stride float4 loads and stores, a scalar tail kernel for n % 4: fewer, wider memory
//      transactions. This is adamw_vec4_kernel + adamw_scalar_kernel in native/ops/optim.cu.
//
// Build: make -C native/cuda/dev adamw      Run: native/cuda/dev/build/adamw [version]
#include "lab.cuh"

namespace {

struct Hyper {
  float one_m_b1, beta2, one_m_b2, eps, decay, step_size, sqrt_bc2;
};

Hyper make_hyper(double lr, double b1, double b2, double eps, double wd, int step) {
  double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  return Hyper{float(1 - b1), float(b2), float(1 - b2), float(eps), float(1 - lr * wd), float(lr / bc1),
               float(std::sqrt(bc2))};
}

void adamw_cpu(const float* g, float* p, float* m, float* v, size_t n, double lr, double b1, double b2, double eps,
               double wd, int step) {
  double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  for (size_t i = 0; i < n; i++) {
    double pp = p[i] * (1 - lr * wd);
    double mm = m[i] + (1 - b1) * (g[i] - m[i]);
    double vv = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
    pp -= lr / bc1 * mm / (std::sqrt(vv) / std::sqrt(bc2) + eps);
    p[i] = float(pp);
    m[i] = float(mm);
    v[i] = float(vv);
  }
}

__device__ __forceinline__ void update(const Hyper& h, float g, float& p, float& m, float& v) {
  m = m + h.one_m_b1 * (g - m);
  v = v * h.beta2 + h.one_m_b2 * g * g;
  p = p * h.decay - h.step_size * (m / (sqrtf(v) / h.sqrt_bc2 + h.eps));
}

// --- version 1 ---
__global__ void adamw_v1(const float* g, float* p, float* m, float* v, size_t n, Hyper h) {
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float pp = p[i], mm = m[i], vv = v[i];
  update(h, g[i], pp, mm, vv);
  p[i] = pp;
  m[i] = mm;
  v[i] = vv;
}

// --- version 2 (native/ops/optim.cu) ---
__global__ void adamw_v2(const float4* __restrict__ g, float4* __restrict__ p, float4* __restrict__ m,
                         float4* __restrict__ v, size_t n4, Hyper h) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += size_t(gridDim.x) * blockDim.x) {
    float4 gg = g[i], pp = p[i], mm = m[i], vv = v[i];
    update(h, gg.x, pp.x, mm.x, vv.x);
    update(h, gg.y, pp.y, mm.y, vv.y);
    update(h, gg.z, pp.z, mm.z, vv.z);
    update(h, gg.w, pp.w, mm.w, vv.w);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}
__global__ void adamw_v2_tail(const float* g, float* p, float* m, float* v, size_t begin, size_t n, Hyper h) {
  size_t i = begin + size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float pp = p[i], mm = m[i], vv = v[i];
  update(h, g[i], pp, mm, vv);
  p[i] = pp;
  m[i] = mm;
  v[i] = vv;
}

void launch(int version, const float* g, float* p, float* m, float* v, size_t n, Hyper h, int sms) {
  const int threads = 256;
  if (version == 1) {
    adamw_v1<<<unsigned((n + threads - 1) / threads), threads>>>(g, p, m, v, n, h);
    return;
  }
  size_t n4 = n / 4;
  size_t blocks = (n4 + threads - 1) / threads;
  if (blocks > size_t(sms) * 16) blocks = size_t(sms) * 16;
  if (n4) adamw_v2<<<unsigned(blocks), threads>>>(reinterpret_cast<const float4*>(g), reinterpret_cast<float4*>(p),
                                                  reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v), n4, h);
  if (n4 * 4 < n) adamw_v2_tail<<<1, threads>>>(g, p, m, v, n4 * 4, n, h);
}

}  // namespace

int main(int argc, char** argv) {
  int only = argc > 1 ? std::atoi(argv[1]) : 0;
  lab::print_device();
  int sms = 0;
  LAB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t n = (size_t(1) << 25) + 3;  // ~33.5M parameters; the +3 exercises the tail
  const double lr = 1e-3, b1 = 0.9, b2 = 0.98, eps = 1e-6, wd = 0.2;
  const int steps = 3;
  auto g0 = lab::random_floats(n, 11, -1.f, 1.f);
  auto p0 = lab::random_floats(n, 12, -0.1f, 0.1f);
  std::vector<float> p = p0, m(n, 0.f), v(n, 0.f);
  for (int s = 1; s <= steps; s++) adamw_cpu(g0.data(), p.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, s);
  std::vector<float> zeros(n, 0.f);
  float* dg = lab::to_device(g0);
  bool all_ok = true;
  for (int ver = 1; ver <= 2; ver++) {
    if (only && ver != only) continue;
    float *dp = lab::to_device(p0), *dm = lab::to_device(zeros), *dv = lab::to_device(zeros);
    for (int s = 1; s <= steps; s++) launch(ver, dg, dp, dm, dv, n, make_hyper(lr, b1, b2, eps, wd, s), sms);
    LAB_CHECK(cudaGetLastError());
    LAB_CHECK(cudaDeviceSynchronize());
    std::printf("version %d (%d steps)\n", ver, steps);
    bool ok = lab::validate("param", p, dp, 1e-7f, 1e-5f);
    ok &= lab::validate("m", m, dm, 1e-7f, 1e-5f);
    ok &= lab::validate("v", v, dv, 1e-9f, 1e-5f);
    all_ok &= ok;
    Hyper h = make_hyper(lr, b1, b2, eps, wd, 10);
    float ms = lab::time_ms(20, [&] { launch(ver, dg, dp, dm, dv, n, h, sms); });
    char name[64];
    std::snprintf(name, sizeof name, "adamw v%d", ver);
    lab::report(name, ms, double(n) * 4 * 7);
    for (float* q : {dp, dm, dv}) LAB_CHECK(cudaFree(q));
  }
  LAB_CHECK(cudaFree(dg));
  std::printf(all_ok ? "all versions agree with the CPU reference\n" : "MISMATCH\n");
  return all_ok ? 0 : 1;
}
