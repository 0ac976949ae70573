// Runs the tensor-core kernels (gemm v1/v2, attention, clip loss, conv v1/v2) on the CPU through
// the emulator in emu.h and compares them with float64 references: fragment layouts, index
// arithmetic, barrier placement and edge handling, on a machine without a GPU. The sm_90a wgmma
// kernel is not covered (its copy engine and descriptors are not emulated); the lab checks it on a
// device.
//
//   g++ -std=c++17 -O1 -DTSCLIP_EMU -Inative native/cuda/dev/emu_test.cpp -o /tmp/emu_test && /tmp/emu_test
//   (native/cuda/dev/build.sh emu does the same)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ops/attention_kernels.cuh"
#include "ops/clip_loss_kernels.cuh"
#include "ops/conv_kernels.cuh"
#include "ops/gemm_kernels.cuh"

using namespace tsclip::tc;

namespace {

int g_failures = 0, g_checks = 0;

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return uint32_t(s >> 11);
  }
  float uniform() { return (next() & 0xffffff) / float(0x1000000); }  // [0,1)
  float normal() {
    float u = uniform() + 1e-7f, v = uniform();
    return std::sqrt(-2.f * std::log(u)) * std::cos(6.2831853f * v);
  }
};

// Device-side storage of f32 or bf16 values with a float mirror for references.
struct Buf {
  bool bf = false;
  std::vector<float> f;
  std::vector<uint16_t> h;
  Buf(size_t n, bool bf16, float fill = NAN) : bf(bf16), f(n, fill), h(bf16 ? n : 0, emu::f2bf_bits(fill)) {}
  void set(size_t i, float v) {
    if (bf) h[i] = emu::f2bf_bits(v), f[i] = emu::bf2f(h[i]);
    else f[i] = v;
  }
  float get(size_t i) const { return bf ? emu::bf2f(h[i]) : f[i]; }
  void* ptr() { return bf ? static_cast<void*>(h.data()) : static_cast<void*>(f.data()); }
  void fill_random(Rng& r, float scale = 1.f) {
    for (size_t i = 0; i < f.size(); i++) set(i, r.normal() * scale);
  }
};

// |ref - got| <= atol + rtol*|ref| for every element; NaN never passes.
bool check(const std::string& what, const std::vector<double>& ref, const std::vector<float>& got, double atol,
           double rtol) {
  g_checks++;
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    double e = std::fabs(ref[i] - double(got[i]));
    bool ok = e <= atol + rtol * std::fabs(ref[i]);  // false for NaN
    if (!ok) {
      if (!bad) first = i;
      bad++;
    }
    if (!(e <= worst)) worst = e;
  }
  if (bad) {
    g_failures++;
    std::printf("FAIL %s: %zu of %zu elements off (max err %.3g); first at %zu: ref %.6g got %.6g\n", what.c_str(), bad,
                ref.size(), worst, first, ref[first], double(got[first]));
    return false;
  }
  std::printf("ok   %s (max err %.3g over %zu)\n", what.c_str(), worst, ref.size());
  return true;
}

// ------------------------------------------------------------------------------------------------
// gemm

struct GemmCase {
  int M, N, K, batch;
  bool a_kmaj, b_kmaj, bf_in, bf_out, bias, accum, a_bcast, b_bcast;
  int act;
  float alpha;
  bool tf32_fast = false;
};

double act_ref(double v, int act) {
  switch (act) {
    case kActRelu: return v > 0 ? v : 0;
    case kActQuickGelu: return v / (1 + std::exp(-1.702 * v));
    case kActGelu: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    default: return v;
  }
}

