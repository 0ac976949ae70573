// Kernel lab: GEMM (the kernels of native/ops/gemm_kernels.cuh, called through the same launcher
// as the op). Validates every version on ragged problems in every operand layout against a float64
// CPU reference, then times them at CLIP's shapes (sampled validation of each timed result).
//
// Versions:
//   v1 simple  64x64 smem tiles, any strides and dtypes: the fallback, and the baseline.
//   v2 mma     mma.sync bf16 / tf32 + ldmatrix + 4-stage cp.async: tensor cores on sm_80+, any
//              operand layout (the backward's transposed views included).
//   v3 wgmma   sm_90a wgmma + TMA + mbarrier ring, producer/consumer warpgroups: Hopper's own
//              matrix path, K-contiguous bf16 operands (the forward of every linear layer).
//              wgmma128 / wgmma256: 128 x 128 or 128 x 256 block tiles (the op picks 256 when N
//              allows it and the tiles fill the device).
//
//   build: native/cuda/dev/build.sh   run: /tmp/tsclip-lab/gemm [--quick]
#include "lab.h"
#include "ops/gemm_kernels.cuh"

using namespace tsclip::tc;

namespace {

int g_major = 0;

struct Problem {
  int M, N, K, batch = 1;
  bool a_k = true, b_k = true;  // operand contiguous along K (else along M / N)
  bool bf = true, c_bf = false, bias = false, accum = false, a_bcast = false, b_bcast = false;
  int act = kActNone;
  float alpha = 1.f;
  bool tf32_fast = false;  // f32 operands as plain tf32 (else 3xTF32)
};

struct Setup {
  Problem pr;
  lab::DevBuf A, B, C, C0, bias;
  GemmParams p;
  int64_t lda, ldb, a_mat, b_mat;
  explicit Setup(const Problem& q, uint64_t seed)
      : pr(q),
        A(size_t(q.a_bcast ? 1 : q.batch) * (q.a_k ? size_t(q.M) * q.K : size_t(q.K) * q.M), q.bf),
        B(size_t(q.b_bcast ? 1 : q.batch) * (q.b_k ? size_t(q.N) * q.K : size_t(q.K) * q.N), q.bf),
        C(size_t(q.batch) * q.M * q.N, q.c_bf),
        C0(size_t(q.batch) * q.M * q.N, q.c_bf),
        bias(size_t(q.N), false) {
    lab::Rng r(seed);
    A.fill_normal(r, 0.5f);
    B.fill_normal(r, 0.5f);
    C0.fill_normal(r);
    bias.fill_normal(r);
    A.upload();
    B.upload();
    bias.upload();
    lda = q.a_k ? q.K : q.M;
    ldb = q.b_k ? q.K : q.N;
    a_mat = int64_t(q.M) * q.K, b_mat = int64_t(q.N) * q.K;
    p.a = A.dev, p.b = B.dev, p.c = C.dev, p.bias = q.bias ? bias.dev : nullptr;
    p.M = q.M, p.N = q.N, p.K = q.K, p.batch = q.batch;
    p.sa_b = q.a_bcast ? 0 : a_mat, p.sa_m = q.a_k ? lda : 1, p.sa_k = q.a_k ? 1 : lda;
    p.sb_b = q.b_bcast ? 0 : b_mat, p.sb_k = q.b_k ? 1 : ldb, p.sb_n = q.b_k ? ldb : 1;
    p.sc_b = int64_t(q.M) * q.N, p.sc_m = q.N;
    p.alpha = q.alpha, p.accumulate = q.accum, p.act = q.act;
    p.a_bf16 = p.b_bf16 = q.bf, p.c_bf16 = q.c_bf, p.c_pairs = q.N % 2 == 0;
    p.tf32_fast = q.tf32_fast;
  }
  // C before the run: NaN, or the accumulation base
  void reset_c() {
    if (pr.accum) {
      C.host = C0.host;
      C.upload();
    } else {
      C.poison();
    }
  }
  double ref(int z, int m, int n) const {
    double s = 0;
    const int64_t ao = (pr.a_bcast ? 0 : z) * a_mat, bo = (pr.b_bcast ? 0 : z) * b_mat;
    for (int k = 0; k < pr.K; k++)
      s += double(A.host[size_t(ao + m * p.sa_m + k * p.sa_k)]) * double(B.host[size_t(bo + k * p.sb_k + n * p.sb_n)]);
    double v = pr.alpha * s + (pr.bias ? bias.host[size_t(n)] : 0.0);
    switch (pr.act) {
      case kActRelu: v = v > 0 ? v : 0; break;
      case kActQuickGelu: v = v / (1 + std::exp(-1.702 * v)); break;
      case kActGelu: v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); break;
      default: break;
    }
    if (pr.accum) v += C0.host[size_t(z) * pr.M * pr.N + size_t(m) * pr.N + n];
    return v;
  }
};

