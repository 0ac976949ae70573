// Kernel lab: the tiled contrastive loss (native/ops/clip_loss_kernels.cuh), run the way the op runs
// it: forward = two row passes (lse_row over (img, txt), lse_col over (txt, img)) and a reduction;
// backward = two row passes (dimg, dtxt) and a sum for dscale. No N x N buffer anywhere: the extra
// memory printed is everything the loss allocates besides its inputs and outputs.
// Validated in full against a float64 CPU reference at small N (symmetric and the one-sided
// data-parallel form with a label offset), and on sampled rows at large N.
//
// Versions:
//   v1 simple  one warp per row, fp32 (exact path for f32 inputs).
//   v2 mma     bf16 mma.sync, 64-row blocks walking 64-column tiles, D streamed in 64-wide chunks
//              through a 3-stage cp.async ring; backward keeps a DC-wide slice of da in registers.
//
//   build: native/cuda/dev/build.sh   run: /tmp/tsclip-lab/clip_loss [--quick]
#include "lab.h"
#include "ops/clip_loss_kernels.cuh"

using namespace tsclip::tc;

namespace {

struct Loss {
  int n, m, D, offset;
  bool symmetric, bf;
  double t;
  lab::DevBuf A, B, dA, dB;
  float *lse_r, *lse_c, *loss, *dscale, *ds_part, *scal;  // scal: [t, g]
  Loss(int n_, int m_, int D_, int off, bool sym, bool bf16, double t_, uint64_t seed)
      : n(n_), m(sym ? n_ : m_), D(D_), offset(sym ? 0 : off), symmetric(sym), bf(bf16), t(t_),
        A(size_t(n_) * D_, bf16), B(size_t(sym ? n_ : m_) * D_, bf16), dA(size_t(n_) * D_, bf16),
        dB(size_t(sym ? n_ : m_) * D_, bf16) {
    lab::Rng r(seed);
    auto unit_rows = [&](lab::DevBuf& X, int rows) {
      std::vector<float> v(static_cast<size_t>(D));
      for (int i = 0; i < rows; i++) {
        double nn = 0;
        for (auto& x : v) x = r.normal(), nn += double(x) * x;
        const float inv = float(1 / std::sqrt(nn));
        for (int d = 0; d < D; d++) X.host[size_t(i) * D + d] = v[size_t(d)] * inv;
      }
    };
    unit_rows(A, n);
    unit_rows(B, m);
    // label columns lean towards their rows (a loss below log N, as in training; not saturated)
    const float boost = float(std::min(0.4, 4.0 / std::exp(t)));
    for (int i = 0; i < n && i + offset < m; i++)
      for (int d = 0; d < D; d++) {
        float& b = B.host[size_t(i + offset) * D + d];
        b = (1 - boost) * b + boost * A.host[size_t(i) * D + d];
      }
    for (size_t i = 0; i < A.n; i++) A.set(i, A.host[i]);
    for (size_t i = 0; i < B.n; i++) B.set(i, B.host[i]);
    A.upload();
    B.upload();
    LAB_CHECK(cudaMalloc(&lse_r, size_t(n) * 4));
    LAB_CHECK(cudaMalloc(&lse_c, size_t(m) * 4));
    LAB_CHECK(cudaMalloc(&loss, 4));
    LAB_CHECK(cudaMalloc(&dscale, 4));
    LAB_CHECK(cudaMalloc(&ds_part, size_t(std::max(n, 64)) * 4));
    LAB_CHECK(cudaMalloc(&scal, 8));
    const float h[2] = {float(t), 1.f};
    LAB_CHECK(cudaMemcpy(scal, h, 8, cudaMemcpyHostToDevice));
  }
  ~Loss() {
    for (float* p : {lse_r, lse_c, loss, dscale, ds_part, scal}) cudaFree(p);
  }
  // bytes the loss itself allocates (the op's workspace): the dscale partials
  size_t workspace(bool mma) const { return size_t(mma ? clip_row_blocks(n) : n) * 4; }
  double w() const { return symmetric ? 0.5 / n : 1.0 / n; }

  ClipParams base() const {
    ClipParams p;
    p.a = A.dev, p.b = B.dev, p.lda = p.ldb = D, p.a_bf = p.b_bf = bf;
    p.n = n, p.m = m, p.D = D, p.log_scale = scal, p.dloss = scal + 1, p.offset = offset;
    return p;
  }
  void forward(bool mma, cudaStream_t s) const {
    ClipParams p = base();
    p.lse_out = lse_r;
    LAB_CHECK(clip_row_pass(p, s, mma, false));
    if (symmetric) {
      ClipParams q = clip_swapped(p);
      q.lse_out = lse_c;
      LAB_CHECK(clip_row_pass(q, s, mma, false));
    }
    clip_loss_reduce_kernel<<<1, 1024, 0, s>>>(p, lse_r, symmetric ? lse_c : nullptr, float(w()),
                                               float(symmetric ? 2 * w() : w()), loss);
    LAB_CHECK(cudaGetLastError());
  }
  void backward(bool mma, cudaStream_t s) const {
    ClipParams p = base();
    p.lse_r = lse_r, p.c_row = float(w());
    if (symmetric) p.lse_c = lse_c, p.c_col = float(w());
    p.da = dA.dev, p.ldda = D, p.da_bf = bf, p.ds_part = ds_part;
    LAB_CHECK(clip_row_pass(p, s, mma, true));
    ClipParams q = clip_swapped(p);
    q.da = dB.dev, q.ds_part = nullptr;
    LAB_CHECK(clip_row_pass(q, s, mma, true));
    clip_sum_kernel<<<1, 1024, 0, s>>>(ds_part, mma ? clip_row_blocks(n) : n, dscale);
    LAB_CHECK(cudaGetLastError());
  }