void gemm_case(const GemmCase& g, bool use_mma, uint64_t seed) {
  Rng rng(seed);
  const int padA = 8, padB = 8;
  const int ba = g.a_bcast ? 1 : g.batch, bb = g.b_bcast ? 1 : g.batch;
  const int64_t lda = g.a_kmaj ? g.K + padA : g.M + padA;
  const int64_t a_mat = g.a_kmaj ? int64_t(g.M) * lda : int64_t(g.K) * lda;
  const int64_t ldb = g.b_kmaj ? g.K + padB : g.N + padB;
  const int64_t b_mat = g.b_kmaj ? int64_t(g.N) * ldb : int64_t(g.K) * ldb;
  Buf A(size_t(ba * a_mat), g.bf_in), B(size_t(bb * b_mat), g.bf_in), C(size_t(g.batch) * g.M * g.N, g.bf_out),
      bias(size_t(g.N), false);
  A.fill_random(rng);
  B.fill_random(rng);
  bias.fill_random(rng);
  if (g.accum) C.fill_random(rng);  // else left NaN: every element must be written

  GemmParams p;
  p.a = A.ptr(), p.b = B.ptr(), p.c = C.ptr(), p.bias = g.bias ? bias.ptr() : nullptr;
  p.M = g.M, p.N = g.N, p.K = g.K, p.batch = g.batch;
  p.sa_b = g.a_bcast ? 0 : a_mat;
  p.sa_m = g.a_kmaj ? lda : 1;
  p.sa_k = g.a_kmaj ? 1 : lda;
  p.sb_b = g.b_bcast ? 0 : b_mat;
  p.sb_k = g.b_kmaj ? 1 : ldb;
  p.sb_n = g.b_kmaj ? ldb : 1;
  p.sc_b = int64_t(g.M) * g.N, p.sc_m = g.N;
  p.alpha = g.alpha, p.accumulate = g.accum, p.act = g.act;
  p.a_bf16 = p.b_bf16 = g.bf_in, p.c_bf16 = g.bf_out;
  p.c_pairs = g.N % 2 == 0;
  p.tf32_fast = g.tf32_fast;

  std::vector<double> ref(C.f.size());
  for (int z = 0; z < g.batch; z++)
    for (int m = 0; m < g.M; m++)
      for (int n = 0; n < g.N; n++) {
        double s = 0;
        for (int k = 0; k < g.K; k++)
          s += double(A.get(size_t((g.a_bcast ? 0 : z) * a_mat + m * p.sa_m + k * p.sa_k))) *
               double(B.get(size_t((g.b_bcast ? 0 : z) * b_mat + k * p.sb_k + n * p.sb_n)));
        double v = g.alpha * s + (g.bias ? bias.get(size_t(n)) : 0.0);
        v = act_ref(v, g.act);
        size_t i = size_t(z) * g.M * g.N + size_t(m) * g.N + n;
        if (g.accum) v += C.get(i);
        ref[i] = v;
      }

  bool ak = false, bk = false;
  if (use_mma) {
    if (!gemm_mma_eligible(p, &ak, &bk)) {
      std::printf("FAIL gemm case not eligible for mma (test setup)\n");
      g_failures++;
      return;
    }
    dim3 grid((g.N + 127) / 128, (g.M + 127) / 128, g.batch);
    auto run = [&](auto tag, auto akc, auto bkc) {
      using T = decltype(tag);
      emu::launch(grid, dim3(256), MmaCfg<T>::SMEM_BYTES,
                  [&] { gemm_mma_kernel<T, decltype(akc)::value, decltype(bkc)::value>(p); });
    };
    using TT = std::true_type;
    using FF = std::false_type;
    if (g.bf_in) {
      if (ak && bk) run(__nv_bfloat16{}, TT{}, TT{});
      if (ak && !bk) run(__nv_bfloat16{}, TT{}, FF{});
      if (!ak && bk) run(__nv_bfloat16{}, FF{}, TT{});
      if (!ak && !bk) run(__nv_bfloat16{}, FF{}, FF{});
    } else {
      if (ak && bk) run(float{}, TT{}, TT{});
      if (ak && !bk) run(float{}, TT{}, FF{});
      if (!ak && bk) run(float{}, FF{}, TT{});
      if (!ak && !bk) run(float{}, FF{}, FF{});
    }
  } else {
    dim3 grid((g.N + 63) / 64, (g.M + 63) / 64, g.batch);
    emu::launch(grid, dim3(256), 0, [&] { gemm_simple_kernel(p); });
  }
  std::vector<float> got(C.f.size());
  for (size_t i = 0; i < got.size(); i++) got[i] = C.get(i);
  const bool tf32 = use_mma && !g.bf_in && g.tf32_fast;  // else 3xTF32: float32 accuracy
  const double atol = (tf32 ? 2e-3 : 2e-6) * std::sqrt(double(g.K)) * std::fabs(g.alpha) + 1e-5;
  const double rtol = g.bf_out ? 8e-3 : 1e-5;
  char name[256];
  std::snprintf(name, sizeof name, "gemm %s %s%s%s M%d N%d K%d b%d a:%s%s b:%s%s %s%s act%d alpha%.2f",
                use_mma ? "mma" : "simple", g.bf_in ? "bf16" : "f32", tf32 ? "(tf32)" : "", g.bf_out ? "->bf16" : "->f32", g.M, g.N, g.K,
                g.batch, g.a_kmaj ? "K" : "M", g.a_bcast ? "(bc)" : "", g.b_kmaj ? "K" : "N", g.b_bcast ? "(bc)" : "",
                g.bias ? "bias " : "", g.accum ? "accum " : "", g.act, double(g.alpha));
  check(name, ref, got, atol, rtol);
}

void test_gemm() {
  uint64_t seed = 1;
  // every operand layout, both element types, ragged edges in M, N and K
  for (int bf = 1; bf >= 0; bf--)
    for (int ak = 0; ak < 2; ak++)
      for (int bk = 0; bk < 2; bk++) {
        GemmCase g{136, 144, 72, 1, bool(ak), bool(bk), bool(bf), false, false, false, false, false, 0, 1.f};
        gemm_case(g, true, seed++);
      }
  // epilogue: bias, activations, accumulate, alpha, bf16 store, batch with a shared operand
  gemm_case({130, 40, 48, 2, true, true, true, true, true, false, false, true, kActQuickGelu, 0.5f}, true, seed++);
  gemm_case({64, 136, 32, 2, true, false, true, false, true, true, true, false, kActGelu, 1.f}, true, seed++);
  gemm_case({40, 24, 200, 1, false, true, false, false, false, true, false, false, kActRelu, -2.f}, true, seed++);
  gemm_case({72, 40, 96, 1, true, false, false, false, false, false, false, false, kActNone, 1.f, true}, true, seed++);
  gemm_case({8, 256, 16, 3, false, false, true, true, true, true, false, true, kActNone, 1.f}, true, seed++);
  // the fallback, odd sizes
  gemm_case({67, 33, 19, 2, true, false, false, false, true, true, false, true, kActQuickGelu, 0.75f}, false, seed++);
  gemm_case({5, 70, 65, 1, false, true, true, true, true, false, false, false, kActGelu, 1.f}, false, seed++);
}

// Norm-wise check for low-precision paths: ||ref - got|| <= rel * ||ref|| and every element within
// elem * rms(ref); NaN never passes.
bool check_norm(const std::string& what, const std::vector<double>& ref, const std::vector<float>& got, double rel,
                double elem) {
  double se = 0, sr = 0;
  for (size_t i = 0; i < ref.size(); i++) sr += ref[i] * ref[i];
  const double rms = std::sqrt(sr / double(ref.size() ? ref.size() : 1));
  for (size_t i = 0; i < ref.size(); i++) se += (ref[i] - got[i]) * (ref[i] - got[i]);
  const bool norm_ok = std::sqrt(se) <= rel * std::sqrt(sr);  // false for NaN
  if (!norm_ok) {
    g_checks++;
    g_failures++;
    std::printf("FAIL %s: relative error %.3g > %.3g\n", what.c_str(), std::sqrt(se / (sr > 0 ? sr : 1)), rel);
    return false;
  }
  return check(what + " (norm rel " + std::to_string(std::sqrt(se / (sr > 0 ? sr : 1))).substr(0, 8) + ")", ref, got,
               elem * rms + 1e-6, 0.0);
}

