// CUDA gemm op: c[b] = act(alpha * a[b] @ b[b] + bias) + (accumulate ? c[b] : 0) on strided views,
// f32 or bf16 operands and output, fp32 accumulation. The kernels live in gemm_kernels.cuh; this
// file checks the arguments and picks a kernel. ints: accumulate, [act = UnaryKind+1, 0 none],
// [allow_tf32: f32 operands as plain tf32; by default they get float32 accuracy via 3xTF32].
// TSCLIP_CUDA_GEMM=simple|mma|wgmma forces a path (falling back when the operands do not fit it),
// for tests and for ruling a kernel out; TSCLIP_CUDA_TF32=1 allows tf32 everywhere.
// gemm_pack_b / gemm_packed (at the end) are the packed-weight ops' CUDA side.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../cuda/common.cuh"
#include "../tensor.h"
#include "gemm_kernels.cuh"

namespace tsclip {
namespace {

struct Operand {
  const void* data;
  bool bf16;
  int64_t rows, cols;
  int64_t s_batch, s_row, s_col;
};

std::string strides_of(const TensorRef& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; i++) s += (i ? "," : "") + std::to_string(t.strides[i]);
  return s + "]";
}

Operand decode(const OpArgs& args, const TensorRef& t, const char* name, int64_t batch) {
  cuda::require_float(args, t, name);
  args.require(t.ndim == 2 || t.ndim == 3,
               std::string(name) + " must be [batch,rows,cols] or [rows,cols], got " + t.describe());
  Operand o{t.data, t.dtype == DType::BF16, t.size(-2), t.size(-1), 0, t.stride(-2), t.stride(-1)};
  if (t.ndim == 3) {
    args.require(t.shape[0] == batch || t.shape[0] == 1,
                 std::string(name) + " has batch " + std::to_string(t.shape[0]) + ", expected " +
                     std::to_string(batch) + " (or 1)");
    o.s_batch = t.shape[0] == 1 ? 0 : t.strides[0];
  }
  args.require(o.s_col == 1 || o.s_row == 1 || o.rows == 1 || o.cols == 1,
               std::string(name) + " " + t.describe() + " has strides " + strides_of(t) +
                   ": one of the last two strides must be 1");
  return o;
}

tc::GemmPath forced_path() {
  static const tc::GemmPath p = [] {
    const char* v = std::getenv("TSCLIP_CUDA_GEMM");
    if (!v || !*v || !std::strcmp(v, "auto")) return tc::GemmPath::Auto;
    if (!std::strcmp(v, "simple")) return tc::GemmPath::Simple;
    if (!std::strcmp(v, "mma")) return tc::GemmPath::Mma;
    if (!std::strcmp(v, "wgmma")) return tc::GemmPath::Wgmma;
    throw Error(std::string("TSCLIP_CUDA_GEMM must be auto, simple, mma or wgmma, got '") + v + "'");
  }();
  return p;
}

bool tf32_everywhere() {
  static const bool v = [] {
    const char* e = std::getenv("TSCLIP_CUDA_TF32");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return v;
}

int device_major() {
  static const int major = [] {
    int dev = 0, v = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev));
    return v;
  }();
  return major;
}

}  // namespace

