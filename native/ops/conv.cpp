// CPU convolution, batch norm and average pooling: NCHW float32, contiguous tensors.
//
// conv2d picks one of three layouts for its GEMMs:
//   patch   kernel == stride, no padding (the ViT patch embedding): patches never overlap, so the
//           unfold is a permutation of x into [N*L, C*k*k] rows and the whole batch is one GEMM.
//   pointwise  1x1, stride 1, no padding: x[n] is already the [C, H*W] column matrix.
//   im2col  everything else: per image, unfold x[n] into [C*kh*kw, rows*Wo] for a chunk of output
//           rows at a time (the chunk bounds the buffer for large images) and multiply.
// Images run in parallel (one GEMM per thread, inline) when the batch splits evenly over the
// threads; otherwise images run one after another and each GEMM uses the whole pool. Work is
// parallel at one level only: parallel_for nested inside parallel_for runs inline.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../cpu/sgemm.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"

namespace tsclip {
namespace {

// Per-thread scratch, grown on demand and kept: fresh multi-megabyte buffers per call would
// page-fault on every call.
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t floats) {
    if (floats > cap) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
      if (!p) throw std::bad_alloc();
      cap = floats;
    }
    return p;
  }
};
thread_local Scratch t_col, t_aux;

// Scratch for one use: this thread's kept buffer, or for very large needs (a whole batch of
// patches) a private allocation freed afterwards, so a one-off large call does not pin that
// memory for the life of the process.
class Lease {
 public:
  Lease(Scratch& kept, int64_t floats) {
    constexpr size_t kKeepFloats = size_t(16) << 20;  // 64 MiB
    const size_t n = size_t(std::max<int64_t>(floats, 1));
    if (n <= kKeepFloats) {
      p_ = kept.get(n);
    } else {
      own_ = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
      if (!own_) throw std::bad_alloc();
      p_ = own_;
    }
  }
  ~Lease() { std::free(own_); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  float* get() const { return p_; }

 private:
  float* p_ = nullptr;
  float* own_ = nullptr;
};

std::string dims(int64_t a, int64_t b, int64_t c, int64_t d) {
  return "[" + std::to_string(a) + "," + std::to_string(b) + "," + std::to_string(c) + "," +
         std::to_string(d) + "]";
}

void need_f32(const OpArgs& a, const TensorRef& t, const char* name, int ndim) {
  a.require(t.defined(), std::string(name) + " is missing");
  a.require(t.dtype == DType::F32, std::string(name) + " must be float32, got " + t.describe());
  a.require(t.ndim == ndim, std::string(name) + " must have " + std::to_string(ndim) +
                                " dimensions, got " + t.describe());
  a.require(t.contiguous(), std::string(name) + " " + t.describe() + " must be contiguous");
}

void need_vec(const OpArgs& a, const TensorRef& t, const char* name, int64_t n) {
  need_f32(a, t, name, 1);
  a.require(t.shape[0] == n, std::string(name) + " must be [" + std::to_string(n) + "], got " + t.describe());
}

// ------------------------------------------------------------------------------------------
// conv2d geometry and the unfold / fold helpers

struct Conv {
  int64_t N, C, H, W, O, kh, kw, s, p, Ho, Wo;
  int64_t L() const { return Ho * Wo; }
  int64_t K() const { return C * kh * kw; }
  bool pointwise() const { return kh == 1 && kw == 1 && s == 1 && p == 0; }
  bool patch() const { return kh == s && kw == s && p == 0 && s > 1; }
};

// Checks x-like [N,C,H,W], w-like [O,C,kh,kw] and y-like [N,O,Ho,Wo] against each other; the
// names are the op's own (dx, dw, dy in the backward ops).
Conv conv_geometry(const OpArgs& a, const TensorRef& x, const TensorRef& w, const TensorRef& y,
                   const char* xn, const char* wn, const char* yn) {
  need_f32(a, x, xn, 4);
  need_f32(a, w, wn, 4);
  need_f32(a, y, yn, 4);
  Conv g{x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[2], w.shape[3],
         a.i(0), a.i(1), 0, 0};
  a.require(g.s >= 1 && g.p >= 0, "stride must be >= 1 and padding >= 0, got stride " +
                                      std::to_string(g.s) + ", padding " + std::to_string(g.p));
  a.require(w.shape[1] == g.C, std::string(wn) + " " + w.describe() + " expects " +
                                   std::to_string(w.shape[1]) + " input channels, " + xn + " " +
                                   x.describe() + " has " + std::to_string(g.C));
  a.require(g.H + 2 * g.p >= g.kh && g.W + 2 * g.p >= g.kw,
            std::string("kernel ") + wn + " " + w.describe() + " is larger than the padded input " + xn +
                " " + x.describe());
  g.Ho = (g.H + 2 * g.p - g.kh) / g.s + 1;
  g.Wo = (g.W + 2 * g.p - g.kw) / g.s + 1;
  a.require(y.shape[0] == g.N && y.shape[1] == g.O && y.shape[2] == g.Ho && y.shape[3] == g.Wo,
            std::string(yn) + " is " + y.describe() + ", expected " + dims(g.N, g.O, g.Ho, g.Wo) +
                " for " + xn + " " + x.describe() + ", " + wn + " " + w.describe() + ", stride " +
                std::to_string(g.s) + ", padding " + std::to_string(g.p));
  return g;
}

// Output columns ox whose input column ox*s - p + k lies in [0, W): [lo, hi).
inline void valid_range(int64_t k, int64_t s, int64_t p, int64_t W, int64_t Wo, int64_t& lo, int64_t& hi) {
  const int64_t a = p - k;  // first ox needs ox*s >= a
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  const int64_t b = W - 1 + p - k;  // last ox needs ox*s <= b
  hi = b < 0 ? 0 : std::min(Wo, b / s + 1);
  lo = std::min(lo, hi);
}

// col[r, (oy-oy0)*Wo + ox] = x[c, oy*s - p + ky, ox*s - p + kx] (0 outside x), with
// r = (c*kh + ky)*kw + kx, for rows [r0, r1) and output rows [oy0, oy1) of one image.
void im2col(const Conv& g, const float* x, float* col, int64_t r0, int64_t r1, int64_t oy0, int64_t oy1) {
  const int64_t Lc = (oy1 - oy0) * g.Wo;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t kx = r % g.kw, ky = (r / g.kw) % g.kh, c = r / (g.kw * g.kh);
    int64_t lo, hi;
    valid_range(kx, g.s, g.p, g.W, g.Wo, lo, hi);
    float* dst = col + r * Lc;
    for (int64_t oy = oy0; oy < oy1; oy++, dst += g.Wo) {
      const int64_t iy = oy * g.s - g.p + ky;
      if (iy < 0 || iy >= g.H || lo == hi) {
        std::memset(dst, 0, sizeof(float) * g.Wo);
        continue;
      }
      const float* src = x + (c * g.H + iy) * g.W + kx - g.p;
      for (int64_t ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
      if (g.s == 1) {
        std::memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
      } else {
        for (int64_t ox = lo; ox < hi; ox++) dst[ox] = src[ox * g.s];
      }
      for (int64_t ox = hi; ox < g.Wo; ox++) dst[ox] = 0.0f;
    }
  }
}

// The adjoint of im2col for channels [c0, c1) and output rows [oy0, oy1): adds each col entry to
// the pixel it was read from. The first chunk (oy0 == 0) clears the planes first.
void col2im(const Conv& g, const float* col, float* dx, int64_t c0, int64_t c1, int64_t oy0, int64_t oy1) {
  const int64_t Lc = (oy1 - oy0) * g.Wo;
  for (int64_t c = c0; c < c1; c++) {
    float* plane = dx + c * g.H * g.W;
    if (oy0 == 0) std::memset(plane, 0, sizeof(float) * g.H * g.W);
    for (int64_t ky = 0; ky < g.kh; ky++)
      for (int64_t kx = 0; kx < g.kw; kx++) {
        int64_t lo, hi;
        valid_range(kx, g.s, g.p, g.W, g.Wo, lo, hi);
        const float* src = col + ((c * g.kh + ky) * g.kw + kx) * Lc;
        for (int64_t oy = oy0; oy < oy1; oy++, src += g.Wo) {
          const int64_t iy = oy * g.s - g.p + ky;
          if (iy < 0 || iy >= g.H) continue;
          float* dst = plane + iy * g.W + kx - g.p;
          if (g.s == 1) {
            for (int64_t ox = lo; ox < hi; ox++) dst[ox] += src[ox];
          } else {
            for (int64_t ox = lo; ox < hi; ox++) dst[ox * g.s] += src[ox];
          }
        }
      }
  }
}

// Patch layout: row (n, gy, gx) of [N*L, C*k*k] holds that patch's pixels in w's (c, ky, kx) order.
// Gathers the patch rows of grid rows q in [q0, q1), q = n*Ho + gy.
void patch_gather(const Conv& g, const float* x, float* rows, int64_t q0, int64_t q1) {
  const int64_t k = g.s, K = g.K();
  for (int64_t q = q0; q < q1; q++) {
    const int64_t n = q / g.Ho, gy = q % g.Ho;
    for (int64_t gx = 0; gx < g.Wo; gx++) {
      float* dst = rows + ((n * g.Ho + gy) * g.Wo + gx) * K;
      for (int64_t c = 0; c < g.C; c++)
        for (int64_t ky = 0; ky < k; ky++, dst += k)
          std::memcpy(dst, x + ((n * g.C + c) * g.H + gy * k + ky) * g.W + gx * k, sizeof(float) * k);
    }
  }
}

// Writes every pixel of dx for images [n0, n1): patch pixels from rows, the uncovered border
// (when H or W is not a multiple of the patch size) as 0.
void patch_scatter(const Conv& g, const float* rows, float* dx, int64_t n0, int64_t n1) {
  const int64_t k = g.s, K = g.K();
  for (int64_t n = n0; n < n1; n++)
    for (int64_t c = 0; c < g.C; c++)
      for (int64_t iy = 0; iy < g.H; iy++) {
        float* dst = dx + ((n * g.C + c) * g.H + iy) * g.W;
        const int64_t gy = iy / k, ky = iy % k;
        if (gy >= g.Ho) {
          std::memset(dst, 0, sizeof(float) * g.W);
          continue;
        }
        for (int64_t gx = 0; gx < g.Wo; gx++)
          std::memcpy(dst + gx * k, rows + ((n * g.Ho + gy) * g.Wo + gx) * K + (c * k + ky) * k,
                      sizeof(float) * k);
        for (int64_t ix = g.Wo * k; ix < g.W; ix++) dst[ix] = 0.0f;
      }
}

// dst[c, r] = src[r, c] for a rows x cols matrix, in cache-sized tiles.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  constexpr int64_t T = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += T)
    for (int64_t c0 = 0; c0 < cols; c0 += T) {
      const int64_t r1 = std::min(rows, r0 + T), c1 = std::min(cols, c0 + T);
      for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) dst[c * rows + r] = src[r * cols + c];
    }
}