// ------------------------------------------------------------------------------------------------
// attention: q, k, v are views into one packed [B,S,3,H,D] projection (as the model calls it); the
// gradients land in a packed buffer of the same layout.

struct AttnCase {
  int B, H, Sq, Sk, D;
  bool causal, bf16, mma;
  float scale;
};

void attention_case(const AttnCase& c, uint64_t seed) {
  Rng rng(seed);
  const int B = c.B, H = c.H, Sq = c.Sq, Sk = c.Sk, D = c.D;
  const int S = Sq > Sk ? Sq : Sk;
  // packed [B,S,3,H,D]: q from rows < Sq, k/v from rows < Sk
  const int64_t sS = 3 * int64_t(H) * D, sB = int64_t(S) * sS;
  Buf qkv(size_t(B) * sB, c.bf16), grad(size_t(B) * sB, c.bf16);
  qkv.fill_random(rng);
  Buf o(size_t(B) * Sq * H * D, c.bf16), dout(size_t(B) * Sq * H * D, c.bf16);
  dout.fill_random(rng);
  std::vector<float> lse(size_t(B) * H * Sq, NAN);
  auto Q = [&](int b, int i, int h, int d) { return double(qkv.get(size_t(b * sB + i * sS + 0 * H * D + h * D + d))); };
  auto K = [&](int b, int j, int h, int d) { return double(qkv.get(size_t(b * sB + j * sS + 1 * H * D + h * D + d))); };
  auto V = [&](int b, int j, int h, int d) { return double(qkv.get(size_t(b * sB + j * sS + 2 * H * D + h * D + d))); };
  auto G = [&](int b, int i, int h, int d) { return double(dout.get(size_t(((b * Sq + i) * H + h) * D + d))); };

  // float64 reference
  std::vector<double> ro(o.f.size()), rlse(lse.size()), rdq(size_t(B) * Sq * H * D), rdk(size_t(B) * Sk * H * D),
      rdv(size_t(B) * Sk * H * D);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      std::vector<double> P(size_t(Sq) * Sk, 0.0), dS(size_t(Sq) * Sk, 0.0);
      for (int i = 0; i < Sq; i++) {
        int kend = c.causal ? std::min(Sk, std::max(0, i + Sk - Sq + 1)) : Sk;
        double mx = -INFINITY;
        std::vector<double> sc(size_t(Sk), 0.0);
        for (int j = 0; j < kend; j++) {
          double s = 0;
          for (int d = 0; d < D; d++) s += Q(b, i, h, d) * K(b, j, h, d);
          sc[size_t(j)] = s * c.scale;
          mx = std::max(mx, sc[size_t(j)]);
        }
        double l = 0;
        for (int j = 0; j < kend; j++) l += std::exp(sc[size_t(j)] - mx);
        rlse[size_t((b * H + h) * Sq + i)] = kend ? mx + std::log(l) : -INFINITY;
        for (int j = 0; j < kend; j++) P[size_t(i) * Sk + j] = std::exp(sc[size_t(j)] - mx) / l;
        for (int d = 0; d < D; d++) {
          double acc = 0;
          for (int j = 0; j < kend; j++) acc += P[size_t(i) * Sk + j] * V(b, j, h, d);
          ro[size_t(((b * Sq + i) * H + h) * D + d)] = acc;
        }
        // dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij)
        double dsum = 0;
        std::vector<double> dP(size_t(Sk), 0.0);
        for (int j = 0; j < kend; j++) {
          double s = 0;
          for (int d = 0; d < D; d++) s += G(b, i, h, d) * V(b, j, h, d);
          dP[size_t(j)] = s;
          dsum += P[size_t(i) * Sk + j] * s;
        }
        for (int j = 0; j < kend; j++) dS[size_t(i) * Sk + j] = P[size_t(i) * Sk + j] * (dP[size_t(j)] - dsum);
      }
      for (int i = 0; i < Sq; i++)
        for (int d = 0; d < D; d++) {
          double acc = 0;
          for (int j = 0; j < Sk; j++) acc += dS[size_t(i) * Sk + j] * K(b, j, h, d);
          rdq[size_t(((b * Sq + i) * H + h) * D + d)] = acc * c.scale;
        }
      for (int j = 0; j < Sk; j++)
        for (int d = 0; d < D; d++) {
          double ak = 0, av = 0;
          for (int i = 0; i < Sq; i++) {
            ak += dS[size_t(i) * Sk + j] * Q(b, i, h, d);
            av += P[size_t(i) * Sk + j] * G(b, i, h, d);
          }
          rdk[size_t(((b * Sk + j) * H + h) * D + d)] = ak * c.scale;
          rdv[size_t(((b * Sk + j) * H + h) * D + d)] = av;
        }
    }

  AttnParams p;
  auto view = [&](Buf& buf, int64_t off, int64_t sb, int64_t ss) {
    AttnView v;
    v.p = buf.bf ? static_cast<void*>(buf.h.data() + off) : static_cast<void*>(buf.f.data() + off);
    v.sb = sb, v.ss = ss, v.sh = D, v.bf = buf.bf;
    return v;
  };
  p.q = view(qkv, 0, sB, sS);
  p.k = view(qkv, int64_t(H) * D, sB, sS);
  p.v = view(qkv, 2 * int64_t(H) * D, sB, sS);
  p.o = view(o, 0, int64_t(Sq) * H * D, int64_t(H) * D);
  p.dout = view(dout, 0, int64_t(Sq) * H * D, int64_t(H) * D);
  p.dq = view(grad, 0, sB, sS);
  p.dk = view(grad, int64_t(H) * D, sB, sS);
  p.dv = view(grad, 2 * int64_t(H) * D, sB, sS);
  p.lse = lse.data();
  p.B = B, p.H = H, p.Sq = Sq, p.Sk = Sk, p.D = D, p.causal = c.causal, p.scale = c.scale;

  char name[160];
  std::snprintf(name, sizeof name, "attention %s %s B%d H%d Sq%d Sk%d D%d%s", c.mma ? "mma" : "simple",
                c.bf16 ? "bf16" : "f32", B, H, Sq, Sk, D, c.causal ? " causal" : "");
  // forward
  if (c.mma) {
    const int qtiles = (Sq + 63) / 64;
    auto run = [&](auto dc) {
      constexpr int DD = decltype(dc)::value;
      emu::launch(dim3(unsigned(B * H * qtiles)), dim3(128), AttnCfg<DD>::FWD_SMEM, [&] { attn_fwd_mma_kernel<DD>(p); });
    };
    if (D == 64) run(std::integral_constant<int, 64>{});
    if (D == 80) run(std::integral_constant<int, 80>{});
    if (D == 128) run(std::integral_constant<int, 128>{});
  } else {
    emu::launch(dim3(unsigned((int64_t(B) * H * Sq + 3) / 4)), dim3(128), 0, [&] { attn_fwd_simple_kernel<4>(p); });
  }
  std::vector<float> got(o.f.size());
  for (size_t i = 0; i < got.size(); i++) got[i] = o.get(i);
  if (c.bf16) check_norm(std::string(name) + " o", ro, got, 1e-2, 0.05);
  else check(std::string(name) + " o", ro, got, 2e-5, 2e-5);
  {
    std::vector<double> rl;
    std::vector<float> gl;
    bool inf_ok = true;
    for (size_t i = 0; i < lse.size(); i++) {
      if (std::isinf(rlse[i])) inf_ok &= std::isinf(lse[i]) && lse[i] < 0;
      else rl.push_back(rlse[i]), gl.push_back(lse[i]);
    }
    if (!inf_ok) g_failures++, g_checks++, std::printf("FAIL %s lse: rows without keys must give -inf\n", name);
    check(std::string(name) + " lse", rl, gl, c.bf16 ? 2e-3 : 2e-5, 1e-4);
  }

  // backward, from the reference o rounded to the storage type
  for (size_t i = 0; i < ro.size(); i++) o.set(i, float(ro[i]));
  for (size_t i = 0; i < lse.size(); i++) lse[i] = float(rlse[i]);
  std::vector<float> dsum(lse.size(), NAN);
  p.dsum = dsum.data();
  std::vector<float> dq_acc;
  emu::launch(dim3(unsigned((int64_t(B) * H * Sq + 3) / 4)), dim3(128), 0, [&] { attn_bwd_dsum_kernel(p); });
  if (c.mma) {
    if (Sk > 64) {
      dq_acc.assign(size_t(B) * Sq * H * D, 0.f);
      p.dq_acc = dq_acc.data();
    }
    const int ktiles = (Sk + 63) / 64;
    auto run = [&](auto dc) {
      constexpr int DD = decltype(dc)::value;
      emu::launch(dim3(unsigned(B * H * ktiles)), dim3(128), AttnCfg<DD>::BWD_SMEM, [&] { attn_bwd_mma_kernel<DD>(p); });
    };
    if (D == 64) run(std::integral_constant<int, 64>{});
    if (D == 80) run(std::integral_constant<int, 80>{});
    if (D == 128) run(std::integral_constant<int, 128>{});
    if (p.dq_acc) emu::launch(dim3(4), dim3(256), 0, [&] { attn_bwd_dq_convert_kernel(p); });
  } else {
    const unsigned gq = unsigned((int64_t(B) * H * Sq + 3) / 4), gk = unsigned((int64_t(B) * H * Sk + 3) / 4);
    emu::launch(dim3(gq), dim3(128), 0, [&] { attn_bwd_dq_simple_kernel<4>(p); });
    emu::launch(dim3(gk), dim3(128), 0, [&] { attn_bwd_dkv_simple_kernel<4>(p); });
  }
  auto gather = [&](int which, int rows) {
    std::vector<float> out(size_t(B) * rows * H * D);
    for (int b = 0; b < B; b++)
      for (int i = 0; i < rows; i++)
        for (int h = 0; h < H; h++)
          for (int d = 0; d < D; d++)
            out[size_t(((b * rows + i) * H + h) * D + d)] = grad.get(size_t(b * sB + i * sS + which * H * D + h * D + d));
    return out;
  };
  const char* names[3] = {" dq", " dk", " dv"};
  const std::vector<double>* refs[3] = {&rdq, &rdk, &rdv};
  for (int w = 0; w < 3; w++) {
    std::vector<float> g = gather(w, w == 0 ? Sq : Sk);
    if (c.bf16) check_norm(std::string(name) + names[w], *refs[w], g, 2e-2, 0.08);
    else check(std::string(name) + names[w], *refs[w], g, 5e-5, 5e-5);
  }
}

