// CUDA kernels for memory and elementwise ops: fill, copy (any strides, casts), binary with
// broadcasting, affine, unary activations and their derivatives, reductions, argmax. The math and
// the cast rules follow elementwise.cpp; float ops also take bfloat16 operands (computed in f32).
#include <algorithm>
#include <cstring>

#include "../cpu/strided.h"
#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"
#include "kinds.h"

namespace tsclip {
namespace {

using cuda::StridedN;

void require_same_shape(const OpArgs& a, const TensorRef& x, const TensorRef& y) {
  bool same = x.ndim == y.ndim;
  for (int d = 0; same && d < x.ndim; d++) same = x.shape[d] == y.shape[d];
  a.require(same, "shape mismatch " + x.describe() + " vs " + y.describe());
}
bool fits_i32(int64_t n) { return n < (int64_t(1) << 31) - 1; }

using cuda::ldf;
using cuda::stf;
using cuda::require_float;

// --- fill: the bit pattern is made on the host with the same conversions as the CPU kernel ---
template <class T>
__global__ void fill_kernel(T* y, int64_t n, T v) {
  CUDA_GRID_LOOP(i, n) y[i] = v;
}

template <class T>
void launch_fill(void* y, int64_t n, T v) {
  cuda::launch(fill_kernel<T>, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), static_cast<T*>(y), n, v);
}

// --- copy with casts (elementwise.cpp's Elem rules: ints round half to even, u8 saturates) ---
// Every source loads as float (f32, bf16, u8: exact) or int (i32, u8: exact).
__device__ __forceinline__ float load_src(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_src(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ int32_t load_src(const int32_t* p, int64_t i) { return p[i]; }
__device__ __forceinline__ int32_t load_src(const uint8_t* p, int64_t i) { return p[i]; }

__device__ __forceinline__ void store_dst(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_dst(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_dst(int32_t* p, int64_t i, float v) { p[i] = __float2int_rn(v); }
__device__ __forceinline__ void store_dst(uint8_t* p, int64_t i, float v) {
  p[i] = uint8_t(fminf(255.f, fmaxf(0.f, rintf(v))));  // NaN -> 0 as on the CPU
}
// From int: via float exactly as the CPU's double -> float step (one rounding to float).
__device__ __forceinline__ void store_dst(float* p, int64_t i, int32_t v) { p[i] = __int2float_rn(v); }
__device__ __forceinline__ void store_dst(__nv_bfloat16* p, int64_t i, int32_t v) {
  p[i] = __float2bfloat16_rn(__int2float_rn(v));
}
__device__ __forceinline__ void store_dst(int32_t* p, int64_t i, int32_t v) { p[i] = v; }
__device__ __forceinline__ void store_dst(uint8_t* p, int64_t i, int32_t v) { p[i] = uint8_t(min(255, max(0, v))); }

template <class S, class D, class I>
__global__ void copy_kernel(const S* x, D* y, StridedN<2> s, int64_t n) {
  CUDA_GRID_LOOP(i, n) {
    int64_t off[2];
    cuda::strided_offsets<I, 2>(s, I(i), off);
    store_dst(y, off[1], load_src(x, off[0]));
  }
}

template <class S, class D>
void launch_copy(const TensorRef& x, const TensorRef& y) {
  int64_t n = y.numel();
  if (n == 0) return;
  if (std::is_same<S, D>::value && x.contiguous() && y.contiguous()) {
    CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, size_t(n) * sizeof(S), cudaMemcpyDeviceToDevice, cuda::stream()));
    return;
  }
  const TensorRef* ts[2] = {&x, &y};
  StridedN<2> s = cuda::make_strided<2>(ts, y);
  auto* xp = static_cast<const S*>(x.data);
  auto* yp = static_cast<D*>(y.data);
  if (fits_i32(n)) cuda::launch(copy_kernel<S, D, uint32_t>, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), xp, yp,
      s, n);
  else cuda::launch(copy_kernel<S, D, int64_t>, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), xp, yp, s, n);
}

template <class S>
void copy_from(const OpArgs& a, const TensorRef& x, const TensorRef& y) {
  switch (y.dtype) {
    case DType::F32: return launch_copy<S, float>(x, y);
    case DType::BF16: return launch_copy<S, __nv_bfloat16>(x, y);
    case DType::I32: return launch_copy<S, int32_t>(x, y);
    case DType::U8: return launch_copy<S, uint8_t>(x, y);
  }
  a.fail("unsupported output dtype");
}

// --- binary ---
__device__ __forceinline__ float binop(int k, float x, float y) {
  switch (k) {
    case int(BinaryKind::Add): return x + y;
    case int(BinaryKind::Sub): return x - y;
    case int(BinaryKind::Mul): return x * y;
    case int(BinaryKind::Div): return x / y;
    case int(BinaryKind::Max): return x > y ? x : y;
    case int(BinaryKind::Min): return x < y ? x : y;
  }
  return 0.f;
}

struct BinaryOperands {
  const void* a;
  const void* b;
  void* y;
  bool a_bf, b_bf, y_bf;
};

__global__ void binary_flat_kernel(BinaryOperands o, int64_t n, int kind) {
  CUDA_GRID_LOOP(i, n) stf(o.y, o.y_bf, i, binop(kind, ldf(o.a, o.a_bf, i), ldf(o.b, o.b_bf, i)));
}

template <class I>
__global__ void binary_strided_kernel(BinaryOperands o, StridedN<3> s, int64_t n, int kind) {
  CUDA_GRID_LOOP(i, n) {
    int64_t off[3];
    cuda::strided_offsets<I, 3>(s, I(i), off);
    stf(o.y, o.y_bf, off[2], binop(kind, ldf(o.a, o.a_bf, off[0]), ldf(o.b, o.b_bf, off[1])));
  }
}

// --- unary ---
__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ float unary_fwd(int k, float x) {
  switch (k) {
    case int(UnaryKind::Relu): return x > 0.f ? x : 0.f;
    case int(UnaryKind::QuickGelu): return x * sigmoidf_(1.702f * x);
    case int(UnaryKind::Gelu): return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case int(UnaryKind::Exp): return expf(x);
    case int(UnaryKind::Log): return logf(x);
    case int(UnaryKind::Neg): return -x;
    case int(UnaryKind::Sqrt): return sqrtf(x);
    case int(UnaryKind::Square): return x * x;
    case int(UnaryKind::Tanh): return tanhf(x);
    case int(UnaryKind::Sigmoid): return sigmoidf_(x);
    case int(UnaryKind::Abs): return fabsf(x);
  }
  return 0.f;
}

__device__ __forceinline__ float unary_grad(int k, float x) {
  switch (k) {
    case int(UnaryKind::Relu): return x > 0.f ? 1.f : 0.f;
    case int(UnaryKind::QuickGelu): {
      float s = sigmoidf_(1.702f * x);
      return s + 1.702f * x * s * (1.f - s);
    }
    case int(UnaryKind::Gelu):
      return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
    case int(UnaryKind::Exp): return expf(x);
    case int(UnaryKind::Log): return 1.f / x;
    case int(UnaryKind::Neg): return -1.f;
    case int(UnaryKind::Sqrt): return 0.5f / sqrtf(x);
    case int(UnaryKind::Square): return 2.f * x;
    case int(UnaryKind::Tanh): {
      float t = tanhf(x);
      return 1.f - t * t;
    }
    case int(UnaryKind::Sigmoid): {
      float s = sigmoidf_(x);
      return s * (1.f - s);
    }
    case int(UnaryKind::Abs): return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
  }
  return 0.f;
}

__global__ void affine_kernel(const void* x, bool x_bf, void* y, bool y_bf, int64_t n, float alpha, float beta) {
  // Unfused multiply then add, as the CPU loop computes it.
  CUDA_GRID_LOOP(i, n) stf(y, y_bf, i, __fadd_rn(__fmul_rn(ldf(x, x_bf, i), alpha), beta));
}

__global__ void unary_kernel(const void* x, bool x_bf, void* y, bool y_bf, int64_t n, int kind) {
  CUDA_GRID_LOOP(i, n) stf(y, y_bf, i, unary_fwd(kind, ldf(x, x_bf, i)));
}

__global__ void unary_bwd_kernel(const void* x, bool x_bf, const void* dy, bool dy_bf, void* dx, bool dx_bf, int64_t n,
                                 int kind) {
  CUDA_GRID_LOOP(i, n) stf(dx, dx_bf, i, ldf(dy, dy_bf, i) * unary_grad(kind, ldf(x, x_bf, i)));
}

void require_flat_pair(const OpArgs& a, const TensorRef& x, const TensorRef& y) {
  a.require(x.contiguous() && y.contiguous() && x.numel() == y.numel(), "contiguous tensors of one size expected");
}

UnaryKind unary_kind(const OpArgs& a) {
  int64_t k = a.i(0);
  a.require(k >= 0 && k <= int64_t(UnaryKind::Abs), "unknown unary kind " + std::to_string(k));
  return UnaryKind(k);
}

// --- reduce over the middle axis of [outer, mid, inner] ---
// Pass 1 splits `mid` into `splits` chunks when there are too few output columns to fill the device;
// each block reduces one chunk for 32 adjacent columns (inner > 1) or one chunk of a row (inner == 1).
// Pass 2 combines the partial results [splits, outer, inner] and applies the mean.
__device__ __forceinline__ float reduce_init(int kind) { return kind == int(ReduceKind::Max) ? -INFINITY : 0.f; }
__device__ __forceinline__ float reduce_step(int kind, float acc, float v) {
  if (kind == int(ReduceKind::Max)) return fmaxf(acc, v);  // NaN is skipped, as `v > r ? v : r` does
  return acc + (kind == int(ReduceKind::SumSquares) ? v * v : v);
}
__device__ __forceinline__ float reduce_merge(int kind, float a, float b) {
  return kind == int(ReduceKind::Max) ? fmaxf(a, b) : a + b;
}

// Block (32, 8): x over 32 columns, y over rows of the chunk. grid (col blocks, outer, splits).
__global__ void reduce_cols_kernel(const void* x, bool x_bf, float* part, void* y, bool y_bf, int64_t outer,
                                   int64_t mid, int64_t inner, int64_t chunk, int kind, bool final) {
  __shared__ float tile[8][33];
  int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  int64_t s = blockIdx.z;
  int64_t m0 = s * chunk, m1 = min(mid, m0 + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    float acc = reduce_init(kind);
    if (c < inner)
      for (int64_t m = m0 + threadIdx.y; m < m1; m += 8)
        acc = reduce_step(kind, acc, ldf(x, x_bf, (o * mid + m) * inner + c));
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < inner) {
      float r = tile[0][threadIdx.x];
      for (int k = 1; k < 8; k++) r = reduce_merge(kind, r, tile[k][threadIdx.x]);
      if (final) stf(y, y_bf, o * inner + c, kind == int(ReduceKind::Mean) ? r / float(mid) : r);
      else part[(s * outer + o) * inner + c] = r;
    }
    __syncthreads();
  }
}