// Output rows per unfold chunk: about 4 MiB of columns, so the unfolded block is still in cache
// when the GEMM packs it (and large images need no huge buffer), but at least 512 columns, so
// the weights are not repacked for too little work.
int64_t chunk_rows(const Conv& g) {
  constexpr int64_t kColFloats = int64_t(1) << 20, kMinCols = 512;
  const int64_t by_size = kColFloats / std::max<int64_t>(1, g.K() * g.Wo);
  return std::clamp<int64_t>(std::max(by_size, (kMinCols + g.Wo - 1) / g.Wo), 1, g.Ho);
}

// Whether to give each thread whole images (GEMMs inline) rather than share each image's GEMM:
// only when the batch splits evenly enough over the threads.
bool images_in_parallel(const Conv& g) {
  const int64_t T = num_threads();
  if (T <= 1 || g.N < T) return false;
  return g.N % T == 0 || g.N >= 4 * T;
}

// Runs fn(n, first_of_its_group, group) for every image: groups of images in parallel, or all
// images in order on this thread (each fn then parallelises inside).
template <class Fn>
void for_images(const Conv& g, bool parallel, Fn fn) {
  if (!parallel) {
    for (int64_t n = 0; n < g.N; n++) fn(n, n == 0, int64_t(0));
    return;
  }
  const int64_t groups = std::min<int64_t>(g.N, num_threads());
  parallel_for(groups, 1, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; q++) {
      const int64_t n0 = g.N * q / groups, n1 = g.N * (q + 1) / groups;
      for (int64_t n = n0; n < n1; n++) fn(n, n == n0, q);
    }
  });
}