void test_attention() {
  uint64_t seed = 100;
  const float s64 = 0.125f;
  attention_case({2, 2, 50, 50, 64, false, true, true, s64}, seed++);
  attention_case({1, 2, 77, 77, 64, true, true, true, s64}, seed++);
  attention_case({1, 1, 130, 130, 80, false, true, true, 0.3f}, seed++);
  attention_case({1, 1, 70, 40, 128, true, true, true, 0.09f}, seed++);   // rows without keys
  attention_case({1, 1, 40, 100, 64, true, true, true, 0.2f}, seed++);    // more keys than queries
  attention_case({1, 2, 77, 77, 64, true, false, false, s64}, seed++);
  attention_case({1, 1, 33, 20, 72, true, false, false, 0.2f}, seed++);
  attention_case({1, 2, 50, 50, 64, false, true, false, s64}, seed++);
}

// ------------------------------------------------------------------------------------------------
// clip loss: the symmetric loss over (img, txt) and the one-sided loss of local rows against
// gathered columns, each through the row passes the op runs.

struct ClipCase {
  int n, m, D;
  int offset;      // one-sided only
  bool symmetric;  // else one-sided rows [n] vs columns [m]
  bool mma, bf16_out;
  float t;
};

void clip_case(const ClipCase& c, uint64_t seed) {
  Rng rng(seed);
  const int n = c.n, m = c.symmetric ? c.n : c.m, D = c.D;
  // L2-normalised rows, stored bf16 for the tensor-core path
  Buf A(size_t(n) * D, c.mma), Bm(size_t(m) * D, c.mma);
  auto normal_rows = [&](Buf& X, int rows) {
    for (int i = 0; i < rows; i++) {
      std::vector<float> v(static_cast<size_t>(D));
      double nn = 0;
      for (auto& x : v) x = rng.normal(), nn += double(x) * x;
      for (int d = 0; d < D; d++) X.set(size_t(i) * D + d, float(v[size_t(d)] / std::sqrt(nn)));
    }
  };
  normal_rows(A, n);
  normal_rows(Bm, m);
  // the label column of row i leans towards row i, so the loss is not trivially log(m); not so far
  // that the softmax saturates (P - 1 ~ 1e-20 is beyond any f32 arithmetic, and beyond training)
  const double et = std::exp(double(c.t)), g = 1.7;
  const float boost = float(std::min(0.4, 4.0 / et));
  for (int i = 0; i < n && i + c.offset < m; i++)
    for (int d = 0; d < D; d++) {
      size_t ia = size_t(i) * D + d, ib = size_t(i + c.offset) * D + d;
      Bm.set(ib, (1 - boost) * Bm.get(ib) + boost * A.get(ia));
    }
  std::vector<double> S(size_t(n) * m);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++) {
      double dot = 0;
      for (int d = 0; d < D; d++) dot += double(A.get(size_t(i) * D + d)) * Bm.get(size_t(j) * D + d);
      S[size_t(i) * m + j] = et * dot;
    }
  std::vector<double> lr(static_cast<size_t>(n)), lc(static_cast<size_t>(m));
  for (int i = 0; i < n; i++) {
    double mx = -INFINITY, l = 0;
    for (int j = 0; j < m; j++) mx = std::max(mx, S[size_t(i) * m + j]);
    for (int j = 0; j < m; j++) l += std::exp(S[size_t(i) * m + j] - mx);
    lr[size_t(i)] = mx + std::log(l);
  }
  for (int j = 0; j < m; j++) {
    double mx = -INFINITY, l = 0;
    for (int i = 0; i < n; i++) mx = std::max(mx, S[size_t(i) * m + j]);
    for (int i = 0; i < n; i++) l += std::exp(S[size_t(i) * m + j] - mx);
    lc[size_t(j)] = mx + std::log(l);
  }
  // loss and dZ
  double loss = 0;
  std::vector<double> dZ(size_t(n) * m);
  const double w = c.symmetric ? 0.5 / n : 1.0 / n;
  for (int i = 0; i < n; i++) {
    const int lab = i + (c.symmetric ? 0 : c.offset);
    if (c.symmetric) loss += w * (lr[size_t(i)] + lc[size_t(i)] - 2 * S[size_t(i) * m + lab]);
    else loss += w * (lr[size_t(i)] - S[size_t(i) * m + lab]);
    for (int j = 0; j < m; j++) {
      double z = w * (std::exp(S[size_t(i) * m + j] - lr[size_t(i)]) - (j == lab));
      if (c.symmetric) z += w * (std::exp(S[size_t(i) * m + j] - lc[size_t(j)]) - (j == lab));
      dZ[size_t(i) * m + j] = g * z;
    }
  }
  std::vector<double> rda(size_t(n) * D, 0.0), rdb(size_t(m) * D, 0.0);
  double rds = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m; j++) {
      const double z = dZ[size_t(i) * m + j];
      rds += z * S[size_t(i) * m + j];
      for (int d = 0; d < D; d++) {
        rda[size_t(i) * D + d] += et * z * Bm.get(size_t(j) * D + d);
        rdb[size_t(j) * D + d] += et * z * A.get(size_t(i) * D + d);
      }
    }

  float t_dev = c.t, g_dev = float(g);
  std::vector<float> lse_r(size_t(n), NAN), lse_c(size_t(m), NAN), loss_dev(1, NAN);
  ClipParams p;
  p.a = A.ptr(), p.b = Bm.ptr(), p.lda = D, p.ldb = D, p.a_bf = p.b_bf = c.mma;
  p.n = n, p.m = m, p.D = D, p.log_scale = &t_dev, p.dloss = &g_dev;
  auto row_pass = [&](const ClipParams& q, bool bwd) {
    if (c.mma) {
      const int dc = D <= 128 ? 128 : D <= 256 ? 256 : 512;
      dim3 grid(unsigned((q.n + 63) / 64), bwd ? unsigned((q.D + dc - 1) / dc) : 1u);
      if (!bwd) emu::launch(grid, dim3(256), ClipCfg::SMEM, [&] { clip_mma_kernel<128, false>(q); });
      else if (dc == 128) emu::launch(grid, dim3(256), ClipCfg::SMEM, [&] { clip_mma_kernel<128, true>(q); });
      else if (dc == 256) emu::launch(grid, dim3(256), ClipCfg::SMEM, [&] { clip_mma_kernel<256, true>(q); });
      else emu::launch(grid, dim3(256), ClipCfg::SMEM, [&] { clip_mma_kernel<512, true>(q); });
    } else {
      dim3 grid(unsigned((q.n + 3) / 4));
      if (!bwd) emu::launch(grid, dim3(128), 0, [&] { clip_rowlse_simple_kernel<16>(q); });
      else emu::launch(grid, dim3(128), 0, [&] { clip_bwd_simple_kernel<16>(q); });
    }
  };

  char name[160];
  std::snprintf(name, sizeof name, "clip %s %s n%d m%d D%d off%d t%.1f", c.symmetric ? "symmetric" : "one-sided",
                c.mma ? "mma" : "simple", n, m, D, c.symmetric ? 0 : c.offset, double(c.t));
  // forward
  {
    ClipParams q = p;
    q.lse_out = lse_r.data();
    row_pass(q, false);
    if (c.symmetric) {
      ClipParams q2 = clip_swapped(p);
      q2.lse_out = lse_c.data();
      row_pass(q2, false);
    }
    ClipParams ql = p;
    ql.offset = c.symmetric ? 0 : c.offset;
    emu::launch(dim3(1), dim3(1024), 0, [&] {
      clip_loss_reduce_kernel(ql, lse_r.data(), c.symmetric ? lse_c.data() : nullptr, float(w), float(c.symmetric ? 2 * w : w),
                              loss_dev.data());
    });
  }
  const double lse_tol = c.mma ? 2e-3 * et : 2e-5 * et;
  check(std::string(name) + " lse_row", lr, lse_r, lse_tol, 1e-5);
  if (c.symmetric) check(std::string(name) + " lse_col", std::vector<double>(lc.begin(), lc.end()), lse_c, lse_tol, 1e-5);
  check(std::string(name) + " loss", {loss}, loss_dev, lse_tol, 1e-4);

  // backward (statistics from the reference)
  for (int i = 0; i < n; i++) lse_r[size_t(i)] = float(lr[size_t(i)]);
  for (int j = 0; j < m; j++) lse_c[size_t(j)] = float(lc[size_t(j)]);
  Buf dA(size_t(n) * D, c.bf16_out), dB(size_t(m) * D, c.bf16_out);
  const int parts = c.mma ? (n + 63) / 64 : n;
  std::vector<float> ds_part(size_t(parts), NAN), ds(1, NAN);
  {
    ClipParams q, q2;
    if (c.symmetric) {
      q = p;
      q.lse_r = lse_r.data(), q.lse_c = lse_c.data();
      q.c_row = q.c_col = float(w);
      q2 = clip_swapped(q);  // columns' gradients: same dZ, roles of the statistics swapped
    } else {  // as the clip_ce_bwd op plans it
      ClipCeBwdPlan plan = clip_ce_bwd_plan(p, lse_r.data(), float(w), c.offset);
      q = plan.rows, q2 = plan.cols;
    }
    q.da = dA.ptr(), q.ldda = D, q.da_bf = c.bf16_out, q.ds_part = ds_part.data();
    row_pass(q, true);
    q2.da = dB.ptr(), q2.ldda = D, q2.da_bf = c.bf16_out, q2.ds_part = nullptr;
    row_pass(q2, true);
    emu::launch(dim3(1), dim3(1024), 0, [&] { clip_sum_kernel(ds_part.data(), parts, ds.data()); });
  }
  std::vector<float> ga(dA.f.size()), gb(dB.f.size());
  for (size_t i = 0; i < ga.size(); i++) ga[i] = dA.get(i);
  for (size_t i = 0; i < gb.size(); i++) gb[i] = dB.get(i);
  if (c.mma || c.bf16_out) {
    check_norm(std::string(name) + " da", rda, ga, 2e-2, 0.1);
    check_norm(std::string(name) + " db", rdb, gb, 2e-2, 0.1);
    check(std::string(name) + " dscale", {rds}, ds, 1e-3 * et * g, 2e-2);
  } else {
    check(std::string(name) + " da", rda, ga, 1e-6 * et, 1e-4);
    check(std::string(name) + " db", rdb, gb, 1e-6 * et, 1e-4);
    check(std::string(name) + " dscale", {rds}, ds, 1e-5 * et, 1e-4);
  }
}

