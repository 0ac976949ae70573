// CPU scaled-dot-product attention on [B,S,H,Dh] views (e.g. the q, k, v slices of one packed
// projection, read in place). Heads run in parallel; the per-head kernels (attention_impl.h) are
// picked for this CPU: AVX-512, AVX2+FMA or baseline x86-64. TSCLIP_ATTENTION_ISA=generic|avx2|
// avx512 asks for a narrower path (for testing each one); a path the CPU lacks is never used.
// The backward recomputes the probabilities from the saved log-sum-exp, so nothing of size Sq*Sk
// outlives a call.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../cpu/features.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"

#define ATTN_ISA generic
#define ATTN_NAME "generic"
#define ATTN_VEC 4  // SSE2: 4-float vectors, two per chunk, 4 query rows per block
#define ATTN_UNROLL 2
#define ATTN_ROWS 4
#define ATTN_KERNELS kernels_generic
#include "attention_impl.h"

namespace tsclip {
namespace {

const attn::Kernels& pick_kernels() {
  const CpuFeatures& f = cpu_features();
  const char* want = std::getenv("TSCLIP_ATTENTION_ISA");
  const bool any = !want || !*want;
  if (f.avx512f && (any || std::strcmp(want, "avx512") == 0)) return attn::kernels_avx512();
  if (f.avx2 && f.fma && (any || std::strcmp(want, "avx512") == 0 || std::strcmp(want, "avx2") == 0))
    return attn::kernels_avx2();
  return attn::kernels_generic();
}

std::string dims(const TensorRef& t) {
  std::string s = "strides [";
  for (int i = 0; i < t.ndim; i++) s += (i ? "," : "") + std::to_string(t.strides[i]);
  return s + "]";
}

// A float32 [B,S,H,Dh] view whose rows (the last dimension) are contiguous.
void require_heads(const OpArgs& a, const TensorRef& t, const char* name, int64_t B, int64_t S, int64_t H,
                   int64_t Dh) {
  a.require(t.defined(), std::string(name) + " is missing");
  a.require(t.dtype == DType::F32, std::string(name) + " must be float32, got " + t.describe());
  a.require(t.ndim == 4 && t.shape[0] == B && t.shape[1] == S && t.shape[2] == H && t.shape[3] == Dh,
            std::string(name) + " must be [" + std::to_string(B) + "," + std::to_string(S) + "," +
                std::to_string(H) + "," + std::to_string(Dh) + "], got " + t.describe());
  a.require(t.strides[3] == 1 || Dh == 1,
            std::string(name) + " " + t.describe() + " needs a last stride of 1, has " + dims(t));
}

struct Shapes {
  int64_t B, Sq, Sk, H, Dh;
};

Shapes check_qkv(const OpArgs& a, const TensorRef& q, const TensorRef& k, const TensorRef& v) {
  a.require(q.defined() && q.ndim == 4, "q must be [B,Sq,H,Dh], got " + (q.defined() ? q.describe() : "nothing"));
  a.require(k.defined() && k.ndim == 4, "k must be [B,Sk,H,Dh], got " + (k.defined() ? k.describe() : "nothing"));
  Shapes s{q.shape[0], q.shape[1], k.shape[1], q.shape[2], q.shape[3]};
  require_heads(a, q, "q", s.B, s.Sq, s.H, s.Dh);
  require_heads(a, k, "k", s.B, s.Sk, s.H, s.Dh);
  require_heads(a, v, "v", s.B, s.Sk, s.H, s.Dh);
  return s;
}

void check_lse(const OpArgs& a, const TensorRef& lse, const Shapes& s) {
  a.require(lse.defined() && lse.dtype == DType::F32 && lse.ndim == 3 && lse.shape[0] == s.B &&
                lse.shape[1] == s.H && lse.shape[2] == s.Sq && lse.contiguous(),
            "lse must be contiguous float32[" + std::to_string(s.B) + "," + std::to_string(s.H) + "," +
                std::to_string(s.Sq) + "], got " + (lse.defined() ? lse.describe() : "nothing"));
}

float check_scale(const OpArgs& a) {
  const double scale = a.f(0);
  a.require(std::isfinite(scale) && scale > 0, "scale must be positive and finite, got " + std::to_string(scale));
  return float(scale);
}

// Pointer to row 0 of head (b, h) in a [B,S,H,Dh] view.
template <class T>
T* head_ptr(const TensorRef& t, int64_t b, int64_t h) {
  return t.ptr<T>() + b * t.strides[0] + h * t.strides[2];
}

}  // namespace

void cpu_attention_fwd(const OpArgs& a) {
  const TensorRef &q = a.input(0), &k = a.input(1), &v = a.input(2);
  const TensorRef &o = a.output(0), &lse = a.output(1);
  const Shapes s = check_qkv(a, q, k, v);
  require_heads(a, o, "o", s.B, s.Sq, s.H, s.Dh);
  check_lse(a, lse, s);
  const attn::Problem p{s.Sq, s.Sk, s.Dh, a.i(0) != 0, check_scale(a)};
  const int64_t heads = s.B * s.H;
  if (heads == 0 || s.Sq == 0) return;
  const attn::Kernels& K = pick_kernels();
  // Few heads (a single image, one text) leave cores idle: split the queries too. Each part
  // redoes its head's key/value layout, which is small next to the products.
  const int64_t threads = num_threads();
  const int64_t parts = heads >= 2 * threads ? 1 : std::min<int64_t>((2 * threads + heads - 1) / heads,
                                                                     std::max<int64_t>(1, s.Sq / 32));
  const int64_t work = K.fwd_work_floats(p);
  parallel_for(heads * parts, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> buf(static_cast<size_t>(work));
    for (int64_t u = u0; u < u1; u++) {
      const int64_t bh = u / parts, part = u % parts, b = bh / s.H, h = bh % s.H;
      attn::Head hd{};
      hd.q = head_ptr<const float>(q, b, h);
      hd.k = head_ptr<const float>(k, b, h);
      hd.v = head_ptr<const float>(v, b, h);
      hd.qs = q.strides[1];
      hd.ks = k.strides[1];
      hd.vs = v.strides[1];
      hd.o = head_ptr<float>(o, b, h);
      hd.os = o.strides[1];
      hd.lse = lse.ptr<float>() + bh * s.Sq;
      K.fwd(p, hd, s.Sq * part / parts, s.Sq * (part + 1) / parts, buf.data());
    }
  });
}