// One block per (row chunk, outer) for inner == 1. grid (splits, outer).
__global__ void reduce_rows_kernel(const void* x, bool x_bf, float* part, void* y, bool y_bf, int64_t outer,
                                   int64_t mid, int64_t chunk, int kind, bool final) {
  __shared__ float scratch[32];
  int64_t s = blockIdx.x;
  int64_t m0 = s * chunk, m1 = min(mid, m0 + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    float acc = reduce_init(kind);
    for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) acc = reduce_step(kind, acc, ldf(x, x_bf, o * mid + m));
    float r = kind == int(ReduceKind::Max) ? cuda::block_max(acc, scratch) : cuda::block_sum(acc, scratch);
    if (threadIdx.x == 0) {
      if (final) stf(y, y_bf, o, kind == int(ReduceKind::Mean) ? r / float(mid) : r);
      else part[s * outer + o] = r;
    }
  }
}

__global__ void reduce_combine_kernel(const float* part, void* y, bool y_bf, int64_t cols, int64_t splits,
                                      int64_t mid, int kind) {
  CUDA_GRID_LOOP(i, cols) {
    float r = part[i];
    for (int64_t s = 1; s < splits; s++) r = reduce_merge(kind, r, part[s * cols + i]);
    stf(y, y_bf, i, kind == int(ReduceKind::Mean) ? r / float(mid) : r);
  }
}

