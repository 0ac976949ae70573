// CPU AdamW step for one parameter tensor, in PyTorch's order of operations (torch.optim.AdamW,
// single-tensor path): decoupled decay p *= 1 - lr*wd; m += (1-b1)(g - m); v = b2 v + (1-b2) g^2;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), with bc = 1 - beta^step from the caller.
#include <cmath>
#include <string>

#include "../cpu/threadpool.h"
#include "../tensor.h"

namespace tsclip {

void cpu_adamw(const OpArgs& a) {
  const TensorRef& grad = a.input(0);
  const TensorRef &param = a.output(0), &m = a.output(1), &v = a.output(2);
  for (const TensorRef* t : {&grad, &param, &m, &v}) {
    const char* name = t == &grad ? "grad" : t == &param ? "param" : t == &m ? "m" : "v";
    a.require(t->defined(), std::string(name) + " is missing");
    a.require(t->dtype == DType::F32, std::string(name) + " must be float32, got " + t->describe());
    a.require(t->contiguous(), std::string(name) + " " + t->describe() + " must be contiguous");
    a.require(t->numel() == param.numel(),
              std::string(name) + " " + t->describe() + " does not match param " + param.describe());
  }
  const double lr = a.f(0), b1 = a.f(1), b2 = a.f(2), eps = a.f(3), wd = a.f(4), bc1 = a.f(5), bc2 = a.f(6);
  a.require(bc1 > 0 && bc2 > 0, "bias corrections must be positive, got " + std::to_string(bc1) + " and " +
                                    std::to_string(bc2));
  const float decay = float(1.0 - lr * wd), one_m_b1 = float(1.0 - b1), fb2 = float(b2),
              one_m_b2 = float(1.0 - b2), step = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2)),
              feps = float(eps);
  const float* g = grad.ptr<float>();
  float *p = param.ptr<float>(), *pm = m.ptr<float>(), *pv = v.ptr<float>();
  parallel_for(param.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float gi = g[i];
      const float mi = pm[i] + one_m_b1 * (gi - pm[i]);
      const float vi = pv[i] * fb2 + one_m_b2 * gi * gi;
      pm[i] = mi;
      pv[i] = vi;
      p[i] = p[i] * decay - step * (mi / (std::sqrt(vi) / bc2_sqrt + feps));
    }
  });
}

}  // namespace tsclip
