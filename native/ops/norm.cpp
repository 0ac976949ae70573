// CPU kernels for layer norm, L2 normalisation and softmax over the last dimension of row-major
// [rows, D] data. Rows run in parallel; the per-row loops are written so that -O3 vectorises them.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../cpu/threadpool.h"
#include "../tensor.h"
#include "rowops.h"
#include "vexp.h"

namespace tsclip {
namespace {

using rowops::require_f32;
using rowops::require_shape;

// Rows per task: about 16K elements, at least one row.
int64_t row_grain(int64_t d) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(d, 1)); }

// A fixed split of `rows` for kernels that reduce across rows: the same shapes always give the
// same partial sums, whatever the thread count.
int64_t reduce_chunks(int64_t rows) { return std::max<int64_t>(1, std::min<int64_t>(16, rows / 64)); }

}  // namespace

void cpu_layernorm_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &w = a.input(1), &b = a.input(2);
  const TensorRef& y = a.output(0);
  // mean and rstd are for the backward; inference passes neither.
  const TensorRef* mean = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* rstd = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  // The residual form (x + r, then its norm) is the transformer block's: one pass instead of two ops.
  const TensorRef* r = a.in.size() > 3 && a.in[3].defined() ? &a.in[3] : nullptr;
  const TensorRef* s = a.out.size() > 3 && a.out[3].defined() ? &a.out[3] : nullptr;
  require_f32(a, x, "x");
  a.require(x.ndim == 2 && x.contiguous(), "x must be a contiguous [rows,D] tensor, got " + x.describe());
  const int64_t rows = x.shape[0], D = x.shape[1];
  require_shape(a, w, "w", {D});
  require_shape(a, b, "b", {D});
  require_shape(a, y, "y", {rows, D});
  if (mean) require_shape(a, *mean, "mean", {rows});
  if (rstd) require_shape(a, *rstd, "rstd", {rows});
  a.require(!r == !s, "the residual r and the sum s come together");
  if (r) {
    require_shape(a, *r, "r", {rows, D});
    require_shape(a, *s, "s", {rows, D});
  }
  const float eps = float(a.f(0));
  const float *px = x.ptr<float>(), *pw = w.ptr<float>(), *pb = b.ptr<float>();
  const float* pr = r ? r->ptr<float>() : nullptr;
  float *py = y.ptr<float>(), *pm = mean ? mean->ptr<float>() : nullptr, *prs = rstd ? rstd->ptr<float>() : nullptr;
  float* ps = s ? s->ptr<float>() : nullptr;
  parallel_for(rows, row_grain(D), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      const float* xr = px + i * D;
      if (pr) {  // the sum is normalised from where it was written (still in L1)
        float* sr = ps + i * D;
        const float* rr = pr + i * D;
        for (int64_t j = 0; j < D; j++) sr[j] = xr[j] + rr[j];
        xr = sr;
      }
      float* yr = py + i * D;
      // Two passes (mean, then squared deviations) stay accurate when |mean| >> std.
      const float mu = D ? rowops::sum(xr, D) / float(D) : 0.f;
      const float var = D ? rowops::sq_dev(xr, mu, D) / float(D) : 0.f;
      const float rs = 1.0f / std::sqrt(var + eps);
      for (int64_t j = 0; j < D; j++) yr[j] = (xr[j] - mu) * rs * pw[j] + pb[j];
      if (pm) pm[i] = mu;
      if (prs) prs[i] = rs;
    }
  });
}

