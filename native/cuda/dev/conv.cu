// Kernel lab: 2-D convolution as implicit GEMM (the kernels of native/ops/conv_kernels.cuh, planned
// and launched as the conv ops run them). Validates both versions in all three directions against
// a float64 CPU reference on small problems (3x3 and 1x1, stride 1 and 2, padding, the 3-channel
// stem, non-overlapping patches, ragged tile edges, a K split), then times them at the convolution
// shapes of CLIP's ModifiedResNet (RN50 at 224, batch 64), validating 2048 sampled outputs of each
// timed result (512 of the weight gradient, whose reference is long).
//
// Versions:
//   v1 simple  fp32 FMA, 64x64 tiles through shared memory: the exact fallback, and the baseline.
//   v2 mma     mma.sync tensor cores, operands gathered (im2col in the load) into double-buffered
//              shared tiles: bf16 m16n8k16 for bf16 tensors; for f32 tensors 3xTF32 (float32
//              accuracy, the op's default) or plain tf32 (allow_tf32).
//
//   build: native/cuda/dev/build.sh   run: /tmp/tsclip-lab/conv [--quick]
#include "lab.h"
#include "ops/conv_kernels.cuh"

using namespace tsclip::convk;

namespace {

int g_sms = 0;

enum Version { kV1 = 1, kV2 = 2 };
const char* kDirName[3] = {"fwd", "bwd_data", "bwd_weight"};

struct Problem {
  int N, C, H, W, O, k, s, p;
  bool bf = true;          // every tensor bf16 (else f32)
  bool tf32_fast = false;  // f32: plain tf32 instead of 3xTF32
  bool bias = true;
  int splits = 0;          // v2 weight gradient: imposed K splits (0: the plan's)
  int Ho() const { return (H + 2 * p - k) / s + 1; }
  int Wo() const { return (W + 2 * p - k) / s + 1; }
  ConvShape shape() const { return ConvShape{N, C, H, W, O, k, k, Ho(), Wo(), s, p}; }
  size_t nx() const { return size_t(N) * C * H * W; }
  size_t nw() const { return size_t(O) * C * k * k; }
  size_t ny() const { return size_t(N) * O * Ho() * Wo(); }
  // GEMM depth of each direction (for tolerances)
  int depth(int dir) const { return dir == kConvFwd ? C * k * k : dir == kConvBwdData ? O * k * k : N * Ho() * Wo(); }
};

std::string describe(const Problem& q) {
  char b[128];
  std::snprintf(b, sizeof b, "N%d C%d %dx%d O%d k%d s%d p%d %s", q.N, q.C, q.H, q.W, q.O, q.k, q.s, q.p,
                q.bf ? "bf16" : q.tf32_fast ? "f32-tf32" : "f32");
  return b;
}

struct Setup {
  Problem q;
  lab::DevBuf x, w, dy, bias, y, dx, dw, dw0;
  float* part = nullptr;  // split-K partial sums of the weight gradient (v1 and v2)
  size_t part_elems = 0;
  Setup(const Problem& pr, uint64_t seed)
      : q(pr), x(pr.nx(), pr.bf), w(pr.nw(), pr.bf), dy(pr.ny(), pr.bf), bias(size_t(pr.O), pr.bf),
        y(pr.ny(), pr.bf), dx(pr.nx(), pr.bf), dw(pr.nw(), pr.bf), dw0(pr.nw(), pr.bf) {
    lab::Rng r(seed);
    x.fill_normal(r);
    w.fill_normal(r, 0.5f);
    dy.fill_normal(r);
    bias.fill_normal(r);
    dw0.fill_normal(r);
    x.upload(), w.upload(), dy.upload(), bias.upload();
    // the larger partial-sum buffer of the two versions' plans
    int64_t kps = 0;
    const int64_t M = q.O, Nn = int64_t(q.C) * q.k * q.k, K = int64_t(q.N) * q.Ho() * q.Wo();
    part_elems = size_t(conv_simple_splits(M, Nn, K, g_sms, &kps)) * size_t(M * Nn);
    ConvTcParams p = params(kConvBwdWeight);
    const ConvTcPlan pl = conv_tc_plan(p, g_sms, q.splits);
    part_elems = std::max(part_elems, size_t(pl.part_elems));
    LAB_CHECK(cudaMalloc(&part, std::max<size_t>(part_elems, 1) * sizeof(float)));
  }
  ~Setup() { cudaFree(part); }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  lab::DevBuf& out(int dir) { return dir == kConvFwd ? y : dir == kConvBwdData ? dx : dw; }
  // The output before a run: NaN, or the accumulation base of the weight gradient.
  void reset(int dir) {
    if (dir == kConvBwdWeight) {
      dw.host = dw0.host;
      dw.upload();
    } else {
      out(dir).poison();
    }
  }

