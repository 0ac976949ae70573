// Shared by the attention labs: a problem laid out as the model calls the op (q, k, v views into
// one packed [B,S,3,H,Dh] bf16 projection; o and dO [B,S,H,Dh]; dq, dk, dv views into a packed
// gradient of the projection), the launches of each version, and a float64 reference per head.
#pragma once
#include "lab.h"
#include "ops/attention_kernels.cuh"

namespace attn_lab {

using namespace tsclip::tc;

struct Shape {
  const char* label;
  int B, H, S, D;
  bool causal;
};

struct Problem {
  Shape sh;
  bool bf;
  lab::DevBuf qkv, o, dout, grad;
  float* lse = nullptr;
  float* dsum = nullptr;
  float* dq_acc = nullptr;
  int64_t sS, sB;
  Problem(const Shape& s, bool bf16, uint64_t seed)
      : sh(s),
        bf(bf16),
        qkv(size_t(s.B) * s.S * 3 * s.H * s.D, bf16),
        o(size_t(s.B) * s.S * s.H * s.D, bf16),
        dout(size_t(s.B) * s.S * s.H * s.D, bf16),
        grad(size_t(s.B) * s.S * 3 * s.H * s.D, bf16) {
    lab::Rng r(seed);
    qkv.fill_normal(r);
    dout.fill_normal(r);
    qkv.upload();
    dout.upload();
    sS = 3 * int64_t(s.H) * s.D, sB = int64_t(s.S) * sS;
    const size_t stats = size_t(s.B) * s.H * s.S;
    LAB_CHECK(cudaMalloc(&lse, stats * 4));
    LAB_CHECK(cudaMalloc(&dsum, stats * 4));
    LAB_CHECK(cudaMalloc(&dq_acc, std::max<size_t>(16, size_t(s.B) * s.S * s.H * s.D * 4)));
  }
  ~Problem() {
    cudaFree(lse);
    cudaFree(dsum);
    cudaFree(dq_acc);
  }
  AttnParams params(bool mma) const {
    AttnParams p;
    auto view = [&](const lab::DevBuf& b, int64_t off, int64_t sb, int64_t ss) {
      AttnView v;
      v.p = static_cast<char*>(b.dev) + off * (b.bf ? 2 : 4);
      v.sb = sb, v.ss = ss, v.sh = sh.D, v.bf = b.bf;
      return v;
    };
    const int64_t HD = int64_t(sh.H) * sh.D;
    p.q = view(qkv, 0, sB, sS);
    p.k = view(qkv, HD, sB, sS);
    p.v = view(qkv, 2 * HD, sB, sS);
    p.o = view(o, 0, int64_t(sh.S) * HD, HD);
    p.dout = view(dout, 0, int64_t(sh.S) * HD, HD);
    p.dq = view(grad, 0, sB, sS);
    p.dk = view(grad, HD, sB, sS);
    p.dv = view(grad, 2 * HD, sB, sS);
    p.lse = lse;
    p.dsum = dsum;
    p.B = sh.B, p.H = sh.H, p.Sq = sh.S, p.Sk = sh.S, p.D = sh.D, p.causal = sh.causal;
    p.scale = 1.f / std::sqrt(float(sh.D));
    p.dq_acc = attn_bwd_dq_acc_bytes(p, mma) ? dq_acc : nullptr;
    return p;
  }
  void fwd(bool mma, cudaStream_t s) const { LAB_CHECK(attn_fwd_launch(params(mma), s, mma)); }
  void bwd(bool mma, cudaStream_t s) const { LAB_CHECK(attn_bwd_launch(params(mma), s, mma)); }