  // float64 logit
  double logit(int i, int j) const {
    double s = 0;
    for (int d = 0; d < D; d++) s += double(A.host[size_t(i) * D + d]) * B.host[size_t(j) * D + d];
    return std::exp(t) * s;
  }
  double row_lse(int i) const {
    std::vector<double> s(static_cast<size_t>(m));
    double mx = -INFINITY, l = 0;
    for (int j = 0; j < m; j++) s[size_t(j)] = logit(i, j), mx = std::max(mx, s[size_t(j)]);
    for (int j = 0; j < m; j++) l += std::exp(s[size_t(j)] - mx);
    return mx + std::log(l);
  }
  double col_lse(int j) const {
    std::vector<double> s(static_cast<size_t>(n));
    double mx = -INFINITY, l = 0;
    for (int i = 0; i < n; i++) s[size_t(i)] = logit(i, j), mx = std::max(mx, s[size_t(i)]);
    for (int i = 0; i < n; i++) l += std::exp(s[size_t(i)] - mx);
    return mx + std::log(l);
  }
};

std::vector<float> dl(const float* p, size_t n) {
  std::vector<float> v(n);
  LAB_CHECK(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost));
  return v;
}

// Full float64 check of loss, statistics and gradients (small n, m).
void validate_full(const char* label, bool mma, Loss& L, cudaStream_t s) {
  const std::string name = std::string(mma ? "mma " : "simple ") + label;
  L.dA.poison();
  L.dB.poison();
  L.forward(mma, s);
  L.backward(mma, s);
  LAB_CHECK(cudaStreamSynchronize(s));
  const int n = L.n, m = L.m, D = L.D;
  std::vector<double> S(size_t(n) * m), lr(static_cast<size_t>(n)), lc(static_cast<size_t>(m), 0.0);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++) S[size_t(i) * m + j] = L.logit(i, j);
  for (int i = 0; i < n; i++) lr[size_t(i)] = L.row_lse(i);
  if (L.symmetric)
    for (int j = 0; j < m; j++) lc[size_t(j)] = L.col_lse(j);
  double loss = 0, rds = 0;
  const double w = L.w(), et = std::exp(L.t);
  std::vector<double> rda(size_t(n) * D, 0.0), rdb(size_t(m) * D, 0.0);
  for (int i = 0; i < n; i++) {
    const int lab_ = i + L.offset;
    loss += w * (lr[size_t(i)] - S[size_t(i) * m + lab_]);
    if (L.symmetric) loss += w * (lc[size_t(i)] - S[size_t(i) * m + lab_]);
    for (int j = 0; j < m; j++) {
      double z = w * (std::exp(S[size_t(i) * m + j] - lr[size_t(i)]) - (j == lab_));
      if (L.symmetric) z += w * (std::exp(S[size_t(i) * m + j] - lc[size_t(j)]) - (j == lab_));
      rds += z * S[size_t(i) * m + j];
      for (int d = 0; d < D; d++) {
        rda[size_t(i) * D + d] += et * z * L.B.host[size_t(j) * D + d];
        rdb[size_t(j) * D + d] += et * z * L.A.host[size_t(i) * D + d];
      }
    }
  }
  const double tol = mma ? 2e-3 * et : 3e-5 * et;
  lab::validate(name + " lse_row", lr, dl(L.lse_r, size_t(n)), tol, 1e-5);
  if (L.symmetric) lab::validate(name + " lse_col", lc, dl(L.lse_c, size_t(m)), tol, 1e-5);
  lab::validate(name + " loss", {loss}, dl(L.loss, 1), tol, 1e-4);
  if (mma) {
    lab::validate_norm(name + " dimg", rda, L.dA.download(), 2e-2, 0.1);
    lab::validate_norm(name + " dtxt", rdb, L.dB.download(), 2e-2, 0.1);
    lab::validate(name + " dscale", {rds}, dl(L.dscale, 1), 2e-3 * et, 2e-2);
  } else {
    lab::validate(name + " dimg", rda, L.dA.download(), 1e-6 * et, 1e-4);
    lab::validate(name + " dtxt", rdb, L.dB.download(), 1e-6 * et, 1e-4);
    lab::validate(name + " dscale", {rds}, dl(L.dscale, 1), 1e-5 * et, 1e-4);
  }
}