  ConvTcParams params(int dir) {
    ConvTcParams p;
    p.s = q.shape(), p.dir = dir;
    if (dir == kConvFwd) p.a = x.dev, p.b = w.dev, p.out = y.dev, p.bias = q.bias ? bias.dev : nullptr;
    if (dir == kConvBwdData) p.a = dy.dev, p.b = w.dev, p.out = dx.dev;
    if (dir == kConvBwdWeight) p.a = dy.dev, p.b = x.dev, p.out = dw.dev;
    p.a_bf16 = p.b_bf16 = p.bias_bf16 = p.out_bf16 = q.bf;
    p.bf16_mma = q.bf, p.tf32_fast = !q.bf && q.tf32_fast;
    conv_tc_sizes(p);
    return p;
  }

  // Launches version v of direction dir on s (as the op does); returns the plan's description.
  std::string run(Version v, int dir, cudaStream_t s) {
    const ConvShape sh = q.shape();
    const int khw = q.k * q.k;
    if (v == kV1) {
      const int64_t M = dir == kConvBwdData ? q.C : q.O;
      const int64_t Nn = dir == kConvFwd ? int64_t(q.N) * q.Ho() * q.Wo()
                         : dir == kConvBwdData ? int64_t(q.N) * q.H * q.W
                                               : int64_t(q.C) * khw;
      const int64_t K = dir == kConvFwd ? int64_t(q.C) * khw : dir == kConvBwdData ? int64_t(q.O) * khw
                                                                                     : int64_t(q.N) * q.Ho() * q.Wo();
      auto grid = [&](int z) {
        return dim3(unsigned((Nn + kSimpleBN - 1) / kSimpleBN), unsigned((M + kSimpleBM - 1) / kSimpleBM), unsigned(z));
      };
      if (dir == kConvFwd) {
        ConvFwd p{x.dev, w.dev, q.bias ? bias.dev : nullptr, y.dev, q.bf, q.bf, q.bf, q.bf, sh};
        conv_simple_kernel<<<grid(1), kSimpleThreads, 0, s>>>(p, int(M), int(Nn), int(K), int(K));
      } else if (dir == kConvBwdData) {
        ConvBwdData p{dy.dev, w.dev, dx.dev, q.bf, q.bf, q.bf, sh};
        conv_simple_kernel<<<grid(1), kSimpleThreads, 0, s>>>(p, int(M), int(Nn), int(K), int(K));
      } else {
        int64_t kps = 0;
        const int splits = conv_simple_splits(M, Nn, K, g_sms, &kps);
        ConvBwdWeight p{dy.dev, x.dev, part, q.bf, q.bf, sh};
        conv_simple_kernel<<<grid(splits), kSimpleThreads, 0, s>>>(p, int(M), int(Nn), int(K), int(kps));
        conv_sum_splits_kernel<<<g_sms * 4, 256, 0, s>>>(part, M * Nn, splits, dw.dev, q.bf);
        LAB_CHECK(cudaGetLastError());
        return "splits " + std::to_string(splits);
      }
      LAB_CHECK(cudaGetLastError());
      return "";
    }
    ConvTcParams p = params(dir);
    const ConvTcPlan pl = conv_tc_plan(p, g_sms, dir == kConvBwdWeight ? q.splits : 0);
    if (!pl.ok) {
      std::fprintf(stderr, "no v2 plan for %s\n", describe(q).c_str());
      std::exit(2);
    }
    p.k_per_split = pl.k_per_split;
    if (pl.part_elems) p.part = part;
    const ConvKernel kern = conv_tc_kernel(p, pl);
    kern<<<dim3(pl.gx, pl.gy, pl.gz), pl.threads, pl.smem, s>>>(p);
    if (pl.part_elems)
      conv_sum_splits_kernel<<<g_sms * 4, 256, 0, s>>>(part, int64_t(p.M) * p.Ng, pl.splits, dw.dev, q.bf);
    LAB_CHECK(cudaGetLastError());
    char b[64];
    std::snprintf(b, sizeof b, "%dx%d splits %d", pl.bm, pl.bn, pl.splits);
    return b;
  }