// Unfolds output rows [oy0, oy1) of image n into col: split over the pool, or inline when the
// caller already runs images in parallel.
void unfold(const Conv& g, const float* x, float* col, int64_t oy0, int64_t oy1, bool inline_only) {
  if (inline_only) {
    im2col(g, x, col, 0, g.K(), oy0, oy1);
  } else {
    const int64_t Lc = (oy1 - oy0) * g.Wo;
    parallel_for(g.K(), std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Lc)),
                 [&](int64_t b, int64_t e) { im2col(g, x, col, b, e, oy0, oy1); });
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------
// conv2d

void cpu_conv2d_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &w = a.input(1), &y = a.output(0);
  const Conv g = conv_geometry(a, x, w, y, "x", "w", "y");
  const TensorRef* tb = a.in.size() > 2 && a.in[2].defined() ? &a.in[2] : nullptr;
  if (tb) need_vec(a, *tb, "bias", g.O);
  const float* bias = tb ? tb->ptr<const float>() : nullptr;
  const float *xp = x.ptr<const float>(), *wp = w.ptr<const float>();
  float* yp = y.ptr<float>();
  if (g.N == 0 || g.O == 0) return;
  const int64_t L = g.L(), K = g.K();

  if (g.patch()) {
    // rows [N*L, K] @ w^T -> [N*L, O] with the bias per column, then each image to [O, L].
    const int64_t R = g.N * L;
    Lease rows_l(t_col, R * K), out_l(t_aux, R * g.O);
    float *rows = rows_l.get(), *out = out_l.get();
    parallel_for(g.N * g.Ho, 1, [&](int64_t b, int64_t e) { patch_gather(g, xp, rows, b, e); });
    sgemm(false, true, R, g.O, K, 1.0f, rows, K, wp, K, 0.0f, out, g.O, bias);
    parallel_for(g.N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; n++) transpose(out + n * L * g.O, L, g.O, yp + n * g.O * L);
    });
    return;
  }

  const bool par = images_in_parallel(g);
  const int64_t rows = g.pointwise() ? g.Ho : chunk_rows(g);
  for_images(g, par, [&](int64_t n, bool, int64_t) {
    float* yn = yp + n * g.O * L;
    const float* xn = xp + n * g.C * g.H * g.W;
    // The bias runs along GEMM rows here, so it is written first and accumulated onto.
    if (bias)
      for (int64_t o = 0; o < g.O; o++) std::fill(yn + o * L, yn + (o + 1) * L, bias[o]);
    const float beta = bias ? 1.0f : 0.0f;
    if (g.pointwise()) {
      sgemm(false, false, g.O, L, K, 1.0f, wp, K, xn, L, beta, yn, L, nullptr);
      return;
    }
    float* col = t_col.get(size_t(K * rows * g.Wo));
    for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += rows) {
      const int64_t oy1 = std::min(g.Ho, oy0 + rows), Lc = (oy1 - oy0) * g.Wo;
      unfold(g, xn, col, oy0, oy1, par);
      sgemm(false, false, g.O, Lc, K, 1.0f, wp, K, col, Lc, beta, yn + oy0 * g.Wo, L, nullptr);
    }
  });
}

