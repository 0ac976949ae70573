// CUDA attention ops (softmax(scale * q k^T) v with optional causal mask) on strided [B,S,H,Dh]
// views; the kernels live in attention_kernels.cuh. bf16 inputs with 16-byte-aligned rows and head
// dim 64, 80 or 128 run on tensor cores; everything else (f32 inputs included, computed exactly in
// f32) runs on the simple kernels. TSCLIP_CUDA_ATTENTION=simple forces the simple kernels.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"
#include "attention_kernels.cuh"

namespace tsclip {
namespace {

// Device scratch from the caching allocator; ops run on one stream, so freeing right after the
// launches is safe (a later op reusing the block is ordered after them).
struct Scratch {
  void* p = nullptr;
  explicit Scratch(size_t bytes) { p = bytes ? cuda::alloc(bytes) : nullptr; }
  ~Scratch() { if (p) cuda::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

bool simple_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("TSCLIP_CUDA_ATTENTION");
    if (!v || !*v || !std::strcmp(v, "auto")) return false;
    if (!std::strcmp(v, "simple")) return true;
    throw Error(std::string("TSCLIP_CUDA_ATTENTION must be auto or simple, got '") + v + "'");
  }();
  return forced;
}

int smem_optin() {
  static const int v = [] {
    int dev = 0, bytes = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return bytes;
  }();
  return v;
}

std::string dims(int64_t b, int64_t s, int64_t h, int64_t d) {
  return "[" + std::to_string(b) + "," + std::to_string(s) + "," + std::to_string(h) + "," + std::to_string(d) + "]";
}

// A [B,S,H,Dh] view with unit last stride and the expected sizes.
tc::AttnView view(const OpArgs& a, const TensorRef& t, const char* name, int64_t B, int64_t S, int64_t H, int64_t D) {
  cuda::require_float(a, t, name);
  a.require(t.ndim == 4 && t.shape[0] == B && t.shape[1] == S && t.shape[2] == H && t.shape[3] == D,
            std::string(name) + " must be " + dims(B, S, H, D) + ", got " + t.describe());
  a.require(t.strides[3] == 1 || D == 1, std::string(name) + " must have a unit last stride");
  tc::AttnView v;
  v.p = t.data;
  v.sb = t.strides[0], v.ss = t.strides[1], v.sh = t.strides[2];
  v.bf = t.dtype == DType::BF16;
  return v;
}

void check_lse(const OpArgs& a, const TensorRef& t, int64_t B, int64_t H, int64_t Sq) {
  a.require(t.dtype == DType::F32 && t.ndim == 3 && t.shape[0] == B && t.shape[1] == H && t.shape[2] == Sq &&
                t.contiguous(),
            "lse must be contiguous float32[" + std::to_string(B) + "," + std::to_string(H) + "," +
                std::to_string(Sq) + "], got " + t.describe());
}

// Sizes from q [B,Sq,H,Dh] and k [B,Sk,H,Dh], checked.
tc::AttnParams base_params(const OpArgs& a) {
  const TensorRef& q = a.input(0);
  const TensorRef& k = a.input(1);
  a.require(q.ndim == 4, "q must be [B,Sq,H,Dh], got " + q.describe());
  a.require(k.ndim == 4, "k must be [B,Sk,H,Dh], got " + k.describe());
  const int64_t B = q.shape[0], Sq = q.shape[1], H = q.shape[2], D = q.shape[3], Sk = k.shape[1];
  a.require(D >= 1 && D <= 256, "head dim must be 1..256, got " + std::to_string(D));
  const int64_t lim = int64_t(1) << 31;
  a.require(B < lim && Sq < lim && Sk < lim && H < lim && B * H * (Sq > Sk ? Sq : Sk) < (lim << 2),
            "attention sizes too large");
  tc::AttnParams p;
  p.q = view(a, q, "q", B, Sq, H, D);
  p.k = view(a, k, "k", B, Sk, H, D);
  p.v = view(a, a.input(2), "v", B, Sk, H, D);
  p.B = int(B), p.H = int(H), p.Sq = int(Sq), p.Sk = int(Sk), p.D = int(D);
  p.causal = a.i(0) != 0;
  p.scale = float(a.f(0));
  return p;
}

}  // namespace

void cuda_attention_fwd(const OpArgs& args) {
  tc::AttnParams p = base_params(args);
  p.o = view(args, args.output(0), "o", p.B, p.Sq, p.H, p.D);
  const TensorRef& lse = args.output(1);
  check_lse(args, lse, p.B, p.H, p.Sq);
  p.lse = lse.ptr<float>();
  cudaStream_t s = cuda::stream();
  const bool mma = !simple_forced() && tc::attn_mma_eligible(p, false, smem_optin());
  CUDA_CHECK(tc::attn_fwd_launch(p, s, mma));
}

void cuda_attention_bwd(const OpArgs& args) {
  tc::AttnParams p = base_params(args);
  p.o = view(args, args.input(3), "o", p.B, p.Sq, p.H, p.D);
  const TensorRef& lse = args.input(4);
  check_lse(args, lse, p.B, p.H, p.Sq);
  p.lse = lse.ptr<float>();
  p.dout = view(args, args.input(5), "do", p.B, p.Sq, p.H, p.D);
  p.dq = view(args, args.output(0), "dq", p.B, p.Sq, p.H, p.D);
  p.dk = view(args, args.output(1), "dk", p.B, p.Sk, p.H, p.D);
  p.dv = view(args, args.output(2), "dv", p.B, p.Sk, p.H, p.D);
  cudaStream_t s = cuda::stream();
  const bool mma = !simple_forced() && tc::attn_mma_eligible(p, true, smem_optin());
  Scratch dsum(size_t(p.B) * p.H * p.Sq * sizeof(float));
  Scratch dq_acc(tc::attn_bwd_dq_acc_bytes(p, mma));
  p.dsum = static_cast<float*>(dsum.p);
  p.dq_acc = static_cast<float*>(dq_acc.p);
  CUDA_CHECK(tc::attn_bwd_launch(p, s, mma));
}

}  // namespace tsclip