  // float64 references of single elements (i: the output's linear index)
  double ref(int dir, size_t i) const {
    const int Ho = q.Ho(), Wo = q.Wo(), k = q.k;
    if (dir == kConvFwd) {
      const int wo = int(i % Wo), ho = int(i / Wo % Ho), o = int(i / (size_t(Wo) * Ho) % q.O),
                n = int(i / (size_t(Wo) * Ho * q.O));
      double acc = q.bias ? bias.host[size_t(o)] : 0.0;
      for (int c = 0; c < q.C; c++)
        for (int ky = 0; ky < k; ky++)
          for (int kx = 0; kx < k; kx++) {
            const int h = ho * q.s - q.p + ky, ww = wo * q.s - q.p + kx;
            if (h < 0 || h >= q.H || ww < 0 || ww >= q.W) continue;
            acc += double(x.host[((size_t(n) * q.C + c) * q.H + h) * q.W + ww]) *
                   w.host[((size_t(o) * q.C + c) * k + ky) * k + kx];
          }
      return acc;
    }
    if (dir == kConvBwdData) {
      const int ww = int(i % q.W), h = int(i / q.W % q.H), c = int(i / (size_t(q.W) * q.H) % q.C),
                n = int(i / (size_t(q.W) * q.H * q.C));
      double acc = 0;
      for (int o = 0; o < q.O; o++)
        for (int ky = 0; ky < k; ky++)
          for (int kx = 0; kx < k; kx++) {
            const int th = h + q.p - ky, tw = ww + q.p - kx;
            if (th < 0 || tw < 0 || th % q.s || tw % q.s || th / q.s >= Ho || tw / q.s >= Wo) continue;
            acc += double(dy.host[((size_t(n) * q.O + o) * Ho + th / q.s) * Wo + tw / q.s]) *
                   w.host[((size_t(o) * q.C + c) * k + ky) * k + kx];
          }
      return acc;
    }
    const int kx = int(i % k), ky = int(i / k % k), c = int(i / (size_t(k) * k) % q.C), o = int(i / (size_t(k) * k * q.C));
    double acc = dw0.host[i];
    for (int n = 0; n < q.N; n++)
      for (int ho = 0; ho < Ho; ho++)
        for (int wo = 0; wo < Wo; wo++) {
          const int h = ho * q.s - q.p + ky, ww = wo * q.s - q.p + kx;
          if (h < 0 || h >= q.H || ww < 0 || ww >= q.W) continue;
          acc += double(dy.host[((size_t(n) * q.O + o) * Ho + ho) * Wo + wo]) *
                 x.host[((size_t(n) * q.C + c) * q.H + h) * q.W + ww];
        }
    return acc;
  }

