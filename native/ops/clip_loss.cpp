// CPU CLIP contrastive loss: the mean of the image->text and text->image cross-entropies over
// logits L = exp(s) * img @ txt^T with the matching pair on the diagonal. The N x N logits are
// never stored: tiles of kTile x kTile come from sgemm, row log-sum-exps are finished per block
// of rows, and column ones are merged from per-chunk running (max, sum) pairs. The backward
// recomputes the tiles twice (once per block of rows for dimg and ds, once per block of columns
// for dtxt), so no pass needs more than a tile and its own output rows.
//
// clip_ce_fwd/bwd is one direction of it for data-parallel training: local rows [n,D] against
// gathered columns [m,D], row i labelled offset + i. Its work is split over (block, chunk) units
// fixed by the shapes alone, so the results do not depend on the thread count. When the owned
// dimension is small, its blocks are split into chunks whose partial sums take scratch of at most
// one more copy of the output plus kUnits blocks: memory stays O((n + m) D).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../cpu/sgemm.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"
#include "rowops.h"
#include "vexp.h"

namespace tsclip {
namespace {

using rowops::require_f32;
using rowops::require_shape;

constexpr int64_t kTile = 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A fixed split of the blocks, so that results do not depend on the thread count.
int64_t chunk_count(int64_t blocks) { return std::min<int64_t>(blocks, 16); }

struct Inputs {
  const float *img, *txt;
  int64_t N, D;
  float scale;  // exp(log_scale)
};

Inputs check_inputs(const OpArgs& a) {
  const TensorRef &img = a.input(0), &txt = a.input(1), &ls = a.input(2);
  require_f32(a, img, "img");
  a.require(img.ndim == 2 && img.contiguous(), "img must be a contiguous [N,D] tensor, got " + img.describe());
  const int64_t N = img.shape[0], D = img.shape[1];
  a.require(N > 0, "img " + img.describe() + " has no rows");
  require_f32(a, txt, "txt");
  a.require(txt.ndim == 2 && txt.shape[0] == N && txt.shape[1] == D && txt.contiguous(),
            "txt must be contiguous float32[" + std::to_string(N) + "," + std::to_string(D) + "] like img, got " +
                txt.describe());
  require_f32(a, ls, "log_scale");
  a.require(ls.numel() == 1, "log_scale must hold one value, got " + ls.describe());
  return {img.ptr<float>(), txt.ptr<float>(), N, D, std::exp(*ls.ptr<float>())};
}

// tile[r][c] = scale * <img[i0+r], txt[j0+c]> for r < rows, c < cols (row stride kTile).
void logits_tile(const Inputs& in, int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* tile) {
  sgemm(false, true, rows, cols, in.D, in.scale, in.img + i0 * in.D, in.D, in.txt + j0 * in.D, in.D, 0.0f, tile,
        kTile, nullptr);
}

// Running log-sum-exp state: s = sum exp(x - m).
inline void lse_merge(float& m, float& s, float m2, float s2) {
  if (s2 == 0.f) return;
  if (m2 > m) {
    s = s * std::exp(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * std::exp(m2 - m);
  }
}

// y[k] = exp(x[k] - m[k])
inline void exp_diff(const float* x, const float* m, float* y, int64_t n) {
  for (int64_t k = 0; k < n; k++) y[k] = x[k] - m[k];
  exp_affine(y, 1.0f, 0.0f, y, n);
}

}  // namespace

void cpu_clip_loss_fwd(const OpArgs& a) {
  const Inputs in = check_inputs(a);
  const int64_t N = in.N;
  const TensorRef &loss = a.output(0), &lse_row = a.output(1), &lse_col = a.output(2);
  require_f32(a, loss, "loss");
  a.require(loss.numel() == 1, "loss must hold one value, got " + loss.describe());
  require_shape(a, lse_row, "lse_row", {N});
  require_shape(a, lse_col, "lse_col", {N});
  float *plr = lse_row.ptr<float>(), *plc = lse_col.ptr<float>();

  const int64_t blocks = ceil_div(N, kTile), chunks = chunk_count(blocks);
  // Per chunk: running column max and sum over that chunk's rows.
  std::vector<float> cmax(size_t(chunks * N), -INFINITY), csum(size_t(chunks * N), 0.f);
  std::vector<float> diag(static_cast<size_t>(N));
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tile(static_cast<size_t>(kTile * kTile)), e(static_cast<size_t>(kTile));
    for (int64_t c = c0; c < c1; c++) {
      float *cm = cmax.data() + c * N, *cs = csum.data() + c * N;
      for (int64_t ib = blocks * c / chunks; ib < blocks * (c + 1) / chunks; ib++) {
        const int64_t i0 = ib * kTile, rows = std::min(kTile, N - i0);
        float rm[kTile], rs[kTile];
        for (int64_t r = 0; r < rows; r++) rm[r] = -INFINITY, rs[r] = 0.f;
        for (int64_t j0 = 0; j0 < N; j0 += kTile) {
          const int64_t cols = std::min(kTile, N - j0);
          logits_tile(in, i0, rows, j0, cols, tile.data());
          for (int64_t i = std::max(i0, j0); i < std::min(i0 + rows, j0 + cols); i++)
            diag[i] = tile[(i - i0) * kTile + (i - j0)];
          // Rows: merge this tile's (max, sum) into the running pair.
          for (int64_t r = 0; r < rows; r++) {
            const float* t = tile.data() + r * kTile;
            const float m = rowops::max(t, cols);
            exp_affine(t, 1.0f, m, e.data(), cols);
            lse_merge(rm[r], rs[r], m, rowops::sum(e.data(), cols));
          }
          // Columns: raise the running max first, then add this tile's terms row by row.
          float* m = cm + j0;
          float* s = cs + j0;
          for (int64_t k = 0; k < cols; k++) e[k] = m[k];
          for (int64_t r = 0; r < rows; r++) {
            const float* t = tile.data() + r * kTile;
            for (int64_t k = 0; k < cols; k++) m[k] = m[k] > t[k] ? m[k] : t[k];
          }
          exp_diff(e.data(), m, e.data(), cols);  // exp(-inf) = 0 on the first tile
          for (int64_t k = 0; k < cols; k++) s[k] *= e[k];
          for (int64_t r = 0; r < rows; r++) {
            exp_diff(tile.data() + r * kTile, m, e.data(), cols);
            for (int64_t k = 0; k < cols; k++) s[k] += e[k];
          }
        }
        for (int64_t r = 0; r < rows; r++) plr[i0 + r] = rm[r] + std::log(rs[r]);
      }
    }
  });
  for (int64_t j = 0; j < N; j++) {
    float m = -INFINITY, s = 0.f;
    for (int64_t c = 0; c < chunks; c++) lse_merge(m, s, cmax[c * N + j], csum[c * N + j]);
    plc[j] = m + std::log(s);
  }
  double total = 0;
  for (int64_t i = 0; i < N; i++) total += double(plr[i]) + double(plc[i]) - 2.0 * double(diag[i]);
  *loss.ptr<float>() = float(total / (2.0 * double(N)));
}