void cpu_conv2d_bwd_data(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &w = a.input(1), &dx = a.output(0);
  const Conv g = conv_geometry(a, dx, w, dy, "dx", "w", "dy");
  const float *dyp = dy.ptr<const float>(), *wp = w.ptr<const float>();
  float* dxp = dx.ptr<float>();
  if (g.N == 0) return;
  if (g.O == 0) {
    std::memset(dxp, 0, sizeof(float) * dx.numel());
    return;
  }
  const int64_t L = g.L(), K = g.K();

  if (g.patch()) {
    // dy to rows [N*L, O], @ w [O, K] -> patch rows [N*L, K], scattered back to pixels.
    const int64_t R = g.N * L;
    Lease dyr_l(t_aux, R * g.O), rows_l(t_col, R * K);
    float *dyr = dyr_l.get(), *rows = rows_l.get();
    parallel_for(g.N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; n++) transpose(dyp + n * g.O * L, g.O, L, dyr + n * L * g.O);
    });
    sgemm(false, false, R, K, g.O, 1.0f, dyr, g.O, wp, K, 0.0f, rows, K, nullptr);
    parallel_for(g.N, 1, [&](int64_t b, int64_t e) { patch_scatter(g, rows, dxp, b, e); });
    return;
  }

  const bool par = images_in_parallel(g);
  const int64_t rows = g.pointwise() ? g.Ho : chunk_rows(g);
  for_images(g, par, [&](int64_t n, bool, int64_t) {
    const float* dyn = dyp + n * g.O * L;
    float* dxn = dxp + n * g.C * g.H * g.W;
    // dcol [K, Lc] = w^T [K, O] @ dy[n] [O, Lc], folded back; pointwise convs write dx directly.
    if (g.pointwise()) {
      sgemm(true, false, K, L, g.O, 1.0f, wp, K, dyn, L, 0.0f, dxn, L, nullptr);
      return;
    }
    float* dcol = t_col.get(size_t(K * rows * g.Wo));
    for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += rows) {
      const int64_t oy1 = std::min(g.Ho, oy0 + rows), Lc = (oy1 - oy0) * g.Wo;
      sgemm(true, false, K, Lc, g.O, 1.0f, wp, K, dyn + oy0 * g.Wo, L, 0.0f, dcol, Lc, nullptr);
      if (par) {
        col2im(g, dcol, dxn, 0, g.C, oy0, oy1);
      } else {
        parallel_for(g.C, 1, [&](int64_t b, int64_t e) { col2im(g, dcol, dxn, b, e, oy0, oy1); });
      }
    }
  });
}

