// Kernel lab: attention backward (native/ops/attention_kernels.cuh), and forward + backward, the
// unit PyTorch's SDPA is compared on. Gradients land in a packed [B,S,3,H,Dh] buffer as the model
// uses them. Validated against a float64 CPU reference (dq, dk, dv of every head of the small
// problems, three heads of each timed one).
//
// Versions:
//   v1 simple  dsum_i = dO_i.O_i, then one warp per query (dq) and one per key (dk, dv), fp32.
//   v2 mma     bf16 mma.sync, FlashAttention-2 order: a block owns 64 keys and walks the query
//              tiles; S^T and dP^T recomputed on tensor cores from lse; dK, dV in registers; dQ
//              written directly for one key tile, else added into an f32 buffer and converted.
//
//   build: native/cuda/dev/build.sh   run: /tmp/tsclip-lab/attention_backward [--quick]
#include "attention_common.h"

using namespace attn_lab;

namespace {

double check_backward(Problem& P, const std::string& name) {
  std::vector<float> g = P.grad.download();
  std::vector<double> ref[3];
  std::vector<size_t> idx[3];
  for (auto [b, h] : heads_to_check(P.sh)) {
    HeadRef r = reference(P, b, h);
    const std::vector<double>* src[3] = {&r.dq, &r.dk, &r.dv};
    for (int w = 0; w < 3; w++)
      for (int i = 0; i < P.sh.S; i++)
        for (int d = 0; d < P.sh.D; d++) {
          ref[w].push_back((*src[w])[size_t(i) * P.sh.D + d]);
          idx[w].push_back(P.grad_index(w, b, i, h, d));
        }
  }
  const char* names[3] = {" dq", " dk", " dv"};
  double worst = 0;
  for (int w = 0; w < 3; w++) {
    const double e = P.bf ? lab::validate_norm(name + names[w], ref[w], g, 2e-2, 0.1, idx[w])
                          : lab::validate(name + names[w], ref[w], g, 5e-5, 5e-5, idx[w]);
    worst = std::max(worst, e);
  }
  return worst;
}

// Forward (by the version under test) then backward, as training runs them.
void run_both(Problem& P, bool mma, cudaStream_t s) {
  P.fwd(mma, s);
  P.bwd(mma, s);
}

}  // namespace

int main(int argc, char** argv) {
  lab::parse_args(argc, argv);
  lab::device_banner("attention_backward");
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
      P.grad.poison();
      run_both(P, mma, T.s);
      LAB_CHECK(cudaStreamSynchronize(T.s));
      check_backward(P, std::string(mma ? "mma " : bf ? "simple-bf16 " : "simple-f32 ") + s.label);
    }
  }
  if (lab::g_quick) return lab::finish("attention_backward");

  std::printf("-- timing (bf16, packed QKV; median, L2 flushed): bwd alone, then fwd+bwd\n");
  const Shape shapes[] = {{"vitb32-256x12x50x64", 256, 12, 50, 64, false},
                          {"text-256x8x77x64-causal", 256, 8, 77, 64, true},
                          {"vitb16-128x12x197x64", 128, 12, 197, 64, false},
                          {"vitl14-64x16x257x64", 64, 16, 257, 64, false}};
  for (const Shape& s : shapes) {
    Problem P(s, true, 99);
    const double act = double(P.o.bytes());  // one [B,S,H,Dh] bf16 tensor
    const double bytes_bwd = 3 * act + 2 * act + 3 * act + double(s.B) * s.H * s.S * 8;
    for (int mma = 0; mma < 2; mma++) {
      if (!mma && s.S > 100) continue;  // the simple kernels' time grows with S^2 per warp: baseline on short ones
      P.grad.poison();
      run_both(P, mma, T.s);
      LAB_CHECK(cudaStreamSynchronize(T.s));
      const double err = check_backward(P, std::string(mma ? "mma " : "simple ") + s.label);
      const char* v = mma ? "mma" : "simple";
      const double ms_b = T.median_ms([&] { P.bwd(mma, T.s); });
      lab::result("attention_backward", s.label, v, ms_b, 2.5 * flops_fwd(s), bytes_bwd, err, err <= 1.0);
      const double ms_fb = T.median_ms([&] { run_both(P, mma, T.s); });
      lab::result("attention_fwdbwd", s.label, v, ms_fb, 3.5 * flops_fwd(s), bytes_bwd + 4 * act, err, err <= 1.0);
    }
  }
  return lab::finish("attention_backward");
}