// --- argmax over the last axis: one warp per row ---
// The CPU loop keeps the first index whose value is strictly greater, so NaNs after position 0 never
// win, a NaN at position 0 always wins, and ties keep the smaller index.
template <class T>
__device__ __forceinline__ bool is_nan_v(T v) { return false; }
template <>
__device__ __forceinline__ bool is_nan_v<float>(float v) { return isnan(v); }

template <class T>
__global__ void argmax_kernel(const T* x, int32_t* y, int64_t rows, int64_t cols) {
  int lane = threadIdx.x & 31;
  int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const T* p = x + r * cols;
    T best = T(0);
    int64_t bi = -1;  // -1: nothing seen yet
    for (int64_t c = lane; c < cols; c += 32) {
      T v = p[c];
      if (is_nan_v(v)) continue;
      if (bi < 0 || v > best) best = v, bi = c;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      T ov = __shfl_xor_sync(0xffffffffu, best, o);
      int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      bool take = oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi));
      if (take) best = ov, bi = oi;
    }
    if (lane == 0) y[r] = (bi < 0 || is_nan_v(p[0])) ? 0 : int32_t(bi);
  }
}

}  // namespace

void cuda_fill(const OpArgs& a) {
  const TensorRef& y = a.output(0);
  a.require(y.contiguous(), "output must be contiguous");
  double v = a.f(0);
  int64_t n = y.numel();
  if (n == 0) return;
  switch (y.dtype) {
    case DType::F32: return launch_fill<float>(y.data, n, float(v));
    case DType::BF16: return launch_fill<uint16_t>(y.data, n, f32_to_bf16(float(v)));
    case DType::I32: return launch_fill<int32_t>(y.data, n, int32_t(v));
    case DType::U8: return launch_fill<uint8_t>(y.data, n, uint8_t(v));
  }
  a.fail("unsupported output dtype");
}