void cpu_conv2d_bwd_weight(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1), &dw = a.output(0);
  const Conv g = conv_geometry(a, x, dw, dy, "x", "dw", "dy");
  const TensorRef* tdb = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  if (tdb) need_vec(a, *tdb, "dbias", g.O);
  const float *dyp = dy.ptr<const float>(), *xp = x.ptr<const float>();
  float* dwp = dw.ptr<float>();
  const int64_t L = g.L(), K = g.K();

  if (tdb) {
    float* db = tdb->ptr<float>();
    parallel_for(g.O, 1, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; o++) {
        double s = 0;
        for (int64_t n = 0; n < g.N; n++) {
          const float* row = dyp + (n * g.O + o) * L;
          float part = 0.0f;
          for (int64_t l = 0; l < L; l++) part += row[l];
          s += part;
        }
        db[o] += float(s);
      }
    });
  }
  if (g.N == 0 || g.O == 0 || K == 0) return;

  if (g.patch()) {
    // dw [O, K] += dy rows^T [O, N*L] @ patch rows [N*L, K]: the batch is the GEMM's depth.
    const int64_t R = g.N * L;
    Lease rows_l(t_col, R * K), dyr_l(t_aux, R * g.O);
    float *rows = rows_l.get(), *dyr = dyr_l.get();
    parallel_for(g.N * g.Ho, 1, [&](int64_t b, int64_t e) { patch_gather(g, xp, rows, b, e); });
    parallel_for(g.N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; n++) transpose(dyp + n * g.O * L, g.O, L, dyr + n * L * g.O);
    });
    sgemm(true, false, g.O, K, R, 1.0f, dyr, g.O, rows, K, 1.0f, dwp, K, nullptr);
    return;
  }

  const bool par = images_in_parallel(g);
  const int64_t rows = g.pointwise() ? g.Ho : chunk_rows(g);
  // In parallel, each group of images sums into its own partial, added up in a fixed order so
  // the result does not depend on scheduling.
  const int64_t groups = par ? std::min<int64_t>(g.N, num_threads()) : 1;
  std::vector<float> partial(par ? size_t(groups * g.O * K) : 0);
  for_images(g, par, [&](int64_t n, bool first, int64_t q) {
    const float* xn = xp + n * g.C * g.H * g.W;
    const float* dyn = dyp + n * g.O * L;
    float* dst = par ? partial.data() + q * g.O * K : dwp;
    // dw [O, K] += dy[n] [O, Lc] @ col^T [Lc, K]; a group's partial starts from its first product.
    if (g.pointwise()) {
      sgemm(false, true, g.O, K, L, 1.0f, dyn, L, xn, L, par && first ? 0.0f : 1.0f, dst, K, nullptr);
      return;
    }
    float* col = t_col.get(size_t(K * rows * g.Wo));
    for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += rows) {
      const int64_t oy1 = std::min(g.Ho, oy0 + rows), Lc = (oy1 - oy0) * g.Wo;
      unfold(g, xn, col, oy0, oy1, par);
      const float beta = par && first && oy0 == 0 ? 0.0f : 1.0f;
      sgemm(false, true, g.O, K, Lc, 1.0f, dyn + oy0 * g.Wo, L, col, Lc, beta, dst, K, nullptr);
    }
  });
  if (par) {
    parallel_for(g.O * K, 4096, [&](int64_t b, int64_t e) {
      for (int64_t q = 0; q < groups; q++) {
        const float* src = partial.data() + q * g.O * K;
        for (int64_t i = b; i < e; i++) dwp[i] += src[i];
      }
    });
  }
}