void cpu_attention_bwd(const OpArgs& a) {
  const TensorRef &q = a.input(0), &k = a.input(1), &v = a.input(2), &o = a.input(3), &lse = a.input(4),
                  &dout = a.input(5);
  const TensorRef &dq = a.output(0), &dk = a.output(1), &dv = a.output(2);
  const Shapes s = check_qkv(a, q, k, v);
  require_heads(a, o, "o", s.B, s.Sq, s.H, s.Dh);
  check_lse(a, lse, s);
  require_heads(a, dout, "do", s.B, s.Sq, s.H, s.Dh);
  require_heads(a, dq, "dq", s.B, s.Sq, s.H, s.Dh);
  require_heads(a, dk, "dk", s.B, s.Sk, s.H, s.Dh);
  require_heads(a, dv, "dv", s.B, s.Sk, s.H, s.Dh);
  const attn::Problem p{s.Sq, s.Sk, s.Dh, a.i(0) != 0, check_scale(a)};
  const int64_t heads = s.B * s.H;
  if (heads == 0) return;
  const attn::Kernels& K = pick_kernels();
  const int64_t work = K.bwd_work_floats(p);
  parallel_for(heads, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> buf(static_cast<size_t>(work));
    for (int64_t bh = u0; bh < u1; bh++) {
      const int64_t b = bh / s.H, h = bh % s.H;
      attn::Head hd{};
      hd.q = head_ptr<const float>(q, b, h);
      hd.k = head_ptr<const float>(k, b, h);
      hd.v = head_ptr<const float>(v, b, h);
      hd.qs = q.strides[1];
      hd.ks = k.strides[1];
      hd.vs = v.strides[1];
      hd.o = head_ptr<float>(o, b, h);
      hd.os = o.strides[1];
      hd.lse = lse.ptr<float>() + bh * s.Sq;
      hd.dout = head_ptr<const float>(dout, b, h);
      hd.dos = dout.strides[1];
      hd.dq = head_ptr<float>(dq, b, h);
      hd.dk = head_ptr<float>(dk, b, h);
      hd.dv = head_ptr<float>(dv, b, h);
      hd.dqs = dq.strides[1];
      hd.dks = dk.strides[1];
      hd.dvs = dv.strides[1];
      K.bwd(p, hd, buf.data());
    }
  });
}

}  // namespace tsclip
