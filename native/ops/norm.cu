// CUDA kernels for layer norm, L2 normalisation and softmax. Rows are handled one warp each: rows
// in CLIP are short (D <= ~2k, Sk <= a few hundred), so a warp reads a row from L1 for each of its
// passes and needs no shared memory or block barriers. Statistics are fp32 whatever the storage.
//
// layernorm_bwd: dx per row, and dw/db without global atomics: each warp accumulates its rows into
// its own slice of a per-block buffer (shared memory, or global scratch for very wide rows), the
// block sums its warps into a partial row, and a second kernel sums the partials in a fixed order
// and adds them to dw/db. The result is deterministic.
#include <algorithm>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"

namespace tsclip {
namespace {

using cuda::ldf;
using cuda::require_float;
using cuda::stf;
using cuda::warp_max;
using cuda::warp_sum;

constexpr int kWarps = 8;  // warps per block for the row kernels

// Warps per launch for `rows` rows: one per row up to what fills the device many times over.
unsigned row_blocks(int64_t rows) {
  int64_t blocks = (rows + kWarps - 1) / kWarps;
  int64_t cap = int64_t(cuda::sm_count()) * 32;
  return unsigned(std::max<int64_t>(1, std::min(blocks, cap)));
}

__device__ __forceinline__ int64_t warp_id_global() {
  return int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
}
__device__ __forceinline__ int64_t warps_total() { return int64_t(gridDim.x) * (blockDim.x >> 5); }

// ---------------------------------------------------------------------------------------------
// layernorm forward: mean, then the variance about it (two passes, no cancellation), then y.
// With a residual r, the row normalised is s = x + r, written to p.s in the first pass and read
// back by the same lane (as stored: rounded when s is bf16, as the CPU reads its float32 s).
struct LnFwd {
  const void* x; const void* w; const void* b; void* y;
  float* mean; float* rstd;
  bool xb, wb, bb, yb;
  const void* r = nullptr; void* s = nullptr;
  bool rb = false, sb = false;
};

__global__ void layernorm_fwd_kernel(LnFwd p, int64_t rows, int64_t D, float eps) {
  int lane = threadIdx.x & 31;
  const void* src = p.s ? p.s : p.x;
  const bool srcb = p.s ? p.sb : p.xb;
  for (int64_t r = warp_id_global(); r < rows; r += warps_total()) {
    int64_t base = r * D;
    float s = 0.f;
    if (p.s) {
      for (int64_t c = lane; c < D; c += 32) {
        stf(p.s, p.sb, base + c, ldf(p.x, p.xb, base + c) + ldf(p.r, p.rb, base + c));
        s += ldf(p.s, p.sb, base + c);
      }
    } else {
      for (int64_t c = lane; c < D; c += 32) s += ldf(p.x, p.xb, base + c);
    }
    s = warp_sum(s);
    float m = D ? s / float(D) : 0.f;  // D = 0: mean 0, variance 0, as on the CPU
    float v = 0.f;
    for (int64_t c = lane; c < D; c += 32) {
      float d = ldf(src, srcb, base + c) - m;
      v += d * d;
    }
    v = warp_sum(v);
    float rs = 1.f / sqrtf((D ? v / float(D) : 0.f) + eps);
    for (int64_t c = lane; c < D; c += 32) {
      float xh = (ldf(src, srcb, base + c) - m) * rs;
      stf(p.y, p.yb, base + c, xh * ldf(p.w, p.wb, c) + ldf(p.b, p.bb, c));
    }
    if (lane == 0 && p.mean) p.mean[r] = m;
    if (lane == 0 && p.rstd) p.rstd[r] = rs;
  }
}

// ---------------------------------------------------------------------------------------------
// layernorm backward, pass 1. Block b owns rows [b*chunk, (b+1)*chunk); warp w of it takes every
// W-th of those rows. `acc` is W slices of [dw | db] (2*D floats each), in shared memory when it
// fits, otherwise in `scratch` (per block). part[b] receives the block's [dw | db].
struct LnBwd {
  const void* dy; const void* x; const void* w; const float* mean; const float* rstd; void* dx;
  bool dyb, xb, wb, dxb;
};

__global__ void layernorm_bwd_kernel(LnBwd p, float* part, float* scratch, int64_t rows, int64_t D, int64_t chunk) {
  float* smem = cuda::dynamic_smem<float>();
  const int W = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* acc = scratch ? scratch + int64_t(blockIdx.x) * W * 2 * D : smem;
  float* dw_acc = acc + int64_t(warp) * 2 * D;
  float* db_acc = dw_acc + D;
  for (int64_t c = lane; c < D; c += 32) dw_acc[c] = db_acc[c] = 0.f;
  int64_t r0 = int64_t(blockIdx.x) * chunk, r1 = min(rows, r0 + chunk);
  for (int64_t r = r0 + warp; r < r1; r += W) {
    int64_t base = r * D;
    float m = p.mean[r], rs = p.rstd[r];
    float sg = 0.f, sgx = 0.f;  // sum of g = dy*w and of g*xhat over the row
    for (int64_t c = lane; c < D; c += 32) {
      float g = ldf(p.dy, p.dyb, base + c) * ldf(p.w, p.wb, c);
      float xh = (ldf(p.x, p.xb, base + c) - m) * rs;
      sg += g;
      sgx += g * xh;
    }
    sg = warp_sum(sg) / float(D);
    sgx = warp_sum(sgx) / float(D);
    for (int64_t c = lane; c < D; c += 32) {
      float d = ldf(p.dy, p.dyb, base + c);
      float xh = (ldf(p.x, p.xb, base + c) - m) * rs;
      stf(p.dx, p.dxb, base + c, (d * ldf(p.w, p.wb, c) - sg - xh * sgx) * rs);
      dw_acc[c] += d * xh;  // this lane alone touches column c of this warp's slice
      db_acc[c] += d;
    }
  }
  __syncthreads();
  float* out = part + int64_t(blockIdx.x) * 2 * D;
  for (int64_t c = threadIdx.x; c < 2 * D; c += blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < W; k++) s += acc[int64_t(k) * 2 * D + c];
    out[c] = s;
  }
}

// Pass 2: dw += sum over blocks of part[:, 0:D], db += part[:, D:2D], in block order (either may be null).
__global__ void layernorm_bwd_reduce_kernel(const float* part, int64_t blocks, int64_t D, void* dw, bool dwb,
                                            void* db, bool dbb) {
  CUDA_GRID_LOOP(c, 2 * D) {
    float s = 0.f;
    for (int64_t b = 0; b < blocks; b++) s += part[b * 2 * D + c];
    if (c < D) {
      if (dw) stf(dw, dwb, c, ldf(dw, dwb, c) + s);
    } else if (db) {
      stf(db, dbb, c - D, ldf(db, dbb, c - D) + s);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// L2 normalisation: y = x * (1 / max(|x|, eps)); the unclamped |x| is saved so that the backward
// knows whether eps applied.
__global__ void l2norm_fwd_kernel(const void* x, bool xb, void* y, bool yb, float* norm, int64_t rows, int64_t D,
                                  float eps) {
  int lane = threadIdx.x & 31;
  for (int64_t r = warp_id_global(); r < rows; r += warps_total()) {
    int64_t base = r * D;
    float s = 0.f;
    for (int64_t c = lane; c < D; c += 32) {
      float v = ldf(x, xb, base + c);
      s += v * v;
    }
    float n = sqrtf(warp_sum(s));
    float inv = 1.f / fmaxf(n, eps);
    for (int64_t c = lane; c < D; c += 32) stf(y, yb, base + c, ldf(x, xb, base + c) * inv);
    if (lane == 0) norm[r] = n;
  }
}

// Where |x| >= eps (and > 0): dx = (dy - y * <y, dy>) / |x|, the Jacobian of x/|x|. Elsewhere the
// forward divided by the constant eps: dx = dy / eps (0 when eps is 0).
__global__ void l2norm_bwd_kernel(const void* dy, bool dyb, const void* y, bool yb, const float* norm, void* dx,
                                  bool dxb, int64_t rows, int64_t D, float eps) {
  int lane = threadIdx.x & 31;
  for (int64_t r = warp_id_global(); r < rows; r += warps_total()) {
    int64_t base = r * D;
    float n = norm[r];
    if (n >= eps && n > 0.f) {
      float s = 0.f;
      for (int64_t c = lane; c < D; c += 32) s += ldf(y, yb, base + c) * ldf(dy, dyb, base + c);
      s = warp_sum(s);
      float inv = 1.f / n;
      for (int64_t c = lane; c < D; c += 32)
        stf(dx, dxb, base + c, (ldf(dy, dyb, base + c) - ldf(y, yb, base + c) * s) * inv);
    } else {
      float inv = eps > 0.f ? 1.f / eps : 0.f;
      for (int64_t c = lane; c < D; c += 32) stf(dx, dxb, base + c, ldf(dy, dyb, base + c) * inv);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// softmax over the last axis of [batch, Sq, Sk], plus an additive [Sq, Sk] mask (any strides, e.g. a
// broadcast view) and the causal
// limit j <= i + Sk - Sq. One pass keeps a running max and sum, the second writes. Fully masked
// rows give zeros rather than NaN.
__global__ void softmax_fwd_kernel(const void* x, bool xb, const void* mask, bool mb, int64_t ms0, int64_t ms1, void* y,
                                   bool yb, int64_t rows, int64_t Sq, int64_t Sk, bool causal) {
  int lane = threadIdx.x & 31;
  for (int64_t r = warp_id_global(); r < rows; r += warps_total()) {
    int64_t base = r * Sk, i = r % Sq;
    int64_t limit = causal ? min(Sk - 1, i + Sk - Sq) : Sk - 1;  // last visible key
    float m = -INFINITY, s = 0.f;
    for (int64_t j = lane; j <= limit; j += 32) {
      float v = ldf(x, xb, base + j);
      if (mask) v += ldf(mask, mb, i * ms0 + j * ms1);
      if (v == -INFINITY) continue;
      if (v > m) {
        s = s * expf(m - v) + 1.f;  // m = -inf on the first hit: exp(-inf) = 0
        m = v;
      } else {
        s += expf(v - m);
      }
    }
    float M = warp_max(m);
    s = m == -INFINITY ? 0.f : s * expf(m - M);
    float S = warp_sum(s);
    float inv = M == -INFINITY ? 0.f : 1.f / S;
    for (int64_t j = lane; j < Sk; j += 32) {
      float out = 0.f;
      if (j <= limit && M != -INFINITY) {
        float v = ldf(x, xb, base + j);
        if (mask) v += ldf(mask, mb, i * ms0 + j * ms1);
        out = expf(v - M) * inv;
      }
      stf(y, yb, base + j, out);
    }
  }
}

// dx = y * (dy - <y, dy>) per row.
__global__ void softmax_bwd_kernel(const void* y, bool yb, const void* dy, bool dyb, void* dx, bool dxb, int64_t rows,
                                   int64_t n) {
  int lane = threadIdx.x & 31;
  for (int64_t r = warp_id_global(); r < rows; r += warps_total()) {
    int64_t base = r * n;
    float s = 0.f;
    for (int64_t j = lane; j < n; j += 32) s += ldf(y, yb, base + j) * ldf(dy, dyb, base + j);
    s = warp_sum(s);
    for (int64_t j = lane; j < n; j += 32) {
      float yv = ldf(y, yb, base + j);
      stf(dx, dxb, base + j, yv * (ldf(dy, dyb, base + j) - s));
    }
  }
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  bool first = true;
  for (int64_t v : d) s += (first ? "" : ",") + std::to_string(v), first = false;
  return s + "]";
}

void require_contig(const OpArgs& a, const TensorRef& t, const char* what) {
  a.require(t.contiguous(), std::string(what) + " must be contiguous");
}
void require_f32_vec(const OpArgs& a, const TensorRef& t, int64_t n, const char* what) {
  a.require(t.dtype == DType::F32 && t.contiguous() && t.numel() == n,
            std::string(what) + " must be contiguous float32 with " + std::to_string(n) + " elements, got " +
                t.describe());
}

}  // namespace

void cuda_layernorm_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &w = a.input(1), &b = a.input(2);
  const TensorRef& y = a.output(0);
  // mean and rstd are for the backward; inference passes neither.
  const TensorRef* mean = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* rstd = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  require_float(a, x, "x");
  require_float(a, w, "weight");
  require_float(a, b, "bias");
  require_float(a, y, "y");
  a.require(x.ndim == 2, "x must be a [rows,D] tensor, got " + x.describe());
  int64_t rows = x.shape[0], D = x.shape[1];
  require_contig(a, x, "x");
  require_contig(a, y, "y");
  a.require(y.numel() == x.numel(), "y must match x " + x.describe() + ", got " + y.describe());
  a.require(w.numel() == D && b.numel() == D && w.contiguous() && b.contiguous(),
            "weight and bias must be contiguous [" + std::to_string(D) + "]");
  if (mean) require_f32_vec(a, *mean, rows, "mean");
  if (rstd) require_f32_vec(a, *rstd, rows, "rstd");
  const TensorRef* r = a.in.size() > 3 && a.in[3].defined() ? &a.in[3] : nullptr;
  const TensorRef* s = a.out.size() > 3 && a.out[3].defined() ? &a.out[3] : nullptr;
  a.require(!r == !s, "the residual r and the sum s come together");
  if (r) {
    require_float(a, *r, "r");
    require_float(a, *s, "s");
    require_contig(a, *r, "r");
    require_contig(a, *s, "s");
    a.require(r->numel() == x.numel() && s->numel() == x.numel(),
              "r and s must match x " + x.describe() + ", got " + r->describe() + " and " + s->describe());
  }
  if (rows == 0) return;
  LnFwd p{x.data, w.data, b.data, y.data, mean ? mean->ptr<float>() : nullptr, rstd ? rstd->ptr<float>() : nullptr,
          cuda::is_bf16(x), cuda::is_bf16(w), cuda::is_bf16(b), cuda::is_bf16(y)};
  if (r) p.r = r->data, p.s = s->data, p.rb = cuda::is_bf16(*r), p.sb = cuda::is_bf16(*s);
  cuda::launch(layernorm_fwd_kernel, row_blocks(rows), kWarps * 32, 0, cuda::stream(), p, rows, D, float(a.f(0)));
}

void cuda_layernorm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1), &w = a.input(2), &mean = a.input(3), &rstd = a.input(4);
  const TensorRef& dx = a.output(0);
  // dw and db are optional (undefined: not wanted).
  const TensorRef* dw = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* db = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  require_float(a, dy, "dy");
  require_float(a, x, "x");
  require_float(a, w, "weight");
  require_float(a, dx, "dx");
  a.require(x.ndim == 2, "x must be a [rows,D] tensor, got " + x.describe());
  int64_t rows = x.shape[0], D = x.shape[1];
  for (const TensorRef* t : {&dy, &x, &dx}) require_contig(a, *t, "dy, x and dx");
  a.require(dy.numel() == x.numel() && dx.numel() == x.numel(),
            "dy and dx must match x " + x.describe() + ", got " + dy.describe() + " and " + dx.describe());
  a.require(w.numel() == D && w.contiguous(),
            "weight must be contiguous [" + std::to_string(D) + "], got " + w.describe());
  for (const TensorRef* t : {dw, db}) {
    if (!t) continue;
    require_float(a, *t, t == dw ? "dw" : "db");
    a.require(t->numel() == D && t->contiguous(), std::string(t == dw ? "dw" : "db") + " must be contiguous [" +
                                                      std::to_string(D) + "], got " + t->describe());
  }
  require_f32_vec(a, mean, rows, "mean");
  require_f32_vec(a, rstd, rows, "rstd");
  if (rows == 0 || D == 0) return;

  // Shared memory holds W warp slices of 2*D floats within the default 48 KiB; wider rows use
  // global scratch with a smaller grid.
  const size_t kSmem = 48 * 1024;
  int W = int(std::min<int64_t>(kWarps, int64_t(kSmem / (size_t(D) * 2 * sizeof(float)))));
  bool shared = W >= 1;
  if (!shared) W = 4;
  int64_t max_blocks = int64_t(cuda::sm_count()) * (shared ? 4 : 1);
  int64_t blocks = std::max<int64_t>(1, std::min(max_blocks, (rows + 4 * W - 1) / (4 * W)));
  int64_t chunk = (rows + blocks - 1) / blocks;
  blocks = (rows + chunk - 1) / chunk;

  float* part = static_cast<float*>(cuda::alloc(size_t(blocks * 2 * D) * sizeof(float)));
  float* scratch = nullptr;
  try {
    if (!shared) scratch = static_cast<float*>(cuda::alloc(size_t(blocks * W * 2 * D) * sizeof(float)));
    size_t smem = shared ? size_t(W) * 2 * size_t(D) * sizeof(float) : 0;
    LnBwd p{dy.data, x.data, w.data, mean.ptr<float>(), rstd.ptr<float>(), dx.data,
            cuda::is_bf16(dy), cuda::is_bf16(x), cuda::is_bf16(w), cuda::is_bf16(dx)};
    cudaStream_t st = cuda::stream();
    cuda::launch(layernorm_bwd_kernel, unsigned(blocks), W * 32, smem, st, p, part, scratch, rows, D, chunk);
    if (dw || db) {
      cuda::launch(layernorm_bwd_reduce_kernel, cuda::grid_for(2 * D), cuda::kBlock, 0, st, part, blocks, D,
          dw ? dw->data : nullptr, dw && cuda::is_bf16(*dw), db ? db->data : nullptr, db && cuda::is_bf16(*db));
    }
  } catch (...) {
    cuda::free(part);
    cuda::free(scratch);
    throw;
  }
  cuda::free(part);  // stream-ordered reuse: only later work on the stream can get these blocks
  cuda::free(scratch);
}

void cuda_l2norm_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0), &norm = a.output(1);
  require_float(a, x, "x");
  require_float(a, y, "y");
  a.require(x.ndim == 2, "x must be a [rows,D] tensor, got " + x.describe());
  int64_t rows = x.shape[0], D = x.shape[1];
  require_contig(a, x, "x");
  require_contig(a, y, "y");
  a.require(y.numel() == x.numel(), "y must match x " + x.describe() + ", got " + y.describe());
  require_f32_vec(a, norm, rows, "norm");
  if (rows == 0 || D == 0) return;
  cuda::launch(l2norm_fwd_kernel, row_blocks(rows), kWarps * 32, 0, cuda::stream(), x.data, cuda::is_bf16(x), y.data,
      cuda::is_bf16(y), norm.ptr<float>(), rows, D, float(a.f(0)));
}

void cuda_l2norm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &y = a.input(1), &norm = a.input(2), &dx = a.output(0);
  require_float(a, dy, "dy");
  require_float(a, y, "y");
  require_float(a, dx, "dx");
  a.require(y.ndim == 2, "y must be a [rows,D] tensor, got " + y.describe());
  int64_t rows = y.shape[0], D = y.shape[1];
  for (const TensorRef* t : {&dy, &y, &dx}) require_contig(a, *t, "dy, y and dx");
  a.require(dy.numel() == y.numel() && dx.numel() == y.numel(),
            "dy and dx must match y " + y.describe() + ", got " + dy.describe() + " and " + dx.describe());
  require_f32_vec(a, norm, rows, "norm");
  if (rows == 0 || D == 0) return;
  const float eps = a.floats.empty() ? 0.f : float(a.f(0));  // as in the forward; 0 when absent
  cuda::launch(l2norm_bwd_kernel, row_blocks(rows), kWarps * 32, 0, cuda::stream(), dy.data, cuda::is_bf16(dy), y.data,
      cuda::is_bf16(y), norm.ptr<float>(), dx.data, cuda::is_bf16(dx), rows, D, eps);
}