// ------------------------------------------------------------------------------------------
// batch norm over (N, H, W) per channel

namespace {

struct BN {
  int64_t N, C, HW;
  int64_t count() const { return N * HW; }
};

BN bn_geometry(const OpArgs& a, const TensorRef& x, const char* name) {
  need_f32(a, x, name, 4);
  return BN{x.shape[0], x.shape[1], x.shape[2] * x.shape[3]};
}

void need_same(const OpArgs& a, const TensorRef& t, const char* name, const TensorRef& x) {
  need_f32(a, t, name, 4);
  for (int d = 0; d < 4; d++)
    a.require(t.shape[d] == x.shape[d], std::string(name) + " is " + t.describe() + ", expected the shape of x " + x.describe());
}

const float* opt_vec(const OpArgs& a, size_t i, const char* name, int64_t C) {
  if (a.in.size() <= i || !a.in[i].defined()) return nullptr;
  need_vec(a, a.in[i], name, C);
  return a.in[i].ptr<const float>();
}

// Sums of one channel over every image, in double with independent lanes so the adds pipeline.
template <class F>
double channel_sum(const BN& g, int64_t c, F term) {
  double total = 0;
  for (int64_t n = 0; n < g.N; n++) {
    const int64_t base = (n * g.C + c) * g.HW;
    double acc[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= g.HW; i += 4)
      for (int k = 0; k < 4; k++) acc[k] += term(base + i + k);
    for (; i < g.HW; i++) acc[0] += term(base + i);
    total += (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
  return total;
}

}  // namespace

void cpu_batchnorm_fwd(const OpArgs& a) {
  const TensorRef& x = a.input(0);
  const BN g = bn_geometry(a, x, "x");
  const float* w = opt_vec(a, 1, "weight", g.C);
  const float* b = opt_vec(a, 2, "bias", g.C);
  const TensorRef &rm = a.input(3), &rv = a.input(4), &y = a.output(0);
  const bool training = a.i(0) != 0;
  const double momentum = a.f(0), eps = a.f(1);
  const bool have_running = rm.defined() || rv.defined();
  if (have_running) {
    need_vec(a, rm, "running_mean", g.C);
    need_vec(a, rv, "running_var", g.C);
  }
  a.require(training || have_running, "evaluation mode needs running_mean and running_var");
  need_same(a, y, "y", x);
  const TensorRef* sm = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* sr = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  if (sm) need_vec(a, *sm, "save_mean", g.C);
  if (sr) need_vec(a, *sr, "save_rstd", g.C);
  const int64_t M = g.count();
  if (training) a.require(M > 1, "training needs more than 1 value per channel, got x " + x.describe());
  const float* xp = x.ptr<const float>();
  float* yp = y.ptr<float>();
  float* rmp = have_running ? rm.ptr<float>() : nullptr;
  float* rvp = have_running ? rv.ptr<float>() : nullptr;

  parallel_for(g.C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      double mean, rstd;
      if (training) {
        // Two passes: the mean, then squared deviations (no cancellation for large means).
        mean = channel_sum(g, c, [&](int64_t i) { return double(xp[i]); }) / double(M);
        const double ss = channel_sum(g, c, [&](int64_t i) {
          const double d = double(xp[i]) - mean;
          return d * d;
        });
        rstd = 1.0 / std::sqrt(ss / double(M) + eps);
        if (have_running) {
          // PyTorch's update: the biased variance normalises, the unbiased one is tracked.
          rmp[c] = float((1.0 - momentum) * rmp[c] + momentum * mean);
          rvp[c] = float((1.0 - momentum) * rvp[c] + momentum * ss / double(M - 1));
        }
      } else {
        mean = rmp[c];
        rstd = 1.0 / std::sqrt(double(rvp[c]) + eps);
      }
      if (sm) sm->ptr<float>()[c] = float(mean);
      if (sr) sr->ptr<float>()[c] = float(rstd);
      // (x - mean) first: folding the mean into a shift would cancel badly when |mean| >> std.
      const float m = float(mean), scale = float(rstd * (w ? w[c] : 1.0f)), shift = b ? b[c] : 0.0f;
      for (int64_t n = 0; n < g.N; n++) {
        const int64_t base = (n * g.C + c) * g.HW;
        for (int64_t i = 0; i < g.HW; i++) yp[base + i] = (xp[base + i] - m) * scale + shift;
      }
    }
  });
}

