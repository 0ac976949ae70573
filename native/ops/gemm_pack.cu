// CUDA side of the packed-weight products. The tensor-core kernels read a weight in place, so the
// "packed" layout here is just op(B) made contiguous [K,N], and gemm_packed is the gemm op on it.
#include <string>

#include "../tensor.h"

namespace tsclip {

void cuda_copy(const OpArgs&);
void cuda_gemm(const OpArgs&);

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