void cuda_softmax_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  const TensorRef* mask = a.in.size() > 1 && a.in[1].defined() ? &a.in[1] : nullptr;
  require_float(a, x, "x");
  require_float(a, y, "y");
  a.require(x.ndim == 3, "x must be [batch, Sq, Sk], got " + x.describe());
  int64_t B = x.shape[0], Sq = x.shape[1], Sk = x.shape[2];
  require_contig(a, x, "x");
  require_contig(a, y, "y");
  a.require(y.numel() == x.numel(), "y must match x " + x.describe() + ", got " + y.describe());
  if (mask) {
    require_float(a, *mask, "mask");
    a.require(mask->ndim == 2 && mask->shape[0] == Sq && mask->shape[1] == Sk,
              "mask must be " + dims({Sq, Sk}) + " for x " + x.describe() + ", got " + mask->describe());
  }
  bool causal = a.i(0) != 0;
  int64_t rows = B * Sq;
  if (rows == 0 || Sk == 0) return;
  cuda::launch(softmax_fwd_kernel, row_blocks(rows), kWarps * 32, 0, cuda::stream(), x.data, cuda::is_bf16(x),
      mask ? mask->data : nullptr, mask && cuda::is_bf16(*mask), mask ? mask->strides[0] : 0,
      mask ? mask->strides[1] : 0, y.data, cuda::is_bf16(y), rows, Sq, Sk, causal);
}

void cuda_softmax_bwd(const OpArgs& a) {
  const TensorRef &y = a.input(0), &dy = a.input(1), &dx = a.output(0);
  require_float(a, y, "y");
  require_float(a, dy, "dy");
  require_float(a, dx, "dx");
  a.require(y.ndim >= 1, "y must have at least one dimension");
  for (const TensorRef* t : {&y, &dy, &dx}) require_contig(a, *t, "y, dy and dx");
  a.require(dy.numel() == y.numel() && dx.numel() == y.numel(),
            "dy and dx must match y " + y.describe() + ", got " + dy.describe() + " and " + dx.describe());
  int64_t n = y.size(-1), rows = n ? y.numel() / n : 0;
  if (rows == 0) return;
  cuda::launch(softmax_bwd_kernel, row_blocks(rows), kWarps * 32, 0, cuda::stream(), y.data, cuda::is_bf16(y), dy.data,
      cuda::is_bf16(dy), dx.data, cuda::is_bf16(dx), rows, n);
}

}  // namespace tsclip