void test_clip_loss() {
  uint64_t seed = 300;
  clip_case({100, 0, 64, 0, true, true, false, 2.0f}, seed++);
  clip_case({130, 0, 200, 0, true, true, true, 4.6f}, seed++);  // ragged D chunks, logit scale 100
  clip_case({64, 0, 520, 0, true, true, false, 3.0f}, seed++);   // two D slices in the backward
  clip_case({40, 150, 72, 70, false, true, false, 2.5f}, seed++); // one-sided, label offset
  clip_case({70, 0, 48, 0, true, false, false, 4.6f}, seed++);
  clip_case({30, 90, 40, 60, false, false, true, 1.0f}, seed++);
  // one-sided as clip_ce runs for a data-parallel shard: the last shard (offset + n == m), labels
  // crossing column tiles, ragged row blocks; odd D on the f32 path; a single row
  clip_case({70, 200, 40, 130, false, true, false, 4.6f}, seed++);
  clip_case({33, 97, 37, 64, false, false, false, 2.0f}, seed++);
  clip_case({1, 5, 9, 4, false, false, false, 3.0f}, seed++);
}

// ------------------------------------------------------------------------------------------------
// conv: the implicit-GEMM kernels of conv_kernels.cuh against float64 references of the three
// directions; v2 through the plan the op uses (tile shape, K splits, partial sums), v1 on a few.