// ints: training (optional, default 1): evaluation mode treats mean and rstd as constants.
void cpu_batchnorm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1);
  const BN g = bn_geometry(a, x, "x");
  need_same(a, dy, "dy", x);
  const float* w = opt_vec(a, 2, "weight", g.C);
  need_vec(a, a.input(3), "save_mean", g.C);
  need_vec(a, a.input(4), "save_rstd", g.C);
  const float *mp = a.input(3).ptr<const float>(), *rp = a.input(4).ptr<const float>();
  const TensorRef* tdx = a.out.size() > 0 && a.out[0].defined() ? &a.out[0] : nullptr;
  const TensorRef* tdw = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  const TensorRef* tdb = a.out.size() > 2 && a.out[2].defined() ? &a.out[2] : nullptr;
  if (tdx) need_same(a, *tdx, "dx", x);
  if (tdw) need_vec(a, *tdw, "dweight", g.C);
  if (tdb) need_vec(a, *tdb, "dbias", g.C);
  const bool training = a.ints.empty() || a.ints[0] != 0;
  const float *xp = x.ptr<const float>(), *dyp = dy.ptr<const float>();
  const double M = double(g.count());

  parallel_for(g.C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      const double mean = mp[c], rstd = rp[c];
      const double sdy = channel_sum(g, c, [&](int64_t i) { return double(dyp[i]); });
      const double sdyx = rstd * channel_sum(g, c, [&](int64_t i) { return double(dyp[i]) * (double(xp[i]) - mean); });
      if (tdw) tdw->ptr<float>()[c] += float(sdyx);
      if (tdb) tdb->ptr<float>()[c] += float(sdy);
      if (!tdx) continue;
      // dx = w*rstd * (dy - mean(dy) - xhat * mean(dy*xhat)) in training; w*rstd*dy otherwise.
      const double k = rstd * (w ? w[c] : 1.0f);
      const float m = float(mean), a1 = float(k);
      const float a2 = training ? float(k * rstd * sdyx / M) : 0.0f;  // times (x - mean)
      const float a0 = training ? float(-k * sdy / M) : 0.0f;
      float* dxp = tdx->ptr<float>();
      for (int64_t n = 0; n < g.N; n++) {
        const int64_t base = (n * g.C + c) * g.HW;
        for (int64_t i = 0; i < g.HW; i++) dxp[base + i] = a1 * dyp[base + i] - a2 * (xp[base + i] - m) + a0;
      }
    }
  });
}