  // Validates the output of the last run: every element (samples == 0) or a sample of them.
  double validate(Version v, int dir, const std::string& name, int samples) {
    const std::vector<float> got = out(dir).download();
    std::vector<double> ref;
    std::vector<size_t> idx;
    if (samples == 0) {
      for (size_t i = 0; i < got.size(); i++) idx.push_back(i);
    } else {
      lab::Rng r(17);
      for (int i = 0; i < samples; i++) idx.push_back(size_t(r.next()) % got.size());
    }
    for (size_t i : idx) ref.push_back(this->ref(dir, i));
    const double rk = std::sqrt(double(q.depth(dir)));
    const bool tf32 = v == kV2 && !q.bf && q.tf32_fast;
    const double atol = (tf32 ? 1.5e-3 : 3e-5) * rk + 1e-5, rtol = q.bf ? 8e-3 : 1e-5;
    return lab::validate(name, ref, got, atol, rtol, idx);
  }
};

void validate_full(const Problem& q, uint64_t seed, cudaStream_t s) {
  Setup st(q, seed);
  for (Version v : {kV1, kV2})
    for (int dir = 0; dir < 3; dir++) {
      if (v == kV1 && q.tf32_fast) continue;  // v1 has no tf32 mode
      st.reset(dir);
      const std::string plan = st.run(v, dir, s);
      LAB_CHECK(cudaStreamSynchronize(s));
      st.validate(v, dir, std::string(v == kV1 ? "v1 " : "v2 ") + kDirName[dir] + " " + describe(q) + " " + plan, 0);
    }
}

// Times version v of one direction; validates sampled outputs of the timed result first.
void time_case(const char* label, Setup& st, Version v, int dir, lab::Timer& T) {
  const Problem& q = st.q;
  st.reset(dir);
  const std::string plan = st.run(v, dir, T.s);
  LAB_CHECK(cudaStreamSynchronize(T.s));
  const std::string ver = std::string(v == kV1 ? "v1" : "v2") + (q.bf ? "" : q.tf32_fast ? "-tf32" : "-3xtf32");
  const std::string cas = std::string(label) + "-" + kDirName[dir];
  const double err =
      st.validate(v, dir, ver + " " + cas + " " + plan + " (sampled)", dir == kConvBwdWeight ? 512 : 2048);
  const double ms = T.median_ms([&] { st.run(v, dir, T.s); }, 10);
  const double flops = 2.0 * q.ny() * double(q.C) * q.k * q.k;  // nominal (stride-2 bwd data multiplies zeros too)
  const double esz = q.bf ? 2 : 4;
  const double bytes = esz * (dir == kConvFwd ? q.nx() + q.nw() + q.ny()
                              : dir == kConvBwdData ? q.ny() + q.nw() + q.nx()
                                                    : q.ny() + q.nx() + 2 * q.nw());
  lab::result("conv", cas, ver, ms, flops, bytes, err, err <= 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  lab::parse_args(argc, argv);
  lab::device_banner("conv");
  cudaDeviceProp prop{};
  LAB_CHECK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  lab::Timer T;

  std::printf("-- validation (full, float64 reference)\n");
  uint64_t seed = 1;
  auto P = [](int N, int C, int H, int W, int O, int k, int s, int p, bool bf = true) {
    Problem q{N, C, H, W, O, k, s, p};
    q.bf = bf;
    return q;
  };
  validate_full(P(2, 16, 9, 9, 12, 3, 1, 1), seed++, T.s);     // ragged M, N and K; two weight-gradient column tiles
  validate_full(P(2, 40, 7, 7, 136, 1, 1, 0), seed++, T.s);    // 1x1: two 128-wide tiles; C-major weight tile
  validate_full(P(2, 6, 11, 10, 20, 3, 2, 1), seed++, T.s);    // stride 2 with padding, odd sizes
  validate_full(P(2, 3, 33, 31, 32, 3, 2, 1), seed++, T.s);    // the 3-channel stem
  validate_full(P(1, 3, 64, 64, 70, 16, 16, 0), seed++, T.s);  // non-overlapping patches (ViT-style)
  validate_full(P(2, 5, 8, 7, 9, 3, 1, 1, false), seed++, T.s);  // f32: 3xTF32 and v1
  {
    Problem q = P(1, 24, 6, 6, 33, 1, 1, 0, false);
    q.tf32_fast = true;
    validate_full(q, seed++, T.s);
  }
  {
    Problem q = P(4, 8, 20, 20, 24, 3, 1, 1);  // weight gradient split over K, partial sums in order
    q.splits = 5;
    validate_full(q, seed++, T.s);
  }
  if (!lab::g_quick) {
    std::printf("-- timing (median of event-timed runs, L2 flushed)\n");
    struct Named {
      const char* label;
      Problem q;
      bool v1;  // time the fp32 fallback too (the baseline)
    };
    const Named cases[] = {
        {"rn50-stem1-3x224-s2", P(64, 3, 224, 224, 32, 3, 2, 1), false},
        {"rn50-stem2-32x112", P(64, 32, 112, 112, 32, 3, 1, 1), false},
        {"rn50-stem3-32x112-o64", P(64, 32, 112, 112, 64, 3, 1, 1), false},
        {"rn50-l1-3x3-64x56", P(64, 64, 56, 56, 64, 3, 1, 1), true},
        {"rn50-l1-1x1-256x56-o64", P(64, 256, 56, 56, 64, 1, 1, 0), false},
        {"rn50-l1-1x1-64x56-o256", P(64, 64, 56, 56, 256, 1, 1, 0), false},
        {"rn50-l3-3x3-256x14", P(64, 256, 14, 14, 256, 3, 1, 1), false},
        {"rn50-l4-3x3-512x7", P(64, 512, 7, 7, 512, 3, 1, 1), false},
        {"rn50-l4-1x1-2048x7-o512", P(64, 2048, 7, 7, 512, 1, 1, 0), false},
        {"rn50-l1-3x3-64x56-f32", P(64, 64, 56, 56, 64, 3, 1, 1, false), true},
    };
    for (const Named& c : cases) {
      Setup st(c.q, 7);
      for (int dir = 0; dir < 3; dir++) {
        if (c.v1) time_case(c.label, st, kV1, dir, T);
        time_case(c.label, st, kV2, dir, T);
        if (!c.q.bf) {  // and the f32 tensors as plain tf32
          st.q.tf32_fast = true;
          time_case(c.label, st, kV2, dir, T);
          st.q.tf32_fast = false;
        }
      }
    }
  }
  return lab::finish("conv");
}