void cuda_copy(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_same_shape(a, x, y);
  switch (x.dtype) {
    case DType::F32: return copy_from<float>(a, x, y);
    case DType::BF16: return copy_from<__nv_bfloat16>(a, x, y);
    case DType::I32: return copy_from<int32_t>(a, x, y);
    case DType::U8: return copy_from<uint8_t>(a, x, y);
  }
  a.fail("unsupported input dtype");
}

void cuda_binary(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.input(1), &z = a.output(0);
  require_float(a, x, "a");
  require_float(a, y, "b");
  require_float(a, z, "output");
  a.require(x.ndim == z.ndim && y.ndim == z.ndim, "operands must be broadcast to the output's rank");
  for (int d = 0; d < z.ndim; d++)
    a.require((x.shape[d] == z.shape[d] || x.strides[d] == 0) && (y.shape[d] == z.shape[d] || y.strides[d] == 0),
              "cannot broadcast " + x.describe() + " and " + y.describe() + " to " + z.describe());
  int64_t kind = a.i(0);
  a.require(kind >= 0 && kind <= int64_t(BinaryKind::Min), "unknown binary kind " + std::to_string(kind));
  int64_t n = z.numel();
  if (n == 0) return;
  BinaryOperands o{x.data, y.data, z.data, x.dtype == DType::BF16, y.dtype == DType::BF16, z.dtype == DType::BF16};
  bool flat = x.contiguous() && y.contiguous() && z.contiguous() && x.numel() == n && y.numel() == n;
  cudaStream_t st = cuda::stream();
  if (flat) {
    cuda::launch(binary_flat_kernel, cuda::grid_for(n), cuda::kBlock, 0, st, o, n, int(kind));
  } else {
    const TensorRef* ts[3] = {&x, &y, &z};
    StridedN<3> s = cuda::make_strided<3>(ts, z);
    if (fits_i32(n)) cuda::launch(binary_strided_kernel<uint32_t>, cuda::grid_for(n), cuda::kBlock, 0, st, o, s, n,
        int(kind));
    else cuda::launch(binary_strided_kernel<int64_t>, cuda::grid_for(n), cuda::kBlock, 0, st, o, s, n, int(kind));
  }
}

void cuda_affine(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_float(a, x, "input");
  require_float(a, y, "output");
  require_flat_pair(a, x, y);
  int64_t n = y.numel();
  if (n == 0) return;
  cuda::launch(affine_kernel, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), x.data, x.dtype == DType::BF16,
      y.data, y.dtype == DType::BF16, n, float(a.f(0)), float(a.f(1)));
}

void cuda_unary(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_float(a, x, "input");
  require_float(a, y, "output");
  require_flat_pair(a, x, y);
  UnaryKind k = unary_kind(a);
  int64_t n = y.numel();
  if (n == 0) return;
  cuda::launch(unary_kernel, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), x.data, x.dtype == DType::BF16, y.data,
      y.dtype == DType::BF16, n, int(k));
}

void cuda_unary_backward(const OpArgs& a) {
  const TensorRef &x = a.input(0), &dy = a.input(1), &dx = a.output(0);
  require_float(a, x, "input");
  require_float(a, dy, "gradient");
  require_float(a, dx, "output");
  a.require(x.contiguous() && dy.contiguous() && dx.contiguous() && x.numel() == dy.numel() && x.numel() == dx.numel(),
            "contiguous tensors of one size expected");
  UnaryKind k = unary_kind(a);
  int64_t n = x.numel();
  if (n == 0) return;
  cuda::launch(unary_bwd_kernel, cuda::grid_for(n), cuda::kBlock, 0, cuda::stream(), x.data, x.dtype == DType::BF16,
      dy.data, dy.dtype == DType::BF16, dx.data, dx.dtype == DType::BF16, n, int(k));
}