  double q(int b, int i, int h, int d) const { return qkv.host[size_t(b * sB + i * sS + h * sh.D + d)]; }
  double k(int b, int j, int h, int d) const { return qkv.host[size_t(b * sB + j * sS + (sh.H + h) * sh.D + d)]; }
  double v(int b, int j, int h, int d) const { return qkv.host[size_t(b * sB + j * sS + (2 * sh.H + h) * sh.D + d)]; }
  double g(int b, int i, int h, int d) const { return dout.host[size_t(((int64_t(b) * sh.S + i) * sh.H + h) * sh.D + d)]; }
  size_t o_index(int b, int i, int h, int d) const { return size_t(((int64_t(b) * sh.S + i) * sh.H + h) * sh.D + d); }
  size_t grad_index(int which, int b, int i, int h, int d) const {
    return size_t(b * sB + i * sS + (which * sh.H + h) * sh.D + d);
  }
};

// float64 reference for head (b, h): o [S][D], lse [S], and the gradients for upstream dO.
struct HeadRef {
  std::vector<double> o, lse, dq, dk, dv;
};
inline HeadRef reference(const Problem& P, int b, int h) {
  const int S = P.sh.S, D = P.sh.D;
  const double scale = 1.0 / std::sqrt(double(D));
  HeadRef r;
  r.o.assign(size_t(S) * D, 0.0);
  r.lse.assign(size_t(S), -INFINITY);
  r.dq.assign(size_t(S) * D, 0.0);
  r.dk.assign(size_t(S) * D, 0.0);
  r.dv.assign(size_t(S) * D, 0.0);
  std::vector<double> Pm(size_t(S) * S, 0.0), dS(size_t(S) * S, 0.0);
  for (int i = 0; i < S; i++) {
    const int kend = P.sh.causal ? i + 1 : S;
    double mx = -INFINITY;
    std::vector<double> sc(static_cast<size_t>(S));
    for (int j = 0; j < kend; j++) {
      double s = 0;
      for (int d = 0; d < D; d++) s += P.q(b, i, h, d) * P.k(b, j, h, d);
      sc[size_t(j)] = s * scale;
      mx = std::max(mx, sc[size_t(j)]);
    }
    double l = 0;
    for (int j = 0; j < kend; j++) l += std::exp(sc[size_t(j)] - mx);
    r.lse[size_t(i)] = mx + std::log(l);
    for (int j = 0; j < kend; j++) Pm[size_t(i) * S + j] = std::exp(sc[size_t(j)] - mx) / l;
    for (int d = 0; d < D; d++) {
      double a = 0;
      for (int j = 0; j < kend; j++) a += Pm[size_t(i) * S + j] * P.v(b, j, h, d);
      r.o[size_t(i) * D + d] = a;
    }
    double dsum = 0;
    std::vector<double> dP(size_t(S), 0.0);
    for (int j = 0; j < kend; j++) {
      double s = 0;
      for (int d = 0; d < D; d++) s += P.g(b, i, h, d) * P.v(b, j, h, d);
      dP[size_t(j)] = s;
      dsum += Pm[size_t(i) * S + j] * s;
    }
    for (int j = 0; j < kend; j++) dS[size_t(i) * S + j] = Pm[size_t(i) * S + j] * (dP[size_t(j)] - dsum);
  }
  for (int i = 0; i < S; i++)
    for (int j = 0; j < S; j++) {
      const double ds = dS[size_t(i) * S + j], pr = Pm[size_t(i) * S + j];
      if (ds == 0 && pr == 0) continue;
      for (int d = 0; d < D; d++) {
        r.dq[size_t(i) * D + d] += ds * P.k(b, j, h, d) * scale;
        r.dk[size_t(j) * D + d] += ds * P.q(b, i, h, d) * scale;
        r.dv[size_t(j) * D + d] += pr * P.g(b, i, h, d);
      }
    }
  return r;
}

// Heads to check: all of a small problem, or a spread of (b, h) pairs of a large one.
inline std::vector<std::pair<int, int>> heads_to_check(const Shape& s) {
  std::vector<std::pair<int, int>> out;
  if (int64_t(s.B) * s.H <= 8) {
    for (int b = 0; b < s.B; b++)
      for (int h = 0; h < s.H; h++) out.push_back({b, h});
  } else {
    out = {{0, 0}, {s.B / 2, s.H - 1}, {s.B - 1, s.H / 2}};
  }
  return out;
}

inline double flops_fwd(const Shape& s) {
  const double pairs = s.causal ? 0.5 * s.S * (s.S + 1) : double(s.S) * s.S;
  return 4.0 * s.B * s.H * pairs * s.D;
}

}  // namespace attn_lab
