// Kernel lab: attention forward (native/ops/attention_kernels.cuh) at CLIP's shapes, reading q, k,
// v from the packed QKV projection as the model does. Validated against a float64 CPU reference
// (every head of the small problems, three heads of each timed one), o and lse both.
//
// Versions:
//   v1 simple  one warp per query, fp32 math: the exact path for f32 inputs, and the baseline.
//   v2 mma     bf16 mma.sync, 64-query blocks of 4 warps, double-buffered 64-key K/V tiles,
//              online softmax in registers, P fed from the accumulators into P@V.
//
//   build: native/cuda/dev/build.sh   run: /tmp/tsclip-lab/attention_forward [--quick]
#include "attention_common.h"

using namespace attn_lab;

namespace {

double check_forward(Problem& P, const std::string& name) {
  std::vector<float> o = P.o.download();
  std::vector<float> lse(size_t(P.sh.B) * P.sh.H * P.sh.S);
  LAB_CHECK(cudaMemcpy(lse.data(), P.lse, lse.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<double> ro, rl;
  std::vector<size_t> io, il;
  for (auto [b, h] : heads_to_check(P.sh)) {
    HeadRef r = reference(P, b, h);
    for (int i = 0; i < P.sh.S; i++) {
      for (int d = 0; d < P.sh.D; d++) ro.push_back(r.o[size_t(i) * P.sh.D + d]), io.push_back(P.o_index(b, i, h, d));
      rl.push_back(r.lse[size_t(i)]), il.push_back((size_t(b) * P.sh.H + h) * P.sh.S + i);
    }
  }
  const double e1 = P.bf ? lab::validate_norm(name + " o", ro, o, 1e-2, 0.06, io)
                         : lab::validate(name + " o", ro, o, 3e-5, 3e-5, io);
  const double e2 = lab::validate(name + " lse", rl, lse, P.bf ? 2e-3 : 3e-5, 1e-4, il);
  return std::max(e1, e2);
}

}  // namespace

int main(int argc, char** argv) {
  lab::parse_args(argc, argv);
  lab::device_banner("attention_forward");
  lab::Timer T;

  std::printf("-- validation (float64 reference)\n");
  const Shape small[] = {{"b2h3s50d64", 2, 3, 50, 64, false},
                         {"b1h2s77d64c", 1, 2, 77, 64, true},
                         {"b1h2s130d80", 1, 2, 130, 80, false},
                         {"b1h1s100d128c", 1, 1, 100, 128, true}};
  uint64_t seed = 1;
  for (const Shape& s : small) {
    for (int version = 0; version < 3; version++) {  // simple f32, simple bf16, mma bf16
      const bool bf = version > 0, mma = version == 2;
      Problem P(s, bf, seed++);
      P.o.poison();
      LAB_CHECK(cudaMemset(P.lse, 0xff, size_t(s.B) * s.H * s.S * 4));
      P.fwd(mma, T.s);
      LAB_CHECK(cudaStreamSynchronize(T.s));
      check_forward(P, std::string(mma ? "mma " : bf ? "simple-bf16 " : "simple-f32 ") + s.label);
    }
  }
  if (lab::g_quick) return lab::finish("attention_forward");

  std::printf("-- timing (bf16, packed QKV input; median, L2 flushed)\n");
  const Shape shapes[] = {{"vitb32-256x12x50x64", 256, 12, 50, 64, false},
                          {"text-256x8x77x64-causal", 256, 8, 77, 64, true},
                          {"vitb16-128x12x197x64", 128, 12, 197, 64, false},
                          {"vitl14-64x16x257x64", 64, 16, 257, 64, false},
                          {"vith14-64x16x257x80", 64, 16, 257, 80, false}};
  for (const Shape& s : shapes) {
    Problem P(s, true, 99);
    const double bytes = double(P.qkv.bytes()) + double(P.o.bytes()) + double(s.B) * s.H * s.S * 4;
    for (int mma = 0; mma < 2; mma++) {
      P.o.poison();
      P.fwd(mma, T.s);
      LAB_CHECK(cudaStreamSynchronize(T.s));
      const double err = check_forward(P, std::string(mma ? "mma " : "simple ") + s.label);
      const double ms = T.median_ms([&] { P.fwd(mma, T.s); });
      lab::result("attention_forward", s.label, mma ? "mma" : "simple", ms, flops_fwd(s), bytes, err, err <= 1.0);
    }
  }
  return lab::finish("attention_forward");
}