void cpu_clip_loss_bwd(const OpArgs& a) {
  const Inputs in = check_inputs(a);
  const int64_t N = in.N, D = in.D;
  const TensorRef &lse_row = a.input(3), &lse_col = a.input(4), &dloss = a.input(5);
  require_shape(a, lse_row, "lse_row", {N});
  require_shape(a, lse_col, "lse_col", {N});
  require_f32(a, dloss, "dloss");
  a.require(dloss.numel() == 1, "dloss must hold one value, got " + dloss.describe());
  const TensorRef &dimg = a.output(0), &dtxt = a.output(1), &dscale = a.output(2);
  require_shape(a, dimg, "dimg", {N, D});
  require_shape(a, dtxt, "dtxt", {N, D});
  require_f32(a, dscale, "dscale");
  a.require(dscale.numel() == 1, "dscale must hold one value, got " + dscale.describe());
  const float *plr = lse_row.ptr<float>(), *plc = lse_col.ptr<float>();
  // d loss / d L_ij = g * (softmax_row_ij + softmax_col_ij - 2 [i == j]), g = dloss / 2N
  const float g = float(double(*dloss.ptr<float>()) / (2.0 * double(N)));

  const int64_t blocks = ceil_div(N, kTile), chunks = chunk_count(blocks);
  float *pdi = dimg.ptr<float>(), *pdt = dtxt.ptr<float>();

  // Overwrites a logits tile with d loss / d L; adds sum(dL * L) to *ds when given.
  auto to_grad = [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* tile, float* e, float* e2,
                     double* ds) {
    for (int64_t r = 0; r < rows; r++) {
      float* t = tile + r * kTile;
      const int64_t i = i0 + r, kd = i - j0;
      exp_affine(t, 1.0f, plr[i], e, cols);  // softmax over the row
      exp_diff(t, plc + j0, e2, cols);       // softmax over each column
      for (int64_t k = 0; k < cols; k++) e[k] = g * (e[k] + e2[k]);
      if (kd >= 0 && kd < cols) e[kd] -= 2.f * g;  // the matching pair: minus one in both softmaxes
      if (ds) *ds += double(rowops::dot(e, t, cols));
      for (int64_t k = 0; k < cols; k++) t[k] = e[k];
    }
  };

  // dimg = scale * G @ txt and ds = sum(G * L), one block of rows at a time.
  std::vector<double> ds_part(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tile(static_cast<size_t>(kTile * kTile)), e(static_cast<size_t>(kTile)), e2(e);
    for (int64_t c = c0; c < c1; c++) {
      for (int64_t ib = blocks * c / chunks; ib < blocks * (c + 1) / chunks; ib++) {
        const int64_t i0 = ib * kTile, rows = std::min(kTile, N - i0);
        for (int64_t j0 = 0; j0 < N; j0 += kTile) {
          const int64_t cols = std::min(kTile, N - j0);
          logits_tile(in, i0, rows, j0, cols, tile.data());
          to_grad(i0, rows, j0, cols, tile.data(), e.data(), e2.data(), &ds_part[size_t(c)]);
          sgemm(false, false, rows, D, cols, in.scale, tile.data(), kTile, in.txt + j0 * D, D, j0 == 0 ? 0.f : 1.f,
                pdi + i0 * D, D, nullptr);
        }
      }
    }
  });
  // dtxt = scale * G^T @ img, one block of columns at a time (the tiles are recomputed).
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tile(static_cast<size_t>(kTile * kTile)), e(static_cast<size_t>(kTile)), e2(e);
    for (int64_t c = c0; c < c1; c++) {
      for (int64_t jb = blocks * c / chunks; jb < blocks * (c + 1) / chunks; jb++) {
        const int64_t j0 = jb * kTile, cols = std::min(kTile, N - j0);
        for (int64_t i0 = 0; i0 < N; i0 += kTile) {
          const int64_t rows = std::min(kTile, N - i0);
          logits_tile(in, i0, rows, j0, cols, tile.data());
          to_grad(i0, rows, j0, cols, tile.data(), e.data(), e2.data(), nullptr);
          sgemm(true, false, cols, D, rows, in.scale, tile.data(), kTile, in.img + i0 * D, D, i0 == 0 ? 0.f : 1.f,
                pdt + j0 * D, D, nullptr);
        }
      }
    }
  });
  double ds = 0;
  for (double p : ds_part) ds += p;
  *dscale.ptr<float>() = float(ds);
}