// ------------------------------------------------------------------------------------------
// average pooling: square kernel, stride, no padding, floor mode

namespace {

struct Pool {
  int64_t planes, H, W, k, s, Ho, Wo;
};

Pool pool_geometry(const OpArgs& a, const TensorRef& x, const TensorRef& y, const char* xn, const char* yn) {
  need_f32(a, x, xn, 4);
  need_f32(a, y, yn, 4);
  Pool p{x.shape[0] * x.shape[1], x.shape[2], x.shape[3], a.i(0), a.i(1), 0, 0};
  a.require(p.k >= 1 && p.s >= 1, "kernel and stride must be >= 1, got kernel " + std::to_string(p.k) +
                                      ", stride " + std::to_string(p.s));
  a.require(p.H >= p.k && p.W >= p.k,
            "kernel " + std::to_string(p.k) + " is larger than " + xn + " " + x.describe());
  p.Ho = (p.H - p.k) / p.s + 1;
  p.Wo = (p.W - p.k) / p.s + 1;
  a.require(y.shape[0] == x.shape[0] && y.shape[1] == x.shape[1] && y.shape[2] == p.Ho && y.shape[3] == p.Wo,
            std::string(yn) + " is " + y.describe() + ", expected " + dims(x.shape[0], x.shape[1], p.Ho, p.Wo) +
                " for " + xn + " " + x.describe() + ", kernel " + std::to_string(p.k) + ", stride " +
                std::to_string(p.s));
  return p;
}

}  // namespace

void cpu_avgpool2d_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  const Pool p = pool_geometry(a, x, y, "x", "y");
  const float* xp = x.ptr<const float>();
  float* yp = y.ptr<float>();
  const float inv = 1.0f / float(p.k * p.k);
  parallel_for(p.planes, 1, [&](int64_t b, int64_t e) {
    std::vector<float> rowsum(size_t(p.W));
    for (int64_t q = b; q < e; q++) {
      const float* xq = xp + q * p.H * p.W;
      float* yq = yp + q * p.Ho * p.Wo;
      for (int64_t oy = 0; oy < p.Ho; oy++) {
        // Sum the k input rows first (contiguous adds), then the k columns of each window.
        std::fill(rowsum.begin(), rowsum.end(), 0.0f);
        for (int64_t ky = 0; ky < p.k; ky++) {
          const float* row = xq + (oy * p.s + ky) * p.W;
          for (int64_t ix = 0; ix < p.W; ix++) rowsum[ix] += row[ix];
        }
        for (int64_t ox = 0; ox < p.Wo; ox++) {
          float s = 0.0f;
          for (int64_t kx = 0; kx < p.k; kx++) s += rowsum[ox * p.s + kx];
          yq[oy * p.Wo + ox] = s * inv;
        }
      }
    }
  });
}

void cpu_avgpool2d_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &dx = a.output(0);
  const Pool p = pool_geometry(a, dx, dy, "dx", "dy");
  const float* dyp = dy.ptr<const float>();
  float* dxp = dx.ptr<float>();
  const float inv = 1.0f / float(p.k * p.k);
  parallel_for(p.planes, 1, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; q++) {
      float* dxq = dxp + q * p.H * p.W;
      const float* dyq = dyp + q * p.Ho * p.Wo;
      std::memset(dxq, 0, sizeof(float) * p.H * p.W);
      for (int64_t oy = 0; oy < p.Ho; oy++)
        for (int64_t ox = 0; ox < p.Wo; ox++) {
          const float v = dyq[oy * p.Wo + ox] * inv;
          for (int64_t ky = 0; ky < p.k; ky++) {
            float* row = dxq + (oy * p.s + ky) * p.W + ox * p.s;
            for (int64_t kx = 0; kx < p.k; kx++) row[kx] += v;
          }
        }
    }
  });
}

}  // namespace tsclip
