// A CPU emulation of the CUDA subset the matrix kernels use, so that their index arithmetic,
// fragment layouts and barrier placement can be checked on a machine without a GPU. Included by
// native/ops/tc.cuh when TSCLIP_EMU is defined; only native/cuda/dev/emu_test.cpp does that.
//
// Each CUDA thread of a block is a fiber (ucontext) run by one scheduler, blocks one after another.
// The scheduler runs one warp as far as it gets (to a __syncthreads or its end) before the next,
// in forward order in even blocks and backward order in odd ones, so a missing __syncthreads
// shows up as a read of data another warp has not written yet or has already overwritten. Warp-collective instructions (ldmatrix, mma, shuffles) exchange
// operands through a per-warp scratch area between two warp barriers. cp.async copies are held back
// until the issuing thread's cp.async.wait_group retires their group, so a missing wait reads stale
// shared memory. A round in which no fiber makes progress is reported as a deadlock (a barrier
// reached by only part of the block). Shared memory starts filled with NaN bytes.
//
// Fragment layouts are the PTX ISA's (see tc.cuh); the emulator encodes them independently of the
// kernels, which compute their addresses from the same tables.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __grid_constant__
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace emu {

struct Copy {
  void* dst;
  const void* src;
  bool valid;
  int group;  // 0: not yet committed
};

struct Fiber {
  ucontext_t ctx;
  dim3 tid;
  int lane = 0, warp = 0;
  bool done = false;
  bool at_bar = false;  // waiting in __syncthreads for generation bar_gen to end
  int bar_gen = 0;
  std::vector<Copy> pending;
  int committed = 0;
};

struct WarpState {
  int live = 0, count = 0, gen = 0;
  uint64_t x[32][12];  // operand exchange, one row per lane
};

struct Block {
  int n = 0, live = 0, count = 0, gen = 0;
  long events = 0;  // barrier arrivals and exits: a scheduler round without any is a deadlock
  WarpState warps[32];
};

inline Fiber* g_cur = nullptr;
inline std::vector<Fiber> g_fibers;
inline std::vector<std::vector<char>> g_stacks;
inline ucontext_t g_sched;
inline Block g_blk;
inline dim3 g_block_idx, g_block_dim, g_grid_dim;
inline std::vector<unsigned char> g_smem_store;
inline unsigned char* g_smem = nullptr;
inline const std::function<void()>* g_body = nullptr;

inline void yield() { swapcontext(&g_cur->ctx, &g_sched); }

inline void syncthreads() {
  Block& b = g_blk;
  int gen = b.gen;
  b.events++;
  if (++b.count == b.live) {
    b.count = 0;
    b.gen++;
  } else {
    g_cur->at_bar = true;
    g_cur->bar_gen = gen;
    while (b.gen == gen) yield();
    g_cur->at_bar = false;
  }
}

inline void warp_sync() {
  WarpState& w = g_blk.warps[g_cur->warp];
  int gen = w.gen;
  g_blk.events++;
  if (++w.count == w.live) {
    w.count = 0;
    w.gen++;
  } else {
    while (w.gen == gen) yield();
  }
}

inline void fiber_main() {
  (*g_body)();
  Fiber* f = g_cur;
  if (!f->pending.empty()) {
    std::fprintf(stderr, "emu: thread %u exited with %zu cp.async copies never waited for\n", f->tid.x,
                 f->pending.size());
    std::abort();
  }
  f->done = true;
  Block& b = g_blk;
  b.events++;
  b.live--;
  if (b.count > 0 && b.count == b.live) b.count = 0, b.gen++;
  WarpState& w = b.warps[f->warp];
  w.live--;
  if (w.count > 0 && w.count == w.live) w.count = 0, w.gen++;
}

// Runs body() as every thread of every block of the grid.
inline void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  const int n = int(block.x * block.y * block.z);
  if (n < 1 || n > 1024 || n % 32) {
    std::fprintf(stderr, "emu: block of %d threads (the emulator wants whole warps, at most 1024)\n", n);
    std::abort();
  }
  const size_t kStack = 256 * 1024;
  if (int(g_stacks.size()) < n) g_stacks.resize(size_t(n));
  for (auto& s : g_stacks)
    if (s.size() < kStack) s.resize(kStack);
  g_fibers.assign(size_t(n), Fiber{});
  g_smem_store.assign(smem_bytes + 2048, 0xff);
  g_smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(g_smem_store.data()) + 1023) & ~uintptr_t(1023));
  g_grid_dim = grid;
  g_block_dim = block;
  g_body = &body;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        g_block_idx = dim3(bx, by, bz);
        std::memset(g_smem, 0xff, smem_bytes);
        g_blk.n = g_blk.live = n;
        g_blk.count = g_blk.gen = 0;
        for (int w = 0; w < n / 32; w++) g_blk.warps[w].live = 32, g_blk.warps[w].count = 0, g_blk.warps[w].gen = 0;
        for (int i = 0; i < n; i++) {
          Fiber& f = g_fibers[size_t(i)];
          f = Fiber{};
          f.tid = dim3(unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y));
          f.lane = i % 32;
          f.warp = i / 32;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = g_stacks[size_t(i)].data();
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = &g_sched;
          makecontext(&f.ctx, fiber_main, 0);
        }
        int remaining = n;
        const int warps = n / 32;
        const bool reverse = (bx + by + bz) % 2 == 1;
        auto runnable = [&](Fiber& f) { return !f.done && !(f.at_bar && f.bar_gen == g_blk.gen); };
        while (remaining > 0) {
          long before = g_blk.events;
          for (int wi = 0; wi < warps; wi++) {
            const int w = reverse ? warps - 1 - wi : wi;
            for (bool any = true; any;) {  // this warp until each lane waits at a block barrier or ends
              any = false;
              const long pass = g_blk.events;
              for (int l = 0; l < 32; l++) {
                Fiber& f = g_fibers[size_t(w * 32 + l)];
                if (!runnable(f)) continue;
                any = true;
                g_cur = &f;
                swapcontext(&g_sched, &f.ctx);
                if (f.done) remaining--;
              }
              if (g_blk.events == pass) break;  // lanes stuck at a warp barrier: the round check reports it
            }
          }
          if (remaining > 0 && g_blk.events == before) {
            std::fprintf(stderr, "emu: deadlock in block (%u,%u,%u): %d threads wait at a barrier others never reach\n",
                         bx, by, bz, remaining);
            std::abort();
          }
        }
      }
  g_cur = nullptr;
}