void cuda_reduce(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_float(a, x, "input");
  require_float(a, y, "output");
  int64_t outer = a.i(0), mid = a.i(1), inner = a.i(2), kind = a.i(3);
  a.require(kind >= 0 && kind <= int64_t(ReduceKind::SumSquares), "unknown reduce kind " + std::to_string(kind));
  a.require(outer >= 0 && mid >= 0 && inner >= 0, "negative sizes");
  a.require(x.contiguous() && y.contiguous(), "contiguous tensors expected");
  a.require(x.numel() == outer * mid * inner && y.numel() == outer * inner,
            "sizes do not match [outer, mid, inner] = [" + std::to_string(outer) + "," + std::to_string(mid) + "," +
                std::to_string(inner) + "]");
  int64_t cols = outer * inner;
  if (cols == 0) return;
  bool xb = x.dtype == DType::BF16, yb = y.dtype == DType::BF16;
  cudaStream_t st = cuda::stream();
  if (mid == 0) {  // empty reduction: the identity (sum 0, max -inf; mean 0/0 = NaN as in the CPU loop)
    float v = kind == int64_t(ReduceKind::Max) ? -INFINITY : (kind == int64_t(ReduceKind::Mean) ? NAN : 0.f);
    if (yb) launch_fill<uint16_t>(y.data, cols, f32_to_bf16(v));
    else launch_fill<float>(y.data, cols, v);
    return;
  }
  // Enough blocks for about four per SM; split `mid` when the output alone gives fewer.
  int64_t target = int64_t(cuda::sm_count()) * 4;
  int64_t blocks_out = inner == 1 ? outer : outer * ((inner + 31) / 32);
  int64_t min_rows = inner == 1 ? 2048 : 64;  // rows per split worth a block
  int64_t splits = 1;
  if (blocks_out < target) splits = std::min((target + blocks_out - 1) / blocks_out, (mid + min_rows - 1) / min_rows);
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, 1024));
  int64_t chunk = (mid + splits - 1) / splits;
  splits = (mid + chunk - 1) / chunk;
  float* part = nullptr;
  if (splits > 1) part = static_cast<float*>(cuda::alloc(size_t(splits * cols) * sizeof(float)));
  try {
    bool final = splits == 1;
    unsigned gy = unsigned(std::min<int64_t>(outer, 65535));
    if (inner == 1) {
      cuda::launch(reduce_rows_kernel, dim3(unsigned(splits), gy), 256, 0, st, x.data, xb, part, y.data, yb, outer, mid,
          chunk, int(kind), final);
    } else {
      int64_t cb = (inner + 31) / 32;
      a.require(cb <= 0x7fffffff, "inner size too large");
      cuda::launch(reduce_cols_kernel, dim3(unsigned(cb), gy, unsigned(splits)), dim3(32, 8), 0, st, x.data, xb, part,
          y.data, yb, outer, mid, inner, chunk, int(kind), final);
    }
    if (!final) {
      cuda::launch(reduce_combine_kernel, cuda::grid_for(cols), cuda::kBlock, 0, st, part, y.data, yb, cols, splits,
          mid, int(kind));
    }
  } catch (...) {
    cuda::free(part);
    throw;
  }
  cuda::free(part);  // stream-ordered: reused only by later work on the same stream
}

void cuda_argmax_last(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  a.require(x.ndim == 2 && x.contiguous(), "input must be a contiguous [rows, cols] tensor");
  a.require(y.dtype == DType::I32 && y.numel() == x.shape[0], "output must be int32 [rows]");
  a.require(x.dtype == DType::F32 || x.dtype == DType::I32, "input must be float32 or int32, got " + x.describe());
  int64_t rows = x.shape[0], cols = x.shape[1];
  if (rows == 0) return;
  unsigned blocks = unsigned(std::min<int64_t>((rows + 7) / 8, 65535));
  if (cols == 0) {
    launch_fill<int32_t>(y.data, rows, 0);
    return;
  }
  if (x.dtype == DType::I32)
    cuda::launch(argmax_kernel<int32_t>, blocks, 256, 0, cuda::stream(), x.ptr<int32_t>(), y.ptr<int32_t>(), rows,
        cols);
  else
    cuda::launch(argmax_kernel<float>, blocks, 256, 0, cuda::stream(), x.ptr<float>(), y.ptr<int32_t>(), rows, cols);
}

}  // namespace tsclip