std::string describe(const Problem& q) {
  char b[128];
  std::snprintf(b, sizeof b, "%dx%dx%d%s%s%s%s", q.M, q.N, q.K, q.batch > 1 ? "xb" : "",
                q.bf ? "" : q.tf32_fast ? "-tf32" : "-f32",
                q.a_k ? "" : "-At", q.b_k ? "-Bt" : "");
  return b;
}

// A version of the lab: a path, and for wgmma a tile width.
struct Version {
  const char* name;
  GemmPath path;
  int bn;
};
const Version kVersions[] = {
    {"simple", GemmPath::Simple, 0}, {"mma", GemmPath::Mma, 0}, {"wgmma128", GemmPath::Wgmma, 128}, {"wgmma256", GemmPath::Wgmma, 256}};

// Runs version v; returns false when the launcher took another path (operands not eligible).
bool run(Setup& st, const Version& v, cudaStream_t s) {
  GemmPath used = GemmPath::Auto;
  LAB_CHECK(gemm_launch(st.p, s, g_major, v.path, &used, v.bn));
  return used == v.path;
}

// Full validation on a small problem.
void validate_full(const Problem& q, const Version& v, uint64_t seed, cudaStream_t s) {
  const GemmPath path = v.path;
  Setup st(q, seed);
  st.reset_c();
  const std::string name = std::string(v.name) + " " + describe(q) + (q.bias ? " bias" : "") +
                           (q.accum ? " accum" : "") + (q.act ? " act" + std::to_string(q.act) : "") +
                           (q.c_bf ? " ->bf16" : "");
  if (!run(st, v, s)) {
    std::printf("  n/a  %-44s (operands not eligible for this path)\n", name.c_str());
    return;
  }
  LAB_CHECK(cudaStreamSynchronize(s));
  std::vector<float> got = st.C.download();
  std::vector<double> ref(got.size());
  for (int z = 0; z < q.batch; z++)
    for (int m = 0; m < q.M; m++)
      for (int n = 0; n < q.N; n++) ref[size_t(z) * q.M * q.N + size_t(m) * q.N + n] = st.ref(z, m, n);
  const bool tf32 = !q.bf && path != GemmPath::Simple && q.tf32_fast;
  const double atol = (tf32 ? 1.5e-3 : 2e-5) * std::sqrt(double(q.K)) + 1e-5;
  lab::validate(name, ref, got, atol, q.c_bf ? 8e-3 : 1e-5);
}