// --- bf16 ---
struct bf16 {
  uint16_t x;
};
inline uint16_t f2bf_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf2f(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t lane_word(int lane, int reg) { return uint32_t(g_blk.warps[g_cur->warp].x[lane][reg]); }

}  // namespace emu

using __nv_bfloat16 = emu::bf16;
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu::f2bf_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return {emu::f2bf_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf2f(b.x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {{emu::f2bf_bits(a)}, {emu::f2bf_bits(b)}}; }

struct float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) { return __uint_as_float(uint32_t(i)); }
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

#define threadIdx (::emu::g_cur->tid)
#define blockIdx (::emu::g_block_idx)
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }
inline void __threadfence() {}

template <class T>
inline T emu_shfl(T v, int src_of_lane_fn_xor, bool is_xor) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  auto& w = emu::g_blk.warps[emu::g_cur->warp];
  int lane = emu::g_cur->lane;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.x[lane][0] = bits;
  emu::warp_sync();
  int src = is_xor ? (lane ^ src_of_lane_fn_xor) : src_of_lane_fn_xor;
  uint64_t got = w.x[src & 31][0];
  emu::warp_sync();
  T r;
  std::memcpy(&r, &got, sizeof(T));
  return r;
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int m, int = 32) { return emu_shfl(v, m, true); }
template <class T>
inline T __shfl_sync(unsigned, T v, int src, int = 32) { return emu_shfl(v, src, false); }

inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}
inline double atomicAdd(double* p, double v) {
  double old = *p;
  *p = old + v;
  return old;
}

