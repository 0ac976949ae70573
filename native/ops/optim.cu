// CUDA AdamW step, one tensor per call, in PyTorch's order of operations (torch.optim.AdamW,
// single-tensor path), written as optim.cpp writes it: decoupled decay p *= 1 - lr*wd;
// m += (1-b1)(g - m); v = b2 v + (1-b2) g^2; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps), with
// bc1, bc2 = 1 - beta^step from the caller.
//
// Multi-tensor version (later): one launch for all parameters, with a device array of
// {param, grad, m, v, n} records and a block -> (tensor, chunk) table built once per model, as in
// PyTorch's multi_tensor_apply; it removes ~150 launches per CLIP step. The per-element math below
// (adamw_update) is meant to be shared by it.
#include <cstdint>

#include "../cuda/common.cuh"
#include "../tensor.h"

namespace tsclip {
namespace {

// 1 - beta is rounded once from double, as the CPU kernel does (float(1 - 0.98) != 1 - float(0.98)).
struct AdamW {
  float one_m_b1, beta2, one_m_b2, eps, decay;  // decay = 1 - lr * weight_decay
  float step_size;                     // lr / bc1
  float sqrt_bc2;
};

__device__ __forceinline__ void adamw_update(const AdamW& h, float g, float& p, float& m, float& v) {
  m = m + h.one_m_b1 * (g - m);
  v = v * h.beta2 + h.one_m_b2 * g * g;
  p = p * h.decay - h.step_size * (m / (sqrtf(v) / h.sqrt_bc2 + h.eps));
}

// float4 path: all four arrays 16-byte aligned; n4 = n / 4 vectors, the tail is done by scalar code.
__global__ void adamw_vec4_kernel(const float4* __restrict__ g, float4* __restrict__ p, float4* __restrict__ m,
                                  float4* __restrict__ v, int64_t n4, AdamW h) {
  CUDA_GRID_LOOP(i, n4) {
    float4 gg = g[i], pp = p[i], mm = m[i], vv = v[i];
    adamw_update(h, gg.x, pp.x, mm.x, vv.x);
    adamw_update(h, gg.y, pp.y, mm.y, vv.y);
    adamw_update(h, gg.z, pp.z, mm.z, vv.z);
    adamw_update(h, gg.w, pp.w, mm.w, vv.w);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}

// Scalar path over [begin, n): misaligned views, bf16 gradients, and the tail of the float4 path.
__global__ void adamw_scalar_kernel(const void* g, bool gb, float* p, float* m, float* v, int64_t begin, int64_t n,
                                    AdamW h) {
  CUDA_GRID_LOOP(k, n - begin) {
    int64_t i = begin + k;
    float pp = p[i], mm = m[i], vv = v[i];
    adamw_update(h, cuda::ldf(g, gb, i), pp, mm, vv);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void cuda_adamw(const OpArgs& a) {
  const TensorRef &g = a.input(0), &p = a.output(0), &m = a.output(1), &v = a.output(2);
  cuda::require_float(a, g, "grad");
  int64_t n = p.numel();
  for (const TensorRef* t : {&p, &m, &v})
    a.require(t->dtype == DType::F32 && t->contiguous() && t->numel() == n,
              "param, m and v must be contiguous float32 of one size, got " + p.describe() + ", " + m.describe() +
                  ", " + v.describe());
  a.require(g.contiguous() && g.numel() == n, "grad must be contiguous like the param " + p.describe() + ", got " +
                                                  g.describe());
  double lr = a.f(0), b1 = a.f(1), b2 = a.f(2), eps = a.f(3), wd = a.f(4), bc1 = a.f(5), bc2 = a.f(6);
  a.require(bc1 > 0 && bc2 > 0, "bias corrections must be positive (1 - beta^step with step >= 1)");
  if (n == 0) return;
  AdamW h{float(1.0 - b1), float(b2), float(1.0 - b2), float(eps), float(1.0 - lr * wd), float(lr / bc1),
          float(std::sqrt(bc2))};
  cudaStream_t st = cuda::stream();
  int64_t done = 0;
  if (g.dtype == DType::F32 && aligned16(g.data) && aligned16(p.data) && aligned16(m.data) && aligned16(v.data)) {
    int64_t n4 = n / 4;
    if (n4 > 0) {
      cuda::launch(adamw_vec4_kernel, cuda::grid_for(n4), cuda::kBlock, 0, st, static_cast<const float4*>(g.data),
          static_cast<float4*>(p.data), static_cast<float4*>(m.data), static_cast<float4*>(v.data), n4, h);
    }
    done = n4 * 4;
  }
  if (done < n) {
    cuda::launch(adamw_scalar_kernel, cuda::grid_for(n - done), cuda::kBlock, 0, st, g.data, cuda::is_bf16(g),
        p.ptr<float>(), m.ptr<float>(), v.ptr<float>(), done, n, h);
  }
}

}  // namespace tsclip