// Large N: lse of a few rows and columns, and a few rows of dimg, against float64.
double validate_sampled(const char* label, Loss& L) {
  std::vector<float> lr = dl(L.lse_r, size_t(L.n)), lc = dl(L.lse_c, size_t(L.m));
  std::vector<double> ref;
  std::vector<float> got;
  const int rows[4] = {0, L.n / 3, L.n / 2 + 1, L.n - 1};
  for (int i : rows) ref.push_back(L.row_lse(i)), got.push_back(lr[size_t(i)]);
  for (int j : rows) ref.push_back(L.col_lse(j)), got.push_back(lc[size_t(j)]);
  const double et = std::exp(L.t);
  double e = lab::validate(std::string("mma ") + label + " lse (8 sampled)", ref, got, 2e-3 * et, 1e-5);
  // dimg_i = exp(t) sum_j dZ_ij txt_j with the device's statistics (checked just above)
  std::vector<float> da = L.dA.download();
  std::vector<double> rg;
  std::vector<size_t> idx;
  const double w = L.w();
  for (int i : {1, L.n / 2}) {
    std::vector<double> acc(static_cast<size_t>(L.D), 0.0);
    for (int j = 0; j < L.m; j++) {
      const double s = L.logit(i, j);
      double z = w * (std::exp(s - lr[size_t(i)]) + std::exp(s - lc[size_t(j)]) - 2.0 * (j == i));
      for (int d = 0; d < L.D; d++) acc[size_t(d)] += et * z * L.B.host[size_t(j) * L.D + d];
    }
    for (int d = 0; d < L.D; d++) rg.push_back(acc[size_t(d)]), idx.push_back(size_t(i) * L.D + d);
  }
  e = std::max(e, lab::validate_norm(std::string("mma ") + label + " dimg (2 sampled rows)", rg, da, 3e-2, 0.15, idx));
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  lab::parse_args(argc, argv);
  lab::device_banner("clip_loss");
  lab::Timer T;
  const double t100 = std::log(100.0);  // CLIP's logit scale at the end of training

  std::printf("-- validation (float64 reference)\n");
  {
    Loss a(300, 0, 512, 0, true, false, t100, 1);
    validate_full("symmetric n300 D512 f32", false, a, T.s);
    Loss b(300, 0, 512, 0, true, true, t100, 2);
    validate_full("symmetric n300 D512", true, b, T.s);
    Loss c(200, 0, 768, 0, true, true, std::log(20.0), 3);  // two D slices in the backward
    validate_full("symmetric n200 D768", true, c, T.s);
    Loss d(130, 390, 256, 130, false, true, t100, 4);  // local rows vs gathered columns, rank 1 of 3
    validate_full("one-sided n130 m390 off130 D256", true, d, T.s);
    Loss e(70, 210, 96, 140, false, false, 2.0, 5);
    validate_full("one-sided n70 m210 off140 D96 f32", false, e, T.s);
  }
  if (lab::g_quick) return lab::finish("clip_loss");

  std::printf("-- timing (bf16 in, D=512, logit scale 100; median, L2 flushed)\n");
  for (int N : {8192, 32768, 262144}) {
    Loss L(N, 0, 512, 0, true, true, t100, 10 + N);
    const bool huge = N > 100000;
    const int reps = huge ? 1 : N > 10000 ? 5 : 10, warm = huge ? 0 : 2;
    L.forward(true, T.s);
    L.backward(true, T.s);
    LAB_CHECK(cudaStreamSynchronize(T.s));
    const double err = validate_sampled(("N" + std::to_string(N)).c_str(), L);
    const double n2d = double(N) * N * 512;
    const std::string label = "N" + std::to_string(N) + "-D512";
    const double io = double(L.A.bytes()) * 2;
    const double ms_f = T.median_ms([&] { L.forward(true, T.s); }, reps, warm);
    lab::result("clip_loss", label, "mma-fwd", ms_f, 4 * n2d, io, err, err <= 1.0);
    const double ms_b = T.median_ms([&] { L.backward(true, T.s); }, reps, warm);
    lab::result("clip_loss", label, "mma-bwd", ms_b, 8 * n2d, 2 * io, err, err <= 1.0);
    lab::result("clip_loss", label, "mma-fwdbwd", ms_f + ms_b, 12 * n2d, 3 * io, err, err <= 1.0);
    std::printf("  extra device memory of the loss at N=%d: %.1f KiB (inputs %.1f MiB)\n", N,
                L.workspace(true) / 1024.0, io / 1048576.0);
    std::printf("RESULT clip_loss %s memory ms=0 tflops=0 gbs=0 err=0 ok=1 extra_mib=%.3f\n", label.c_str(),
                L.workspace(true) / 1048576.0);
  }
  return lab::finish("clip_loss");
}
