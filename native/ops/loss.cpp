// CPU cross-entropy over the rows of [N,C] logits with int32 class labels: per-row loss and
// log-sum-exp forward, softmax-minus-one-hot backward. Labels are checked before any work, so a
// bad label throws on the calling thread.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../cpu/threadpool.h"
#include "../tensor.h"
#include "rowops.h"
#include "vexp.h"

namespace tsclip {
namespace {

using rowops::require_f32;
using rowops::require_shape;

struct Dims {
  int64_t N, C;
};

Dims check_logits_labels(const OpArgs& a, const TensorRef& logits, const TensorRef& labels) {
  require_f32(a, logits, "logits");
  a.require(logits.ndim == 2 && logits.contiguous(),
            "logits must be a contiguous [N,C] tensor, got " + logits.describe());
  const Dims d{logits.shape[0], logits.shape[1]};
  a.require(labels.defined() && labels.dtype == DType::I32 && labels.ndim == 1 && labels.shape[0] == d.N &&
                labels.contiguous(),
            "labels must be int32[" + std::to_string(d.N) + "] for logits " + logits.describe() + ", got " +
                (labels.defined() ? labels.describe() : "nothing"));
  const int32_t* pl = labels.ptr<int32_t>();
  for (int64_t i = 0; i < d.N; i++)
    a.require(pl[i] >= 0 && pl[i] < d.C, "label " + std::to_string(pl[i]) + " at row " + std::to_string(i) +
                                             " is out of range for " + std::to_string(d.C) + " classes");
  return d;
}

int64_t row_grain(int64_t c) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(c, 1)); }

}  // namespace

void cpu_cross_entropy_fwd(const OpArgs& a) {
  const TensorRef &logits = a.input(0), &labels = a.input(1);
  const TensorRef &loss = a.output(0), &lse = a.output(1);
  const Dims d = check_logits_labels(a, logits, labels);
  a.require(d.C > 0, "logits " + logits.describe() + " has no classes");
  require_shape(a, loss, "loss", {d.N});
  require_shape(a, lse, "lse", {d.N});
  const float* px = logits.ptr<float>();
  const int32_t* pl = labels.ptr<int32_t>();
  float *ploss = loss.ptr<float>(), *plse = lse.ptr<float>();
  parallel_for(d.N, row_grain(d.C), [&](int64_t r0, int64_t r1) {
    std::vector<float> e(static_cast<size_t>(d.C));
    for (int64_t i = r0; i < r1; i++) {
      const float* xr = px + i * d.C;
      const float m = rowops::max(xr, d.C);
      exp_affine(xr, 1.0f, m, e.data(), d.C);
      const float l = m + std::log(rowops::sum(e.data(), d.C));
      plse[i] = l;
      ploss[i] = l - xr[pl[i]];
    }
  });
}

void cpu_cross_entropy_bwd(const OpArgs& a) {
  const TensorRef &logits = a.input(0), &labels = a.input(1), &lse = a.input(2), &dloss = a.input(3);
  const TensorRef& dlogits = a.output(0);
  const Dims d = check_logits_labels(a, logits, labels);
  require_shape(a, lse, "lse", {d.N});
  require_f32(a, dloss, "dloss");
  a.require(dloss.ndim == 1 && dloss.shape[0] == d.N,
            "dloss must be [" + std::to_string(d.N) + "], got " + dloss.describe());
  require_shape(a, dlogits, "dlogits", {d.N, d.C});
  const float *px = logits.ptr<float>(), *plse = lse.ptr<float>(), *pdl = dloss.ptr<float>();
  const int64_t sdl = dloss.strides[0];  // 0 when one upstream gradient is broadcast to every row
  const int32_t* pl = labels.ptr<int32_t>();
  float* pdx = dlogits.ptr<float>();
  parallel_for(d.N, row_grain(d.C), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      const float *xr = px + i * d.C, l = plse[i], g = pdl[i * sdl];
      float* dr = pdx + i * d.C;
      exp_affine(xr, 1.0f, l, dr, d.C);
      for (int64_t j = 0; j < d.C; j++) dr[j] *= g;
      dr[pl[i]] -= g;
    }
  });
}

}  // namespace tsclip
