// CUDA kernels for softmax cross-entropy over [N, C] logits with int32 labels.
// Forward: one warp per row keeps a running max and sum (online log-sum-exp), loss = lse - x[label].
// A label outside [0, C) is recorded in the runtime's flag (its row is left as NaN and nothing is
// read out of range) and the op throws after reading the flag back.
// Backward: one thread per logit, dlogits = (exp(x - lse) - [j == label]) * dloss; labels are
// checked the same way (a bad one is only ever compared, never used as an address).
#include <algorithm>
#include <climits>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"

namespace tsclip {
namespace {

using cuda::ldf;
using cuda::stf;

constexpr int64_t kNoError = INT64_MAX;

__global__ void cross_entropy_fwd_kernel(const void* x, bool xb, const int32_t* labels, float* loss, float* lse,
                                         int64_t N, int64_t C, int64_t* flag) {
  int lane = threadIdx.x & 31;
  int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < N; r += warps) {
    int64_t base = r * C;
    float m = -INFINITY, s = 0.f;
    for (int64_t j = lane; j < C; j += 32) {
      float v = ldf(x, xb, base + j);
      if (v == -INFINITY) continue;  // contributes exp(-inf) = 0
      if (v > m) {
        s = s * expf(m - v) + 1.f;
        m = v;
      } else {
        s += expf(v - m);
      }
    }
    float M = cuda::warp_max(m);
    s = m == -INFINITY ? 0.f : s * expf(m - M);
    float S = cuda::warp_sum(s);
    if (lane == 0) {
      float l = M + logf(S);  // all -inf: -inf + log 0 = -inf
      int32_t y = labels[r];
      lse[r] = l;
      if (y < 0 || y >= C) {
        loss[r] = NAN;
        atomicMin(reinterpret_cast<long long*>(flag), (long long)r);
      } else {
        loss[r] = l - ldf(x, xb, base + y);
      }
    }
  }
}

// dloss[r * sdl]: a stride of 0 broadcasts one upstream gradient to every row.
__global__ void cross_entropy_bwd_kernel(const void* x, bool xb, const int32_t* labels, const float* lse,
                                         const float* dloss, int64_t sdl, void* dx, bool dxb, int64_t N, int64_t C) {
  int64_t n = N * C;
  CUDA_GRID_LOOP(i, n) {
    int64_t r = i / C, j = i - r * C;
    float g = dloss[r * sdl];
    float p = expf(ldf(x, xb, i) - lse[r]);
    stf(dx, dxb, i, g * p - (labels[r] == j ? g : 0.f));
  }
}

__global__ void check_labels_kernel(const int32_t* labels, int64_t N, int64_t C, int64_t* flag) {
  CUDA_GRID_LOOP(r, N) {
    int32_t y = labels[r];
    if (y < 0 || y >= C) atomicMin(reinterpret_cast<long long*>(flag), (long long)r);
  }
}

// Reads the flag (synchronizing) and throws for the first bad label.
void throw_on_bad_label(const OpArgs& a, const TensorRef& labels, int64_t C) {
  int64_t bad = cuda::read_flag();
  if (bad == kNoError) return;
  int32_t v = 0;
  cuda::copy_to_host(&v, labels.ptr<int32_t>() + bad, sizeof v);
  a.fail("label " + std::to_string(v) + " at row " + std::to_string(bad) + " is out of range for " +
         std::to_string(C) + " classes");
}

void require_rows(const OpArgs& a, const TensorRef& t, DType dt, int64_t n, const char* what) {
  a.require(t.dtype == dt && t.contiguous() && t.numel() == n, std::string(what) + " must be contiguous " +
                                                                   dtype_name(dt) + " [" + std::to_string(n) +
                                                                   "], got " + t.describe());
}

}  // namespace

void cuda_cross_entropy_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &labels = a.input(1), &loss = a.output(0), &lse = a.output(1);
  cuda::require_float(a, x, "logits");
  a.require(x.ndim == 2 && x.contiguous(), "logits must be a contiguous [N, C] tensor, got " + x.describe());
  int64_t N = x.shape[0], C = x.shape[1];
  require_rows(a, labels, DType::I32, N, "labels");
  require_rows(a, loss, DType::F32, N, "loss");
  require_rows(a, lse, DType::F32, N, "lse");
  if (N == 0) return;
  a.require(C > 0, "logits need at least one class");
  cuda::reset_flag(kNoError);
  unsigned blocks = unsigned(std::min<int64_t>((N + 7) / 8, int64_t(cuda::sm_count()) * 32));
  cuda::launch(cross_entropy_fwd_kernel, blocks, 256, 0, cuda::stream(), x.data, cuda::is_bf16(x),
      labels.ptr<int32_t>(), loss.ptr<float>(), lse.ptr<float>(), N, C, cuda::flag_device());
  throw_on_bad_label(a, labels, C);  // synchronizes: a bad label must throw here
}

void cuda_cross_entropy_bwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &labels = a.input(1), &lse = a.input(2), &dloss = a.input(3);
  const TensorRef& dx = a.output(0);
  cuda::require_float(a, x, "logits");
  cuda::require_float(a, dx, "dlogits");
  a.require(x.ndim == 2 && x.contiguous(), "logits must be a contiguous [N, C] tensor, got " + x.describe());
  int64_t N = x.shape[0], C = x.shape[1];
  a.require(dx.contiguous() && dx.numel() == N * C, "dlogits must be contiguous like logits " + x.describe() +
                                                        ", got " + dx.describe());
  require_rows(a, labels, DType::I32, N, "labels");
  require_rows(a, lse, DType::F32, N, "lse");
  a.require(dloss.dtype == DType::F32 && dloss.ndim == 1 && dloss.shape[0] == N,
            "dloss must be float32 [" + std::to_string(N) + "], got " + dloss.describe());
  if (N == 0) return;
  cuda::reset_flag(kNoError);
  cuda::launch(check_labels_kernel, cuda::grid_for(N), cuda::kBlock, 0, cuda::stream(), labels.ptr<int32_t>(), N, C,
               cuda::flag_device());
  if (C > 0)
    cuda::launch(cross_entropy_bwd_kernel, cuda::grid_for(N * C), cuda::kBlock, 0, cuda::stream(), x.data,
                 cuda::is_bf16(x), labels.ptr<int32_t>(), lse.ptr<float>(), dloss.ptr<float>(), dloss.strides[0],
                 dx.data, cuda::is_bf16(dx), N, C);
  throw_on_bad_label(a, labels, C);  // synchronizes, as the CPU kernel checks before any work
}

}  // namespace tsclip