struct ConvCase {
  int N, C, H, W, O, k, s, p;
  bool x_bf, w_bf;  // x and dy storage, w storage (either bf16: bf16 mma; both f32: tf32 products)
  bool out_bf, bias;
  bool tf32_fast = false;  // f32: plain tf32 instead of 3xTF32
  int splits = 0;          // weight gradient: imposed K splits (0: the plan's for 2 SMs)
  bool simple = false;     // v1 instead of v2
};

void conv_case(const ConvCase& c, uint64_t seed) {
  using namespace tsclip::convk;
  Rng rng(seed);
  const int Ho = (c.H + 2 * c.p - c.k) / c.s + 1, Wo = (c.W + 2 * c.p - c.k) / c.s + 1;
  const ConvShape s{c.N, c.C, c.H, c.W, c.O, c.k, c.k, Ho, Wo, c.s, c.p};
  const size_t nx = size_t(c.N) * c.C * c.H * c.W, nw = size_t(c.O) * c.C * c.k * c.k, ny = size_t(c.N) * c.O * Ho * Wo;
  Buf x(nx, c.x_bf), w(nw, c.w_bf), dy(ny, c.x_bf), bias(size_t(c.O), c.out_bf);
  Buf y(ny, c.out_bf), dx(nx, c.out_bf), dw(nw, c.out_bf);  // y, dx NaN: every element must be written
  x.fill_random(rng);
  w.fill_random(rng, 0.5f);
  dy.fill_random(rng);
  bias.fill_random(rng);
  dw.fill_random(rng);  // accumulated onto
  const std::vector<float> dw0 = [&] {
    std::vector<float> v(nw);
    for (size_t i = 0; i < nw; i++) v[i] = dw.get(i);
    return v;
  }();

  // float64 references, by scattering every (output pixel, tap) product
  std::vector<double> ry(ny, 0.0), rdx(nx, 0.0), rdw(nw, 0.0);
  for (int n = 0; n < c.N; n++)
    for (int o = 0; o < c.O; o++)
      for (int ho = 0; ho < Ho; ho++)
        for (int wo = 0; wo < Wo; wo++) {
          const size_t iy = ((size_t(n) * c.O + o) * Ho + ho) * Wo + wo;
          double acc = c.bias ? bias.get(size_t(o)) : 0.0;
          for (int ch = 0; ch < c.C; ch++)
            for (int ky = 0; ky < c.k; ky++)
              for (int kx = 0; kx < c.k; kx++) {
                const int h = ho * c.s - c.p + ky, ww = wo * c.s - c.p + kx;
                if (h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                const size_t ix = ((size_t(n) * c.C + ch) * c.H + h) * c.W + ww;
                const size_t iw = ((size_t(o) * c.C + ch) * c.k + ky) * c.k + kx;
                acc += double(x.get(ix)) * w.get(iw);
                rdx[ix] += double(dy.get(iy)) * w.get(iw);
                rdw[iw] += double(dy.get(iy)) * x.get(ix);
              }
          ry[iy] = acc;
        }
  for (size_t i = 0; i < nw; i++) rdw[i] += dw0[i];

  char name[200];
  std::snprintf(name, sizeof name, "conv %s N%d C%d %dx%d O%d k%d s%d p%d x:%s w:%s%s%s%s", c.simple ? "simple" : "mma",
                c.N, c.C, c.H, c.W, c.O, c.k, c.s, c.p, c.x_bf ? "bf16" : "f32", c.w_bf ? "bf16" : "f32",
                c.out_bf ? " ->bf16" : "", c.bias ? " bias" : "", c.tf32_fast ? " tf32" : "");
  const bool bf_mma = c.x_bf || c.w_bf;
  const int khw = c.k * c.k;
  auto run = [&](int dir, const void* a, bool abf, const void* b, bool bbf, Buf& out) -> std::string {
    if (c.simple) {
      const int64_t M = dir == kConvFwd ? c.O : dir == kConvBwdData ? c.C : c.O;
      const int64_t Nn = dir == kConvFwd ? ny / c.O : dir == kConvBwdData ? nx / c.C : int64_t(c.C) * khw;
      const int64_t K = dir == kConvFwd ? int64_t(c.C) * khw : dir == kConvBwdData ? int64_t(c.O) * khw : ny / c.O;
      auto grid = [&](int z) {
        return dim3(unsigned((Nn + kSimpleBN - 1) / kSimpleBN), unsigned((M + kSimpleBM - 1) / kSimpleBM), unsigned(z));
      };
      if (dir == kConvFwd) {
        ConvFwd q{a, b, c.bias ? bias.ptr() : nullptr, out.ptr(), abf, bbf, bias.bf, out.bf, s};
        emu::launch(grid(1), dim3(kSimpleThreads), 0, [&] { conv_simple_kernel(q, int(M), int(Nn), int(K), int(K)); });
      } else if (dir == kConvBwdData) {
        ConvBwdData q{a, b, out.ptr(), abf, bbf, out.bf, s};
        emu::launch(grid(1), dim3(kSimpleThreads), 0, [&] { conv_simple_kernel(q, int(M), int(Nn), int(K), int(K)); });
      } else {
        int64_t kps = 0;
        const int splits = conv_simple_splits(M, Nn, K, 2, &kps);
        std::vector<float> part(size_t(splits * M * Nn), NAN);
        ConvBwdWeight q{a, b, part.data(), abf, bbf, s};
        emu::launch(grid(splits), dim3(kSimpleThreads), 0, [&] { conv_simple_kernel(q, int(M), int(Nn), int(K), int(kps)); });
        emu::launch(dim3(2), dim3(256), 0, [&] { conv_sum_splits_kernel(part.data(), M * Nn, splits, out.ptr(), out.bf); });
        return " splits " + std::to_string(splits);
      }
      return "";
    }
    ConvTcParams p;
    p.s = s, p.dir = dir, p.a = a, p.b = b, p.out = out.ptr();
    p.bias = dir == kConvFwd && c.bias ? bias.ptr() : nullptr;
    p.a_bf16 = abf, p.b_bf16 = bbf, p.bias_bf16 = bias.bf, p.out_bf16 = out.bf;
    p.bf16_mma = abf || bbf, p.tf32_fast = c.tf32_fast && !p.bf16_mma;
    conv_tc_sizes(p);
    const ConvTcPlan pl = conv_tc_plan(p, 2, dir == kConvBwdWeight ? c.splits : 0);
    if (!pl.ok) return " (no plan)";
    p.k_per_split = pl.k_per_split;
    std::vector<float> part(size_t(pl.part_elems), NAN);
    if (pl.part_elems) p.part = part.data();
    const ConvKernel kern = conv_tc_kernel(p, pl);
    emu::launch(dim3(pl.gx, pl.gy, pl.gz), dim3(unsigned(pl.threads)), size_t(pl.smem), [&] { kern(p); });
    if (pl.part_elems) {
      const int64_t n = int64_t(p.M) * p.Ng;
      emu::launch(dim3(2), dim3(256), 0, [&] { conv_sum_splits_kernel(p.part, n, pl.splits, out.ptr(), out.bf); });
    }
    char tile[64];
    std::snprintf(tile, sizeof tile, " %dx%d%s splits %d", pl.bm, pl.bn, pl.b_kmajor ? "" : " B:c-major", pl.splits);
    return tile;
  };
  // Tolerances: bf16 operands multiply exactly and accumulate in f32 (a float32-sized error) unless
  // an f32 operand is rounded to bf16 on the way (relative 2^-9 per product: a norm-wise check);
  // tf32 keeps 10 bits; a bf16 output adds its own rounding.
  auto verify = [&](const std::string& what, const std::vector<double>& ref, const Buf& out, int K) {
    std::vector<float> got(ref.size());
    for (size_t i = 0; i < got.size(); i++) got[i] = out.get(i);
    const double rk = std::sqrt(double(K));
    const bool rounded_in = bf_mma && !(c.x_bf && c.w_bf) && !c.simple;
    const bool tf32 = !bf_mma && c.tf32_fast && !c.simple;
    if (rounded_in) check_norm(what, ref, got, 8e-3, 0.05);
    else check(what, ref, got, (tf32 ? 2e-3 : 2e-6) * rk + 1e-5, out.bf ? 8e-3 : 1e-5);
  };
  std::string t;
  t = run(kConvFwd, x.ptr(), x.bf, w.ptr(), w.bf, y);
  verify(std::string(name) + " fwd" + t, ry, y, c.C * khw);
  t = run(kConvBwdData, dy.ptr(), dy.bf, w.ptr(), w.bf, dx);
  verify(std::string(name) + " bwd_data" + t, rdx, dx, c.O * khw);
  t = run(kConvBwdWeight, dy.ptr(), dy.bf, x.ptr(), x.bf, dw);
  verify(std::string(name) + " bwd_weight" + t, rdw, dw, c.N * Ho * Wo);
}

void test_conv() {
  uint64_t seed = 500;
  //        N  C   H   W   O  k  s  p  x_bf   w_bf   out_bf bias
  // 3x3 same padding: ragged M (162), N (12, 16, 144) and K (144, 108, 162) against every tile;
  // two column tiles of the weight gradient
  conv_case({2, 16, 9, 9, 12, 3, 1, 1, true, true, false, true}, seed++);
  // 1x1: O > 128 (two 128-wide tiles), bwd data with the C-major weight tile, two 128-row tiles of
  // the weight gradient
  conv_case({2, 40, 7, 7, 136, 1, 1, 0, true, true, false, false}, seed++);
  // stride 2 with padding (bwd data skips the taps that reach no output), odd sizes
  conv_case({2, 6, 11, 10, 20, 3, 2, 1, true, true, true, true}, seed++);
  // the 3-channel stem: K = 27, stride 2
  conv_case({2, 3, 13, 13, 16, 3, 2, 1, true, true, false, true}, seed++);
  // non-overlapping patches (kernel = stride, no padding), f32 weight rounded on load, bf16 output
  conv_case({1, 3, 12, 12, 70, 4, 4, 0, true, false, true, true}, seed++);
  // f32: 3xTF32 (float32 accuracy), then plain tf32
  conv_case({2, 5, 8, 7, 9, 3, 1, 1, false, false, false, true}, seed++);
  conv_case({1, 24, 6, 6, 33, 1, 1, 0, false, false, false, true, true}, seed++);
  // weight gradient split over K (partial sums added in order), bf16 dw accumulated onto
  {
    ConvCase c{2, 4, 12, 12, 8, 3, 1, 1, true, true, true, false};
    c.splits = 3;
    conv_case(c, seed++);
  }
  // a weight gradient deep enough (K = 1024) for the plan's own split, f32 dw accumulated onto
  conv_case({4, 4, 16, 16, 8, 3, 1, 1, false, false, false, true}, seed++);
  // v1, the fp32 fallback, on mixed storage; then split over K
  for (ConvCase c : {ConvCase{2, 5, 9, 8, 7, 3, 2, 1, false, true, false, true},
                     ConvCase{4, 3, 16, 16, 6, 3, 1, 1, true, true, true, false}}) {
    c.simple = true;
    conv_case(c, seed++);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string only = argc > 1 ? argv[1] : "";
  if (only.empty() || only == "gemm") test_gemm();
  if (only.empty() || only == "attention") test_attention();
  if (only.empty() || only == "clip") test_clip_loss();
  if (only.empty() || only == "conv") test_conv();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}