// ------------------------------------------------------------------------------------------------
// One direction with a label offset: loss = weight * sum_i (lse_i - L_{i,offset+i}).
namespace {

constexpr int64_t kRows = 64, kCols = 256;  // a tile of logits: kRows x kCols floats
constexpr int64_t kUnits = 16;              // work units aimed at per pass

struct CeInputs {
  const float *rows, *cols;
  int64_t n, m, D, offset;
  float scale;   // exp(log_scale)
  float weight;  // of each row's cross-entropy
};

CeInputs ce_inputs(const OpArgs& a) {
  const TensorRef &r = a.input(0), &c = a.input(1), &ls = a.input(2);
  require_f32(a, r, "rows");
  a.require(r.ndim == 2 && r.contiguous(), "rows must be a contiguous [n,D] tensor, got " + r.describe());
  require_f32(a, c, "cols");
  a.require(c.ndim == 2 && c.contiguous(), "cols must be a contiguous [m,D] tensor, got " + c.describe());
  const int64_t n = r.shape[0], m = c.shape[0], D = r.shape[1];
  a.require(c.shape[1] == D, "rows " + r.describe() + " and cols " + c.describe() + " must have one width");
  const int64_t off = a.i(0);
  a.require(off >= 0 && off + n <= m, "the labels offset+i = " + std::to_string(off) + ".." +
                                          std::to_string(off + n - 1) + " of rows " + r.describe() +
                                          " must index the columns of cols " + c.describe());
  require_f32(a, ls, "log_scale");
  a.require(ls.numel() == 1, "log_scale must hold one value, got " + ls.describe());
  return {r.ptr<float>(), c.ptr<float>(), n, m, D, off, std::exp(*ls.ptr<float>()), float(a.f(0))};
}

// tile[r][c] = scale * <rows[i0+r], cols[j0+c]> for r < nr, c < nc (row stride kCols).
void ce_tile(const CeInputs& in, int64_t i0, int64_t nr, int64_t j0, int64_t nc, float* tile) {
  if (in.D == 0) {  // no products: every logit is zero (sgemm is not asked for K = 0)
    for (int64_t r = 0; r < nr; r++) std::fill(tile + r * kCols, tile + r * kCols + nc, 0.f);
    return;
  }
  sgemm(false, true, nr, nc, in.D, in.scale, in.rows + i0 * in.D, in.D, in.cols + j0 * in.D, in.D, 0.0f, tile, kCols,
        nullptr);
}

// A pass over `blocks` owned blocks, each split into `chunks` ranges of the other dimension so that
// blocks * chunks is near kUnits however small the owned dimension is.
struct Split {
  int64_t blocks, chunks;
  Split(int64_t blocks_, int64_t other_blocks)
      : blocks(blocks_), chunks(std::max<int64_t>(1, std::min(other_blocks, ceil_div(kUnits, std::max<int64_t>(blocks_, 1))))) {}
  int64_t units() const { return blocks * chunks; }
  // The other dimension's blocks [first, last) of chunk c of `other_blocks`.
  static int64_t first(int64_t c, int64_t chunks, int64_t other_blocks) { return other_blocks * c / chunks; }
};

// Overwrites a logits tile with dL/dlogits = g * (softmax - [label]) and returns sum(dZ * logits).
double ce_grad_tile(const CeInputs& in, const float* lse, float g, int64_t i0, int64_t nr, int64_t j0, int64_t nc,
                    float* tile, float* e) {
  double ds = 0;
  for (int64_t r = 0; r < nr; r++) {
    float* t = tile + r * kCols;
    const int64_t i = i0 + r, kd = in.offset + i - j0;
    exp_affine(t, 1.0f, lse[i], e, nc);
    for (int64_t k = 0; k < nc; k++) e[k] *= g;
    if (kd >= 0 && kd < nc) e[kd] -= g;
    ds += double(rowops::dot(e, t, nc));
    std::copy(e, e + nc, t);
  }
  return ds;
}

}  // namespace

