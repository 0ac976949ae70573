// What every CUDA kernel file shares: error checks that throw tsclip::Error, the one stream ops run
// on, a checked launch and launch sizing, a grid-stride loop, f32/bf16 loads and stores, strided
// indexing of TensorRefs packed into a small by-value struct, and warp/block reductions.
//
// TSCLIP_CPU_EMU (defined only by native/cuda/dev/ops_emu_test.cpp's build) compiles the same kernel
// files as plain C++ against a CPU emulation of the CUDA subset they use, so their indexing and
// synchronisation can be tested against the CPU backend on a machine without a GPU.
#pragma once
#ifdef TSCLIP_CPU_EMU
#include "dev/cpu_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "../tensor.h"

namespace tsclip::cuda {

// Throws tsclip::Error("CUDA error <name> (<message>) in <expr> at <file>:<line>").
[[noreturn]] void raise_error(cudaError_t err, const char* expr, const char* file, int line);

// The stream every op is launched on (device 0 for now). Creating it selects the device on the
// calling thread; the first call fails with the reason when no device can be used.
cudaStream_t stream();
int sm_count();  // multiprocessors of the current device, for sizing grid-stride launches

// A device int64 used by kernels to report bad input (e.g. an out-of-range index), and a pinned
// host word to read it back. reset_flag() enqueues the reset; read_flag() synchronizes the stream.
int64_t* flag_device();
void reset_flag(int64_t value);
int64_t read_flag();

}  // namespace tsclip::cuda

#define CUDA_CHECK(expr)                                                                 \
  do {                                                                                   \
    cudaError_t cuda_check_err_ = (expr);                                                \
    if (cuda_check_err_ != cudaSuccess)                                                  \
      ::tsclip::cuda::raise_error(cuda_check_err_, #expr, __FILE__, __LINE__);           \
  } while (0)

// After every launch: catches bad configurations at once (asynchronous faults surface at the next
// synchronizing call).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace tsclip::cuda {

constexpr int kBlock = 256;

// Launches kernel<<<grid, block, smem, st>>>(args...) and checks the launch. Arguments convert to
// the kernel's parameter types as in a direct launch.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A&&... args) {
#ifdef TSCLIP_CPU_EMU
  cpu_emu::launch(kernel, grid, block, smem, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, st>>>(std::forward<A>(args)...);
  CUDA_CHECK_LAUNCH();
#endif
}

// The dynamic shared memory of the running block (the launch's `smem` bytes), 16-byte aligned.
template <class T>
__device__ __forceinline__ T* dynamic_smem() {
#ifdef TSCLIP_CPU_EMU
  return reinterpret_cast<T*>(cpu_emu::dynamic_smem());
#else
  extern __shared__ __align__(16) unsigned char tsclip_dynamic_smem[];
  return reinterpret_cast<T*>(tsclip_dynamic_smem);
#endif
}

// Blocks for a grid-stride loop over n items: enough to fill the device several times over, never
// more than the items need.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t want = (n + block - 1) / block;
  int64_t cap = int64_t(sm_count()) * 16;
  if (want > cap) want = cap;
  if (want < 1) want = 1;
  return unsigned(want);
}

// Grid-stride loop over [0, n) with a 1-D grid: `CUDA_GRID_LOOP(i, n) { ... }`.
#define CUDA_GRID_LOOP(i, n)                                                          \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x,                    \
               i##_step_ = int64_t(gridDim.x) * blockDim.x;                           \
       i < (n); i += i##_step_)

// Loads and stores of f32 or bf16 chosen by a flag: the branch is uniform over the grid, and it
// keeps the number of kernel instantiations small in memory-bound kernels.
__device__ __forceinline__ float ldf(const void* p, bool bf, int64_t i) {
  return bf ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void stf(void* p, bool bf, int64_t i, float v) {
  if (bf) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}
inline bool is_bf16(const TensorRef& t) { return t.dtype == DType::BF16; }

// Throws unless t is float32 or bfloat16.
inline void require_float(const OpArgs& a, const TensorRef& t, const char* what) {
  a.require(t.dtype == DType::F32 || t.dtype == DType::BF16,
            std::string(what) + " must be float32 or bfloat16, got " + t.describe());
}

// --- strided indexing ---
// Up to N operands walked over one shape (passed to kernels by value); dims are coalesced on the
// host so that most views need one or two divisions per element.
template <int N>
struct StridedN {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

// Element offsets of linear index i (row-major over the shape) in every operand. I is the index
// type of the divisions: uint32_t when the element count fits (much cheaper), else int64_t.
template <class I, int N>
__device__ __forceinline__ void strided_offsets(const StridedN<N>& s, I i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; k++) off[k] = 0;
  for (int d = s.ndim - 1; d >= 0; d--) {
    I n = I(s.shape[d]);
    I q = i / n;
    I r = i - q * n;
#pragma unroll
    for (int k = 0; k < N; k++) off[k] += int64_t(r) * s.strides[k][d];
    i = q;
  }
}

// Builds the walk over shape_of's shape for operands of the same rank (strides 0 broadcast);
// drops size-1 dims and merges neighbours that are contiguous in every operand.
template <int N>
StridedN<N> make_strided(const TensorRef* const (&ts)[N], const TensorRef& shape_of) {
  StridedN<N> s;
  int nd = 0;
  for (int d = 0; d < shape_of.ndim; d++) {
    if (shape_of.shape[d] == 1) continue;
    bool merge = nd > 0;
    for (int k = 0; k < N && merge; k++)
      merge = s.strides[k][nd - 1] == ts[k]->strides[d] * shape_of.shape[d];
    if (merge) {
      s.shape[nd - 1] *= shape_of.shape[d];
      for (int k = 0; k < N; k++) s.strides[k][nd - 1] = ts[k]->strides[d];
    } else {
      s.shape[nd] = shape_of.shape[d];
      for (int k = 0; k < N; k++) s.strides[k][nd] = ts[k]->strides[d];
      nd++;
    }
  }
  s.ndim = nd;  // 0 dims: a single element at offset 0
  return s;
}

// --- warp and block reductions (block size a multiple of 32, at most 1024) ---
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a 1-D block, returned to every thread. `scratch` holds 32 floats; safe to call repeatedly.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace tsclip::cuda