void cpu_layernorm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1), &w = a.input(2), &mean = a.input(3), &rstd = a.input(4);
  const TensorRef& dx = a.output(0);
  const TensorRef* dw = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* db = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  require_f32(a, x, "x");
  a.require(x.ndim == 2 && x.contiguous(), "x must be a contiguous [rows,D] tensor, got " + x.describe());
  const int64_t rows = x.shape[0], D = x.shape[1];
  require_shape(a, dy, "dy", {rows, D});
  require_shape(a, w, "w", {D});
  require_shape(a, mean, "mean", {rows});
  require_shape(a, rstd, "rstd", {rows});
  require_shape(a, dx, "dx", {rows, D});
  if (dw) require_shape(a, *dw, "dw", {D});
  if (db) require_shape(a, *db, "db", {D});
  const float *pdy = dy.ptr<float>(), *px = x.ptr<float>(), *pw = w.ptr<float>();
  const float *pm = mean.ptr<float>(), *pr = rstd.ptr<float>();
  float* pdx = dx.ptr<float>();

  const int64_t chunks = reduce_chunks(rows);
  // Partial dw, db per chunk, summed in chunk order below (deterministic).
  std::vector<float> part(size_t(chunks) * 2 * size_t(D), 0.f);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> g(static_cast<size_t>(D)), xh(static_cast<size_t>(D));
    for (int64_t c = c0; c < c1; c++) {
      float* pdw = part.data() + size_t(c) * 2 * D;
      float* pdb = pdw + D;
      for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; r++) {
        const float *xr = px + r * D, *dyr = pdy + r * D;
        float* dxr = pdx + r * D;
        const float mu = pm[r], rs = pr[r];
        for (int64_t j = 0; j < D; j++) {
          xh[j] = (xr[j] - mu) * rs;
          g[j] = dyr[j] * pw[j];
        }
        const float c1m = D ? rowops::sum(g.data(), D) / float(D) : 0.f;
        const float c2m = D ? rowops::dot(g.data(), xh.data(), D) / float(D) : 0.f;
        for (int64_t j = 0; j < D; j++) dxr[j] = rs * (g[j] - c1m - xh[j] * c2m);
        for (int64_t j = 0; j < D; j++) {
          pdw[j] += dyr[j] * xh[j];
          pdb[j] += dyr[j];
        }
      }
    }
  });
  float* odw = dw ? dw->ptr<float>() : nullptr;
  float* odb = db ? db->ptr<float>() : nullptr;
  for (int64_t c = 0; c < chunks; c++) {
    const float* pdw = part.data() + size_t(c) * 2 * D;
    if (odw) for (int64_t j = 0; j < D; j++) odw[j] += pdw[j];
    if (odb) for (int64_t j = 0; j < D; j++) odb[j] += pdw[D + j];
  }
}

void cpu_l2norm_fwd(const OpArgs& a) {
  const TensorRef& x = a.input(0);
  const TensorRef &y = a.output(0), &norm = a.output(1);
  require_f32(a, x, "x");
  a.require(x.ndim == 2 && x.contiguous(), "x must be a contiguous [rows,D] tensor, got " + x.describe());
  const int64_t rows = x.shape[0], D = x.shape[1];
  require_shape(a, y, "y", {rows, D});
  require_shape(a, norm, "norm", {rows});
  const float eps = float(a.f(0));
  const float* px = x.ptr<float>();
  float *py = y.ptr<float>(), *pn = norm.ptr<float>();
  parallel_for(rows, row_grain(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = px + r * D;
      float* yr = py + r * D;
      const float n = std::sqrt(rowops::dot(xr, xr, D));
      const float inv = 1.0f / std::max(n, eps);
      for (int64_t j = 0; j < D; j++) yr[j] = xr[j] * inv;
      pn[r] = n;  // the unclamped norm: the backward needs to know whether eps applied
    }
  });
}

// floats: eps (as in the forward; 0 when absent).
void cpu_l2norm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &y = a.input(1), &norm = a.input(2);
  const TensorRef& dx = a.output(0);
  require_f32(a, y, "y");
  a.require(y.ndim == 2 && y.contiguous(), "y must be a contiguous [rows,D] tensor, got " + y.describe());
  const int64_t rows = y.shape[0], D = y.shape[1];
  require_shape(a, dy, "dy", {rows, D});
  require_shape(a, norm, "norm", {rows});
  require_shape(a, dx, "dx", {rows, D});
  const float eps = a.floats.empty() ? 0.f : float(a.f(0));
  const float *pdy = dy.ptr<float>(), *py = y.ptr<float>(), *pn = norm.ptr<float>();
  float* pdx = dx.ptr<float>();
  parallel_for(rows, row_grain(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *dyr = pdy + r * D, *yr = py + r * D;
      float* dxr = pdx + r * D;
      const float n = pn[r];
      if (n >= eps && n > 0) {
        // y = x/|x|: dx = (dy - y <y,dy>) / |x|
        const float c = rowops::dot(dyr, yr, D), inv = 1.0f / n;
        for (int64_t j = 0; j < D; j++) dxr[j] = (dyr[j] - yr[j] * c) * inv;
      } else {
        // y = x/eps: a constant denominator
        const float inv = eps > 0 ? 1.0f / eps : 0.f;
        for (int64_t j = 0; j < D; j++) dxr[j] = dyr[j] * inv;
      }
    }
  });
}