void cpu_clip_ce_fwd(const OpArgs& a) {
  const CeInputs in = ce_inputs(a);
  const int64_t n = in.n, m = in.m;
  const TensorRef &loss = a.output(0), &lse_t = a.output(1);
  require_f32(a, loss, "loss");
  a.require(loss.numel() == 1, "loss must hold one value, got " + loss.describe());
  require_shape(a, lse_t, "lse", {n});
  float* lse = lse_t.ptr<float>();
  if (n == 0) {
    *loss.ptr<float>() = 0.f;
    return;
  }
  // Units: (block of rows, chunk of column blocks); each leaves a running (max, sum) per row.
  const int64_t col_blocks = ceil_div(m, kCols);
  const Split sp(ceil_div(n, kRows), col_blocks);
  std::vector<float> pmax(size_t(sp.chunks * n)), psum(size_t(sp.chunks * n)), label(static_cast<size_t>(n));
  parallel_for(sp.units(), 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> tile(static_cast<size_t>(kRows * kCols)), e(static_cast<size_t>(kCols));
    for (int64_t u = u0; u < u1; u++) {
      const int64_t ib = u / sp.chunks, c = u % sp.chunks;
      const int64_t i0 = ib * kRows, nr = std::min(kRows, n - i0);
      float rm[kRows], rs[kRows];
      for (int64_t r = 0; r < nr; r++) rm[r] = -INFINITY, rs[r] = 0.f;
      for (int64_t jb = Split::first(c, sp.chunks, col_blocks); jb < Split::first(c + 1, sp.chunks, col_blocks); jb++) {
        const int64_t j0 = jb * kCols, nc = std::min(kCols, m - j0);
        ce_tile(in, i0, nr, j0, nc, tile.data());
        for (int64_t r = 0; r < nr; r++) {
          const float* t = tile.data() + r * kCols;
          const int64_t kd = in.offset + i0 + r - j0;
          if (kd >= 0 && kd < nc) label[size_t(i0 + r)] = t[kd];
          const float mx = rowops::max(t, nc);
          exp_affine(t, 1.0f, mx, e.data(), nc);
          lse_merge(rm[r], rs[r], mx, rowops::sum(e.data(), nc));
        }
      }
      for (int64_t r = 0; r < nr; r++) pmax[size_t(c * n + i0 + r)] = rm[r], psum[size_t(c * n + i0 + r)] = rs[r];
    }
  });
  double total = 0;
  for (int64_t i = 0; i < n; i++) {
    float mx = -INFINITY, s = 0.f;
    for (int64_t c = 0; c < sp.chunks; c++) lse_merge(mx, s, pmax[size_t(c * n + i)], psum[size_t(c * n + i)]);
    lse[i] = mx + std::log(s);
    total += double(lse[i]) - double(label[size_t(i)]);
  }
  *loss.ptr<float>() = float(double(in.weight) * total);
}

