// A CPU stand-in for the CUDA subset that the elementwise, index, norm, loss, optim, conv and image
// kernels (native/ops/*.cu) use, so that those files compile as plain C++ and run under
// native/cuda/dev/ops_emu_test.cpp on a machine without a GPU. Included by native/cuda/common.cuh
// when TSCLIP_CPU_EMU is defined; never part of the addon.
//
// Each CUDA thread of a block is an OS thread and blocks run one after another, so `__shared__`
// (made `static`) is shared by exactly the threads of one block. __syncthreads is a barrier of the
// whole block and a warp shuffle exchanges values through the warp's slots between two barriers of
// its 32 lanes: a thread that skips either waits forever, so a divergent barrier or shuffle hangs
// the test (which a watchdog turns into a failure) instead of passing by luck. Dynamic shared
// memory starts as NaN bytes. Slow by design (threads per block); tests use small shapes.
#pragma once
#include <math.h>
#include <pthread.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }

// bfloat16 as bits, rounded to nearest even (NaN stays NaN), as the device and strided.h do.
struct __nv_bfloat16 {
  uint16_t x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fff + ((u >> 16) & 1);
  return {uint16_t(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = uint32_t(b.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Intrinsics with the device's rounding (the emulation build disables FMA contraction).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __expf(float x) { return std::exp(x); }
inline int __float2int_rn(float f) {  // round half to even, saturating; NaN -> 0 as the device
  if (std::isnan(f)) return 0;
  float r = std::nearbyint(f);
  if (r >= 2147483648.f) return INT32_MAX;
  if (r < -2147483648.f) return INT32_MIN;
  return int(r);
}
inline float __int2float_rn(int v) { return float(v); }
using std::isnan;
template <class T>
inline T min(T a, T b) { return b < a ? b : a; }
template <class T>
inline T max(T a, T b) { return a < b ? b : a; }

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
using cudaStream_t = struct cpu_emu_stream*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated"; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}

namespace cpu_emu {

struct Warp {
  pthread_barrier_t bar;
  uint64_t slot[32];
};

inline dim3 g_grid, g_block, g_block_idx;
inline thread_local dim3 t_tid;
inline thread_local int t_linear = 0;
inline pthread_barrier_t g_block_bar;
inline std::vector<Warp>* g_warps = nullptr;
inline std::vector<unsigned char> g_dyn_smem;
inline std::mutex g_atomic;

inline unsigned char* dynamic_smem() { return g_dyn_smem.data(); }

inline void syncthreads() { pthread_barrier_wait(&g_block_bar); }

template <class T>
T shfl_xor(T v, int mask) {
  static_assert(sizeof(T) <= 8, "shuffle of a wide type");
  Warp& w = (*g_warps)[size_t(t_linear / 32)];
  int lane = t_linear % 32;
  std::memcpy(&w.slot[lane], &v, sizeof(T));
  pthread_barrier_wait(&w.bar);
  T r;
  std::memcpy(&r, &w.slot[(lane ^ mask) & 31], sizeof(T));
  pthread_barrier_wait(&w.bar);
  return r;
}

// Runs kernel(params...) for every thread of every block. Parameters are converted once, as a
// launch copies them, and each thread calls with its own copy.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || smem > 227 * 1024)
    throw std::logic_error("invalid launch configuration");
  if (threads % 32) throw std::logic_error("the emulation wants whole warps");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  g_grid = grid;
  g_block = block;
  g_dyn_smem.assign(smem, 0xff);
  std::vector<Warp> warps(threads / 32);
  for (auto& w : warps) pthread_barrier_init(&w.bar, nullptr, 32);
  g_warps = &warps;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        g_block_idx = dim3(bx, by, bz);
        pthread_barrier_init(&g_block_bar, nullptr, threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; t++)
          pool.emplace_back([&, t] {
            t_linear = int(t);
            t_tid = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            auto mine = params;
            std::apply(kernel, mine);
          });
        for (auto& th : pool) th.join();
        pthread_barrier_destroy(&g_block_bar);
      }
  for (auto& w : warps) pthread_barrier_destroy(&w.bar);
  g_warps = nullptr;
}

}  // namespace cpu_emu

#define threadIdx (::cpu_emu::t_tid)
#define blockIdx (::cpu_emu::g_block_idx)
#define blockDim (::cpu_emu::g_block)
#define gridDim (::cpu_emu::g_grid)

inline void __syncthreads() { cpu_emu::syncthreads(); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int = 32) { return cpu_emu::shfl_xor(v, mask); }

inline float atomicAdd(float* p, float v) {
  std::lock_guard<std::mutex> lock(cpu_emu::g_atomic);
  float old = *p;
  *p = old + v;
  return old;
}
inline long long atomicMin(long long* p, long long v) {
  std::lock_guard<std::mutex> lock(cpu_emu::g_atomic);
  long long old = *p;
  if (v < old) *p = v;
  return old;
}