void cuda_gemm(const OpArgs& args) {
  const TensorRef& ta = args.input(0);
  const TensorRef& tb = args.input(1);
  const TensorRef* tbias = args.in.size() > 2 && args.in[2].defined() ? &args.in[2] : nullptr;
  const TensorRef& tcv = args.output(0);
  const bool accumulate = args.i(0) != 0;
  const int64_t act = args.ints.size() > 1 ? args.i(1) : 0;
  const bool allow_tf32 = (args.ints.size() > 2 && args.i(2) != 0) || tf32_everywhere();
  const float alpha = float(args.f(0));

  cuda::require_float(args, tcv, "c");
  args.require(tcv.ndim == 2 || tcv.ndim == 3, "c must be [batch,M,N] or [M,N], got " + tcv.describe());
  args.require(tcv.contiguous(), "c " + tcv.describe() + " must be contiguous, has strides " + strides_of(tcv));
  args.require(act >= 0 && act <= tc::kActGelu,
               "activation must be 0 (none), 1 (relu), 2 (quick_gelu) or 3 (gelu), got " + std::to_string(act));
  const int64_t batch = tcv.ndim == 3 ? tcv.shape[0] : 1;
  const int64_t M = tcv.size(-2), N = tcv.size(-1);
  const Operand a = decode(args, ta, "a", batch), b = decode(args, tb, "b", batch);
  args.require(tcv.ndim == 3 || (ta.ndim == 2 && tb.ndim == 2),
               "c " + tcv.describe() + " has no batch dimension but a is " + ta.describe() + " and b is " +
                   tb.describe());
  args.require(a.cols == b.rows, "inner sizes differ: a " + ta.describe() + " @ b " + tb.describe());
  args.require(a.rows == M && b.cols == N, "c is " + tcv.describe() + ", expected [" + std::to_string(a.rows) +
                                               "," + std::to_string(b.cols) + "] from a " + ta.describe() +
                                               " @ b " + tb.describe());
  const int64_t K = a.cols;
  args.require(M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31) &&
                   batch < (int64_t(1) << 31),
               "sizes must be below 2^31");
  if (tbias) {
    cuda::require_float(args, *tbias, "bias");
    args.require(tbias->ndim == 1 && tbias->shape[0] == N,
                 "bias must be [" + std::to_string(N) + "], got " + tbias->describe());
  }
  if (batch == 0 || M == 0 || N == 0) return;

  tc::GemmParams p;
  p.a = a.data;
  p.b = b.data;
  p.bias = tbias ? tbias->data : nullptr;
  p.s_bias = tbias ? tbias->strides[0] : 1;
  p.c = tcv.data;
  p.M = int(M), p.N = int(N), p.K = int(K), p.batch = int(batch);
  p.sa_b = a.s_batch, p.sa_m = a.s_row, p.sa_k = a.s_col;
  p.sb_b = b.s_batch, p.sb_k = b.s_row, p.sb_n = b.s_col;
  p.sc_b = M * N, p.sc_m = N;
  p.alpha = alpha;
  p.accumulate = accumulate ? 1 : 0;
  p.act = int(act);
  p.a_bf16 = a.bf16, p.b_bf16 = b.bf16, p.c_bf16 = tcv.dtype == DType::BF16;
  p.bias_bf16 = tbias && tbias->dtype == DType::BF16;
  const int64_t esz = p.c_bf16 ? 2 : 4;
  p.c_pairs = reinterpret_cast<uintptr_t>(tcv.data) % (2 * esz) == 0 && N % 2 == 0;
  p.tf32_fast = allow_tf32;

  cudaStream_t s = cuda::stream();
  CUDA_CHECK(tc::gemm_launch(p, s, device_major(), forced_path(), nullptr));
}

// --- products with a weight packed once ---
// The tensor-core kernels read a weight in place, so the "packed" layout on CUDA is just op(B)
// made contiguous [K,N], and gemm_packed is the gemm op on it.

void cuda_copy(const OpArgs&);

namespace {

TensorRef as_kn(const TensorRef& packed, int64_t K, int64_t N) {
  TensorRef t = packed;
  t.ndim = 2;
  t.shape[0] = K, t.shape[1] = N;
  t.strides[0] = N, t.strides[1] = 1;
  return t;
}

}  // namespace

void cuda_gemm_pack_b(const OpArgs& args) {
  const TensorRef& b = args.input(0);
  const TensorRef& out = args.output(0);
  args.require(b.dtype == DType::F32 && b.ndim == 2, "b must be float32 [K,N], got " + b.describe());
  const int64_t K = b.shape[0], N = b.shape[1];
  args.require(out.dtype == DType::F32 && out.contiguous() && out.numel() >= K * N,
               "packed must be contiguous float32 with at least " + std::to_string(K * N) + " elements, got " + out.describe());
  OpArgs copy;
  copy.op = args.op;
  copy.in = {b};
  copy.out = {as_kn(out, K, N)};
  cuda_copy(copy);
}

void cuda_gemm_packed(const OpArgs& args) {
  const TensorRef& a = args.input(0);
  const TensorRef& packed = args.input(1);
  const TensorRef& c = args.output(0);
  args.require(a.ndim == 2 && c.ndim == 2, "a and c must be 2-D, got a " + a.describe() + ", c " + c.describe());
  const int64_t K = a.shape[1], N = c.shape[1];
  args.require(packed.dtype == DType::F32 && packed.numel() >= K * N,
               "packed " + packed.describe() + " is too small for a [" + std::to_string(K) + "," + std::to_string(N) + "] weight");
  OpArgs g = args;
  g.in = {a, as_kn(packed, K, N), args.in.size() > 2 ? args.in[2] : TensorRef{}};
  cuda_gemm(g);
}

}  // namespace tsclip
