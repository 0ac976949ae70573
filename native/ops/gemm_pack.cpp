// Products with a weight packed once (inference): gemm_pack_b lays op(B) out as the CPU
// micro-kernel reads it, gemm_packed multiplies by it without packing again. At one image's 50
// tokens the per-call packing of a transposed weight is a third of the product's time.
#include <cstdint>
#include <string>

#include "../cpu/sgemm.h"
#include "../tensor.h"

namespace tsclip {
namespace {

// The buffer the TypeScript side allocates: the widest micro-tile (32 columns) bounds every path.
int64_t packed_capacity(int64_t K, int64_t N) { return K * ((N + 31) / 32 * 32); }

// The micro-kernels load packed slivers with aligned vector loads.
bool aligned64(const TensorRef& t) { return reinterpret_cast<uintptr_t>(t.data) % 64 == 0; }

}  // namespace

void cpu_gemm_pack_b(const OpArgs& args) {
  const TensorRef& b = args.input(0);
  const TensorRef& out = args.output(0);
  args.require(b.dtype == DType::F32 && b.ndim == 2, "b must be float32 [K,N], got " + b.describe());
  const int64_t K = b.shape[0], N = b.shape[1];
  const bool trans = !(b.strides[1] == 1 || N == 1);
  args.require(!trans || b.strides[0] == 1 || K == 1,
               "b " + b.describe() + ": one of its two strides must be 1");
  args.require(out.dtype == DType::F32 && out.contiguous() && out.numel() >= packed_capacity(K, N),
               "packed must be contiguous float32 with " + std::to_string(packed_capacity(K, N)) +
                   " elements, got " + out.describe());
  args.require(aligned64(out), "packed must start on a 64-byte boundary (a fresh tensor, not an offset view)");
  const int64_t ld = trans ? (N == 1 ? K : b.strides[1]) : (K == 1 ? N : b.strides[0]);
  sgemm_pack_b(trans, K, N, b.ptr<const float>(), ld, out.ptr<float>());
}

void cpu_gemm_packed(const OpArgs& args) {
  const TensorRef& a = args.input(0);
  const TensorRef& packed = args.input(1);
  const TensorRef* bias = args.in.size() > 2 && args.in[2].defined() ? &args.in[2] : nullptr;
  const TensorRef& c = args.output(0);
  const bool accumulate = args.i(0) != 0;
  const int64_t act = args.ints.size() > 1 ? args.i(1) : 0;
  args.require(act >= 0 && act <= int64_t(GemmAct::Gelu), "activation must be 0..3, got " + std::to_string(act));
  args.require(a.dtype == DType::F32 && a.ndim == 2, "a must be float32 [M,K], got " + a.describe());
  args.require(c.dtype == DType::F32 && c.ndim == 2 && c.contiguous(), "c must be contiguous float32 [M,N], got " + c.describe());
  const int64_t M = a.shape[0], K = a.shape[1], N = c.shape[1];
  args.require(c.shape[0] == M, "c " + c.describe() + " must have a's " + std::to_string(M) + " rows");
  args.require(packed.dtype == DType::F32 && packed.contiguous() && packed.numel() >= packed_capacity(K, N),
               "packed " + packed.describe() + " is too small for a [" + std::to_string(K) + "," +
                   std::to_string(N) + "] weight");
  args.require(aligned64(packed), "packed must start on a 64-byte boundary (a fresh tensor, not an offset view)");
  const bool ta = !(a.strides[1] == 1 || K == 1);
  args.require(!ta || a.strides[0] == 1 || M == 1, "a " + a.describe() + ": one of its two strides must be 1");
  const int64_t lda = ta ? (K == 1 ? M : a.strides[1]) : (M == 1 ? K : a.strides[0]);
  if (bias)
    args.require(bias->dtype == DType::F32 && bias->ndim == 1 && bias->shape[0] == N && (N == 1 || bias->strides[0] == 1),
                 "bias must be contiguous float32[" + std::to_string(N) + "], got " + bias->describe());
  if (M == 0 || N == 0) return;
  sgemm_packed(ta, M, N, K, float(args.f(0)), a.ptr<const float>(), lda, packed.ptr<const float>(),
               accumulate ? 1.0f : 0.0f, c.ptr<float>(), N, bias ? bias->ptr<const float>() : nullptr, GemmAct(act));
}

}  // namespace tsclip