namespace tsclip::tc {

inline uint32_t smem_u32(const void* p) { return uint32_t(reinterpret_cast<uintptr_t>(p)); }
inline unsigned char* dyn_smem() { return emu::g_smem; }

inline void cp_async16(void* smem, const void* gmem, bool valid) {
  emu::g_cur->pending.push_back({smem, gmem, valid, 0});
}
inline void cp_async_commit() {
  auto* f = emu::g_cur;
  f->committed++;
  for (auto& c : f->pending)
    if (c.group == 0) c.group = f->committed;
}
template <int N>
inline void cp_async_wait() {
  auto* f = emu::g_cur;
  std::vector<emu::Copy> keep;
  for (auto& c : f->pending) {
    if (c.group != 0 && c.group <= f->committed - N) {
      if (c.valid) std::memcpy(c.dst, c.src, 16);
      else std::memset(c.dst, 0, 16);
    } else {
      keep.push_back(c);
    }
  }
  f->pending.swap(keep);
}

template <int NM, bool Trans>
inline void emu_ldsm(uint32_t* r, const void* p) {
  auto& w = emu::g_blk.warps[emu::g_cur->warp];
  int lane = emu::g_cur->lane;
  w.x[lane][0] = reinterpret_cast<uintptr_t>(p);
  emu::warp_sync();
  for (int i = 0; i < NM; i++) {
    if (!Trans) {
      const char* row = reinterpret_cast<const char*>(w.x[i * 8 + lane / 4][0]);
      std::memcpy(&r[i], row + (lane % 4) * 4, 4);
    } else {
      uint16_t lo, hi;
      const char* r0 = reinterpret_cast<const char*>(w.x[i * 8 + (lane % 4) * 2][0]);
      const char* r1 = reinterpret_cast<const char*>(w.x[i * 8 + (lane % 4) * 2 + 1][0]);
      std::memcpy(&lo, r0 + (lane / 4) * 2, 2);
      std::memcpy(&hi, r1 + (lane / 4) * 2, 2);
      r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
  emu::warp_sync();
}
template <bool Trans>
inline void ldsm_x4(uint32_t (&r)[4], const void* p) { emu_ldsm<4, Trans>(r, p); }
template <bool Trans>
inline void ldsm_x2(uint32_t (&r)[2], const void* p) { emu_ldsm<2, Trans>(r, p); }

// Publishes a (4 regs) and b (2 regs), then each lane computes its four accumulators from the
// whole 16xK and Kx8 operands rebuilt from every lane's registers.
template <bool Tf32>
inline void emu_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  auto& w = emu::g_blk.warps[emu::g_cur->warp];
  int lane = emu::g_cur->lane;
  for (int i = 0; i < 4; i++) w.x[lane][i] = a[i];
  w.x[lane][4] = b[0];
  w.x[lane][5] = b[1];
  emu::warp_sync();
  const int K = Tf32 ? 8 : 16;
  auto A = [&](int row, int k) -> float {
    if (Tf32) {
      int src = (row % 8) * 4 + k % 4, reg = row / 8 + 2 * (k / 4);
      return __uint_as_float(uint32_t(w.x[src][reg]) & 0xffffe000u);
    }
    int src = (row % 8) * 4 + (k % 8) / 2, reg = row / 8 + 2 * (k / 8);
    uint32_t v = uint32_t(w.x[src][reg]);
    return emu::bf2f(uint16_t(k % 2 ? v >> 16 : v & 0xffff));
  };
  auto B = [&](int k, int col) -> float {
    if (Tf32) {
      int src = col * 4 + k % 4, reg = 4 + k / 4;
      return __uint_as_float(uint32_t(w.x[src][reg]) & 0xffffe000u);
    }
    int src = col * 4 + (k % 8) / 2, reg = 4 + k / 8;
    uint32_t v = uint32_t(w.x[src][reg]);
    return emu::bf2f(uint16_t(k % 2 ? v >> 16 : v & 0xffff));
  };
  int g = lane / 4, t = lane % 4;
  float out[4];
  for (int i = 0; i < 4; i++) {
    int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float s = 0;
    for (int k = 0; k < K; k++) s += A(row, k) * B(k, col);
    out[i] = d[i] + s;
  }
  emu::warp_sync();
  for (int i = 0; i < 4; i++) d[i] = out[i];
}
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) { emu_mma<false>(d, a, b); }
inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) { emu_mma<true>(d, a, b); }
inline uint32_t to_tf32(float x) {
  // round to nearest, ties away from zero, keeping 10 mantissa bits
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return u;
  u += 0x1000u;
  return u & 0xffffe000u;
}
inline uint32_t pack_bf16(float lo, float hi) {
  return uint32_t(emu::f2bf_bits(lo)) | (uint32_t(emu::f2bf_bits(hi)) << 16);
}

}  // namespace tsclip::tc