void cpu_softmax_fwd(const OpArgs& a) {
  const TensorRef& x = a.input(0);
  const TensorRef* mask = a.in.size() > 1 && a.in[1].defined() ? &a.in[1] : nullptr;
  const TensorRef& y = a.output(0);
  require_f32(a, x, "x");
  a.require(x.ndim == 3 && x.contiguous(), "x must be a contiguous [batch,Sq,Sk] tensor, got " + x.describe());
  const int64_t batch = x.shape[0], Sq = x.shape[1], Sk = x.shape[2];
  require_shape(a, y, "y", {batch, Sq, Sk});
  int64_t ms0 = 0, ms1 = 0;
  if (mask) {
    require_f32(a, *mask, "mask");
    a.require(mask->ndim == 2 && mask->shape[0] == Sq && mask->shape[1] == Sk,
              "mask must be [" + std::to_string(Sq) + "," + std::to_string(Sk) + "] for x " +
                  x.describe() + ", got " + mask->describe());
    ms0 = mask->strides[0];
    ms1 = mask->strides[1];
  }
  const bool causal = a.i(0) != 0;
  const float* px = x.ptr<float>();
  const float* pmask = mask ? mask->ptr<float>() : nullptr;
  float* py = y.ptr<float>();
  parallel_for(batch * Sq, row_grain(Sk), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t i = r % Sq;
      const float* xr = px + r * Sk;
      float* yr = py + r * Sk;
      // Query i sees keys j <= i + Sk - Sq (the last query sees every key).
      const int64_t vis = causal ? std::min(Sk, std::max<int64_t>(0, i + Sk - Sq + 1)) : Sk;
      if (pmask) {
        const float* mr = pmask + i * ms0;
        for (int64_t j = 0; j < vis; j++) yr[j] = xr[j] + mr[j * ms1];
      } else {
        for (int64_t j = 0; j < vis; j++) yr[j] = xr[j];
      }
      const float m = rowops::max(yr, vis);
      if (vis == 0 || m == -INFINITY) {
        // Nothing visible: a row of zeros (and a zero gradient) rather than NaNs.
        for (int64_t j = 0; j < Sk; j++) yr[j] = 0.f;
        continue;
      }
      exp_affine(yr, 1.0f, m, yr, vis);
      const float inv = 1.0f / rowops::sum(yr, vis);
      for (int64_t j = 0; j < vis; j++) yr[j] *= inv;
      for (int64_t j = vis; j < Sk; j++) yr[j] = 0.f;
    }
  });
}

void cpu_softmax_bwd(const OpArgs& a) {
  const TensorRef &y = a.input(0), &dy = a.input(1);
  const TensorRef& dx = a.output(0);
  require_f32(a, y, "y");
  a.require(y.ndim >= 1 && y.contiguous(), "y must be contiguous, got " + y.describe());
  const int64_t Sk = y.shape[y.ndim - 1], rows = Sk ? y.numel() / Sk : 0;
  for (const TensorRef* t : {&dy, &dx}) {
    require_f32(a, *t, t == &dy ? "dy" : "dx");
    a.require(t->contiguous() && t->numel() == y.numel() && t->shape[t->ndim - 1] == Sk,
              std::string(t == &dy ? "dy " : "dx ") + t->describe() + " must be contiguous and shaped like y " +
                  y.describe());
  }
  const float *py = y.ptr<float>(), *pdy = dy.ptr<float>();
  float* pdx = dx.ptr<float>();
  parallel_for(rows, row_grain(Sk), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *yr = py + r * Sk, *dyr = pdy + r * Sk;
      float* dxr = pdx + r * Sk;
      const float c = rowops::dot(yr, dyr, Sk);
      for (int64_t j = 0; j < Sk; j++) dxr[j] = yr[j] * (dyr[j] - c);
    }
  });
}

}  // namespace tsclip