// Times one version on one problem; validates 2048 sampled outputs of the timed run.
void time_case(const char* label, Setup& st, const Version& v, lab::Timer& T) {
  const Problem& q = st.pr;
  const GemmPath path = v.path;
  st.reset_c();
  if (!run(st, v, T.s)) {
    std::printf("  %-10s %-28s n/a (operands not eligible)\n", v.name, label);
    return;
  }
  LAB_CHECK(cudaStreamSynchronize(T.s));
  std::vector<float> got = st.C.download();
  lab::Rng r(11);
  std::vector<double> ref;
  std::vector<size_t> idx;
  for (int i = 0; i < 2048; i++) {
    const int z = int(r.next() % unsigned(q.batch)), m = int(r.next() % unsigned(q.M)), n = int(r.next() % unsigned(q.N));
    ref.push_back(st.ref(z, m, n));
    idx.push_back(size_t(z) * q.M * q.N + size_t(m) * q.N + n);
  }
  const bool tf32 = !q.bf && path != GemmPath::Simple && q.tf32_fast;
  const double err = lab::validate(std::string(v.name) + " " + label + " (sampled)", ref, got,
                                   (tf32 ? 1.5e-3 : 3e-5) * std::sqrt(double(q.K)) + 1e-5, q.c_bf ? 8e-3 : 1e-5, idx);
  const int reps = double(q.M) * q.N * q.K > 2e11 ? 10 : 20;
  const double ms = T.median_ms([&] { LAB_CHECK(gemm_launch(st.p, T.s, g_major, path, nullptr, v.bn)); }, reps);
  const double flops = 2.0 * q.M * q.N * double(q.K) * q.batch;
  const double bytes = (st.A.bytes() + st.B.bytes() + st.C.bytes() * (q.accum ? 2 : 1));
  lab::result("gemm", label, v.name, ms, flops, bytes, err, err <= 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  lab::parse_args(argc, argv);
  lab::device_banner("gemm");
  cudaDeviceProp prop{};
  LAB_CHECK(cudaGetDeviceProperties(&prop, 0));
  g_major = prop.major;
  lab::Timer T;
  // Two rounds: the sm_80 paths, then wgmma, so that a fault or hang in the untried Hopper path
  // (the step's timeout ends it) cannot hide the others' results; lines are flushed as they come.
  struct Named {
    const char* label;
    Problem q;
  };
  auto P = [](int M, int N, int K, bool ak = true, bool bk = true, bool bf = true, bool cbf = true) {
    Problem q{M, N, K};
    q.a_k = ak, q.b_k = bk, q.bf = bf, q.c_bf = cbf;
    return q;
  };
  const Named cases[] = {
      {"vitb32-qkv-12800x2304x768", P(12800, 2304, 768)},
      {"vitb32-out-12800x768x768", P(12800, 768, 768)},
      {"vitb32-fc-12800x3072x768", P(12800, 3072, 768)},
      {"vitb32-proj-12800x768x3072", P(12800, 768, 3072)},
      {"text-qkv-19712x1536x512", P(19712, 1536, 512)},
      {"text-fc-19712x2048x512", P(19712, 2048, 512)},
      {"text-proj-19712x512x2048", P(19712, 512, 2048)},
      {"square-8192", P(8192, 8192, 8192)},
      {"bwd-dx-12800x768x3072", P(12800, 768, 3072, true, false)},
      {"bwd-dw-3072x768x12800", P(3072, 768, 12800, false, false, true, false)},
      {"f32-3xtf32-12800x768x768", P(12800, 768, 768, true, true, false, false)},
      {"f32-tf32-12800x768x768", P(12800, 768, 768, true, true, false, false)},
  };
  uint64_t seed = 1;
  for (int round = 0; round < 2; round++) {
    std::vector<Version> vs;
    for (const Version& v : kVersions)
      if ((v.path == GemmPath::Wgmma) == (round == 1)) vs.push_back(v);
    if (round == 1 && g_major != 9) {
      std::printf("-- wgmma skipped: sm_%d0 is not Hopper\n", g_major);
      break;
    }
    std::printf("-- validation of %s (full, float64 reference)\n", round ? "wgmma" : "simple, mma");
    for (const Version& v : vs)
      for (int bf = 1; bf >= 0; bf--)
        for (int ak = 1; ak >= 0; ak--)
          for (int bk = 1; bk >= 0; bk--) {
            if (v.path == GemmPath::Wgmma && !(bf && ak && bk)) continue;
            Problem q{264, 200, 160};  // ragged against every tile size; M*N*K above wgmma's minimum
            q.a_k = ak, q.b_k = bk, q.bf = bf;
            validate_full(q, v, seed++, T.s);
          }
    for (const Version& v : vs) {
      Problem q{320, 136, 200, 2};  // batch with a shared weight, every epilogue feature
      q.b_bcast = true, q.bias = true, q.act = kActQuickGelu, q.alpha = 0.5f, q.c_bf = true;
      validate_full(q, v, seed++, T.s);
      Problem r{136, 264, 240, 3};
      r.accum = true, r.bias = true, r.act = kActGelu, r.a_bcast = true;
      validate_full(r, v, seed++, T.s);
    }
    if (round == 0) {
      Problem f{264, 200, 160};  // f32 operands as plain tf32
      f.bf = false, f.tf32_fast = true;
      validate_full(f, kVersions[1], seed++, T.s);
    }
    if (lab::g_quick) continue;

    std::printf("-- timing of %s (median of event-timed runs, L2 flushed)\n", round ? "wgmma" : "simple, mma");
    for (Named c : cases) {
      c.q.tf32_fast = std::strncmp(c.label, "f32-tf32", 8) == 0;
      if (round == 1 && !c.q.bf) continue;
      Setup st(c.q, 7);
      for (const Version& v : vs) {
        // the fallback once per element type, as the baseline
        if (v.path == GemmPath::Simple && std::strcmp(c.label, "vitb32-out-12800x768x768") != 0 &&
            std::strcmp(c.label, "f32-3xtf32-12800x768x768") != 0)
          continue;
        time_case(c.label, st, v, T);
      }
    }
  }
  return lab::finish("gemm");
}