void cpu_clip_ce_bwd(const OpArgs& a) {
  const CeInputs in = ce_inputs(a);
  const int64_t n = in.n, m = in.m, D = in.D;
  const TensorRef &lse_t = a.input(3), &dloss = a.input(4);
  require_shape(a, lse_t, "lse", {n});
  require_f32(a, dloss, "dloss");
  a.require(dloss.numel() == 1, "dloss must hold one value, got " + dloss.describe());
  const TensorRef &drows_t = a.output(0), &dcols_t = a.output(1), &dscale = a.output(2);
  require_shape(a, drows_t, "drows", {n, D});
  require_shape(a, dcols_t, "dcols", {m, D});
  require_f32(a, dscale, "dscale");
  a.require(dscale.numel() == 1, "dscale must hold one value, got " + dscale.describe());
  const float* lse = lse_t.ptr<float>();
  float *drows = drows_t.ptr<float>(), *dcols = dcols_t.ptr<float>();
  const float g = float(double(*dloss.ptr<float>()) * double(in.weight));
  if (n == 0 || D == 0) {  // no loss terms, or logits that are all zero whatever s is
    std::fill(dcols, dcols + m * D, 0.f);
    *dscale.ptr<float>() = 0.f;
    return;
  }
  const int64_t row_blocks = ceil_div(n, kRows), col_blocks = ceil_div(m, kCols);

  // Owned blocks accumulate into their rows of `out` directly when a pass has one chunk, else into
  // per-chunk scratch [chunks][rows, D] that is then summed in chunk order.
  auto reduce_parts = [&](const std::vector<float>& part, int64_t chunks, int64_t rows, float* out) {
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* o = out + r * D;
        std::copy(part.data() + r * D, part.data() + (r + 1) * D, o);
        for (int64_t c = 1; c < chunks; c++) {
          const float* p = part.data() + (c * rows + r) * D;
          for (int64_t d = 0; d < D; d++) o[d] += p[d];
        }
      }
    });
  };

  // drows = scale * dZ @ cols and ds = sum(dZ * logits): blocks of rows, chunks of column blocks.
  const Split sr(row_blocks, col_blocks);
  std::vector<float> rpart(sr.chunks > 1 ? size_t(sr.chunks * n * D) : 0);
  std::vector<double> ds_part(size_t(sr.units()), 0.0);
  parallel_for(sr.units(), 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> tile(static_cast<size_t>(kRows * kCols)), e(static_cast<size_t>(kCols));
    for (int64_t u = u0; u < u1; u++) {
      const int64_t ib = u / sr.chunks, c = u % sr.chunks;
      const int64_t i0 = ib * kRows, nr = std::min(kRows, n - i0);
      float* out = sr.chunks > 1 ? rpart.data() + (c * n + i0) * D : drows + i0 * D;
      const int64_t jb0 = Split::first(c, sr.chunks, col_blocks), jb1 = Split::first(c + 1, sr.chunks, col_blocks);
      for (int64_t jb = jb0; jb < jb1; jb++) {
        const int64_t j0 = jb * kCols, nc = std::min(kCols, m - j0);
        ce_tile(in, i0, nr, j0, nc, tile.data());
        ds_part[size_t(u)] += ce_grad_tile(in, lse, g, i0, nr, j0, nc, tile.data(), e.data());
        sgemm(false, false, nr, D, nc, in.scale, tile.data(), kCols, in.cols + j0 * D, D, jb == jb0 ? 0.f : 1.f, out,
              D, nullptr);
      }
    }
  });
  if (sr.chunks > 1) reduce_parts(rpart, sr.chunks, n, drows);
  rpart = {};

  // dcols = scale * dZ^T @ rows: blocks of columns, chunks of row blocks (the tiles are recomputed).
  const Split sc(col_blocks, row_blocks);
  std::vector<float> cpart(sc.chunks > 1 ? size_t(sc.chunks * m * D) : 0);
  parallel_for(sc.units(), 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> tile(static_cast<size_t>(kRows * kCols)), e(static_cast<size_t>(kCols));
    for (int64_t u = u0; u < u1; u++) {
      const int64_t jb = u / sc.chunks, c = u % sc.chunks;
      const int64_t j0 = jb * kCols, nc = std::min(kCols, m - j0);
      float* out = sc.chunks > 1 ? cpart.data() + (c * m + j0) * D : dcols + j0 * D;
      const int64_t ib0 = Split::first(c, sc.chunks, row_blocks), ib1 = Split::first(c + 1, sc.chunks, row_blocks);
      for (int64_t ib = ib0; ib < ib1; ib++) {
        const int64_t i0 = ib * kRows, nr = std::min(kRows, n - i0);
        ce_tile(in, i0, nr, j0, nc, tile.data());
        ce_grad_tile(in, lse, g, i0, nr, j0, nc, tile.data(), e.data());
        sgemm(true, false, nc, D, nr, in.scale, tile.data(), kCols, in.rows + i0 * D, D, ib == ib0 ? 0.f : 1.f, out,
              D, nullptr);
      }
    }
  });
  if (sc.chunks > 1) reduce_parts(cpart, sc.chunks, m, dcols);

  double ds = 0;
  for (double p : ds_part) ds += p;
  *dscale.ptr<float>() = float(ds);
}

}  // namespace tsclip
