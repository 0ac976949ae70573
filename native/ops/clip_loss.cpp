// CPU CLIP contrastive loss: the mean of the image->text and text->image cross-entropies over
// logits L = exp(s) * img @ txt^T with the matching pair on the diagonal. The N x N logits are
// never stored: tiles of kTile x kTile come from sgemm, row log-sum-exps are finished per block
// of rows, and column ones are merged from per-chunk running (max, sum) pairs. The backward
// recomputes the tiles twice (once per block of rows for dimg and ds, once per block of columns
// for dtxt), so no pass needs more than a tile and its own output rows.
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

}  // namespace tsclip
