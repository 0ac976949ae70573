// sgemm driver: GotoBLAS-style blocking (B block kc x nc packed once per thread and kept in L2,
// A block packed per mc rows, each MR-row panel reused from L1 across the B block), a 2-D split
// of C over the thread pool, and the portable micro-kernel used when no SIMD path applies.
#include "sgemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "features.h"
#include "threadpool.h"

namespace tsclip {
namespace sgemm_detail {
namespace {

// --- portable path (plain C++; compilers vectorize the j loops) ---
constexpr int GMR = 4, GNR = 16;

template <int M>
void micro_generic(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int n,
                   float alpha, float beta, const float* bias, PrefetchRange) {
  float acc[M][GNR] = {};
  for (int64_t k = 0; k < kc; k++, a += GMR, b += GNR)
    for (int i = 0; i < M; i++)
      for (int j = 0; j < GNR; j++) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < M; i++) {
    float* ci = c + i * ldc;
    for (int j = 0; j < n; j++) {
      float v = alpha * acc[i][j] + (bias ? bias[j] : 0.0f);
      ci[j] = beta == 0.0f ? v : v + beta * ci[j];
    }
  }
}

void pack_a_generic(bool trans, const float* A, int64_t lda, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += GMR, dst += GMR * kc) {
    const int64_t m = std::min<int64_t>(GMR, mc - i0);
    for (int64_t k = 0; k < kc; k++)
      for (int64_t i = 0; i < m; i++)
        dst[k * GMR + i] = trans ? A[k * lda + i0 + i] : A[(i0 + i) * lda + k];
  }
}

void pack_b_generic(bool trans, const float* B, int64_t ldb, int64_t nc, int64_t kc, float* dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += GNR, dst += GNR * kc) {
    const int64_t n = std::min<int64_t>(GNR, nc - j0);
    for (int64_t k = 0; k < kc; k++)
      for (int64_t j = 0; j < GNR; j++)
        dst[k * GNR + j] = j >= n ? 0.0f : trans ? B[(j0 + j) * ldb + k] : B[k * ldb + j0 + j];
  }
}

void act_generic(GemmAct act, float* c, int64_t ldc, int m, int n) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) c[i * ldc + j] = gemm_act_scalar(act, c[i * ldc + j]);
}

const Kernels& generic_kernels() {
  static const Kernels k{"generic", GMR, GNR, 64, 256, 256,
                         {nullptr, &micro_generic<1>, &micro_generic<2>, &micro_generic<3>,
                          &micro_generic<4>},
                         &pack_a_generic, &pack_b_generic, &act_generic};
  return k;
}

// The AVX-512 file also uses the VL/BW/DQ forms (every AVX-512 core since Skylake-SP has them).
bool avx512_vl_bw_dq() {
#if defined(__x86_64__) || defined(_M_X64)
  return __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const Kernels& select_kernels() {
  static const Kernels& k = [] () -> const Kernels& {
    const CpuFeatures& f = cpu_features();
    if (f.avx512f && avx512_vl_bw_dq()) return avx512_kernels();
    if (f.avx2 && f.fma) return avx2_kernels();
    return generic_kernels();
  }();
  return k;
}

// Per-thread packing buffers, grown on demand and kept: fresh large allocations per call would
// page-fault on every call.
struct Buffer {
  float* p = nullptr;
  size_t cap = 0;
  ~Buffer() { std::free(p); }
  float* get(size_t floats) {
    if (floats > cap) {
      std::free(p);
      size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      cap = floats;
    }
    return p;
  }
};
thread_local Buffer t_abuf, t_bbuf, t_cbuf;

struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  const float* bias;
  GemmAct act;
  const float* packed = nullptr;  // op(B) from sgemm_pack_b (then B is unused)
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Equal k blocks, so a K just over kc does not leave a thin, inefficient last block.
int64_t k_block(const Kernels& kr, int64_t K) { return ceil_div(K, ceil_div(K, kr.kc)); }

const float* b_at(const Problem& p, int64_t k, int64_t j) {
  return p.tb ? p.B + j * p.ldb + k : p.B + k * p.ldb + j;
}

// Walks the cache lines of a kc x nc block of B in `steps` portions, one per micro-tile.
struct Prefetch {
  const char* base = nullptr;
  int64_t ld = 0, per_row = 1, lines = 0, per_step = 0, done = 0;

  void start(const Problem& p, int64_t k, int64_t j, int64_t kc, int64_t nc, int64_t steps) {
    base = reinterpret_cast<const char*>(b_at(p, k, j));
    ld = p.ldb * int64_t(sizeof(float));
    const int64_t rows = p.tb ? nc : kc, row_bytes = (p.tb ? kc : nc) * int64_t(sizeof(float));
    per_row = ceil_div(row_bytes + 63, 64);  // +63: a row may start mid-line
    lines = rows * per_row;
    per_step = ceil_div(lines, std::max<int64_t>(1, steps));
    done = 0;
  }
  // A prepacked block: `floats` contiguous floats.
  void start_packed(const float* block, int64_t floats, int64_t steps) {
    base = reinterpret_cast<const char*>(block);
    ld = 0;
    per_row = lines = ceil_div(floats * int64_t(sizeof(float)), 64);
    per_step = ceil_div(lines, std::max<int64_t>(1, steps));
    done = 0;
  }
  void stop() { lines = done = 0; }
  // The next portion, at most `cap` lines (one per k step of the micro-kernel).
  PrefetchRange step(int64_t cap) {
    const int64_t n = std::min({per_step, cap, lines - done});
    if (n <= 0) return PrefetchRange{nullptr, 0, 0, 1, 0};
    const int64_t r = done / per_row;
    PrefetchRange pr{base + r * ld, ld, done - r * per_row, per_row, n};
    done += n;
    return pr;
  }
};

// Computes the rows [m0, m1) x columns [n0, n1) of C (block edges on multiples of mr / nr).
// B blocks are visited column block by column block, each over all of K, so that a packed B
// block serves every row block. With a single row block (few rows: a batch-1 forward) there is
// nothing to share: A is packed once for all of K (not again for each column block), and where B
// is read in k-major order (prepacked, or stored [K, N]) the walk turns to k block by k block,
// which reads B in the order it lies in memory. A [N, K] B keeps the column-block walk, which
// reads its rows in order: from memory 56% against 73% of peak the other way (50 x 3072 x 3072).
// Either walk passes over C once per k block. When another thread owns the rest of these rows
// (rows_shared), the passes go to a private buffer and C is written once: repeated writes beside
// another core's part of the same rows ran up to a fifth slower on a 2-core VM, at times.
void run_tile(const Kernels& kr, const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
              bool rows_shared) {
  const int MR = kr.mr, NR = kr.nr;
  const int64_t KC = k_block(kr, p.K);
  const int64_t MC = std::min(kr.mc, ceil_div(m1 - m0, MR) * MR);
  const int64_t NC = std::min(kr.nc, ceil_div(n1 - n0, NR) * NR);
  const int64_t npad = ceil_div(p.N, NR) * NR;  // a packed k block's width
  const bool one_block = m1 - m0 <= MC, k_outer = one_block && (p.packed || !p.tb);
  float* abuf = t_abuf.get(size_t(MC) * (one_block ? p.K : KC) + 16);
  float* bbuf = p.packed ? nullptr : t_bbuf.get(size_t(NC) * KC + 16);
  // The private buffer holds the columns the walk is working on: all of them (k outer) or the
  // current column block. Beyond 4M floats the passes stay in place.
  const int64_t ldw = ceil_div(k_outer ? n1 - n0 : NC, 16) * 16;
  const bool private_c = rows_shared && p.K > KC && (m1 - m0) * ldw <= (int64_t(1) << 20);
  float* const cbuf = private_c ? t_cbuf.get(size_t(m1 - m0) * size_t(ldw)) : nullptr;
  // The block after (jc, pc) in the walk; jc == n1 when there is none.
  auto next = [&](int64_t jc, int64_t pc) -> std::pair<int64_t, int64_t> {
    if (k_outer) return jc + NC < n1 ? std::make_pair(jc + NC, pc) : pc + KC < p.K ? std::make_pair(n0, pc + KC) : std::make_pair(n1, int64_t(0));
    return pc + KC < p.K ? std::make_pair(jc, pc + KC) : std::make_pair(jc + NC, int64_t(0));
  };
  // Packing stalls on every line of B that is not in cache yet, so while one B block is
  // multiplied, the micro-kernels prefetch the source of the next one.
  Prefetch next_b;
  const int64_t tiles = ceil_div(m1 - m0, MR);
  for (int64_t jc = n0, pc = 0; jc < n1;) {
    const int64_t nc = std::min(NC, n1 - jc), kc = std::min(KC, p.K - pc);
    // The columns [r0, r1) that accumulate together, and where element (i, j) of C is summed.
    const int64_t r0 = k_outer ? n0 : jc, r1 = k_outer ? n1 : jc + nc;
    const int64_t ldc = private_c ? ldw : p.ldc;
    auto c_at = [&](int64_t i, int64_t j) { return private_c ? cbuf + (i - m0) * ldw + (j - r0) : p.C + i * p.ldc + j; };
    // The same arithmetic as in place, so that the bits do not depend on the split.
    if (private_c && pc == 0 && jc == r0 && p.beta != 0.0f)
      for (int64_t i = m0; i < m1; i++) std::copy(p.C + i * p.ldc + r0, p.C + i * p.ldc + r1, c_at(i, r0));
    // A prepacked B block is read in place; its slivers sit kc * NR apart, as in bbuf.
    const float* bblock = p.packed ? p.packed + pc * npad + jc * kc : bbuf;
    if (!p.packed) kr.pack_b(p.tb, b_at(p, pc, jc), p.ldb, nc, kc, bbuf);
    const auto [jn, pn] = next(jc, pc);
    {
      const int64_t kn = std::min(KC, p.K - pn), nn = std::min(NC, n1 - jn), steps = tiles * ceil_div(nc, NR);
      if (jn >= n1) next_b.stop();
      else if (p.packed) next_b.start_packed(p.packed + pn * npad + jn * kn, kn * ceil_div(nn, NR) * NR, steps);
      else next_b.start(p, pn, jn, kn, nn, steps);
    }
    // The first k block applies beta and the bias; later ones accumulate onto it.
    const float beta = pc == 0 ? p.beta : 1.0f;
    const float* bias = pc == 0 && p.bias ? p.bias + jc : nullptr;
    const bool last = pc + kc == p.K;
    for (int64_t ic = m0; ic < m1; ic += MC) {
      const int64_t mc = std::min(MC, m1 - ic);
      float* ablock = one_block ? abuf + pc * MC : abuf;
      if (!one_block || jc == n0)
        kr.pack_a(p.ta, p.ta ? p.A + pc * p.lda + ic : p.A + ic * p.lda + pc, p.lda, mc, kc, ablock);
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const MicroFn fn = kr.micro[std::min<int64_t>(MR, mc - ir)];
        float* crow = c_at(ic + ir, jc);
        const int m = int(std::min<int64_t>(MR, mc - ir));
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int n = int(std::min<int64_t>(NR, nc - jr));
          fn(kc, ablock + ir * kc, bblock + jr * kc, crow + jr, ldc, n, p.alpha, beta,
             bias ? bias + jr : nullptr, next_b.step(kc));
          // After the last k block the tile is final and still in L1.
          if (last && p.act != GemmAct::None) kr.act(p.act, crow + jr, ldc, m, n);
        }
      }
    }
    if (private_c && last && jc + nc == r1)
      for (int64_t i = m0; i < m1; i++) std::copy(c_at(i, r0), c_at(i, r1), p.C + i * p.ldc + r0);
    jc = jn, pc = pn;
  }
}

// K == 0: the product is empty; act(bias) and beta * C remain.
void scale_only(const Problem& p) {
  for (int64_t i = 0; i < p.M; i++) {
    float* ci = p.C + i * p.ldc;
    for (int64_t j = 0; j < p.N; j++) {
      float v = gemm_act_scalar(p.act, p.bias ? p.bias[j] : 0.0f);
      ci[j] = p.beta == 0.0f ? v : v + p.beta * ci[j];
    }
  }
}

}  // namespace

float gemm_act_scalar(GemmAct act, float v) {
  switch (act) {
    case GemmAct::Relu: return v > 0.0f ? v : 0.0f;
    case GemmAct::QuickGelu: return v / (1.0f + std::exp(-1.702f * v));
    case GemmAct::Gelu: return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case GemmAct::None: break;
  }
  return v;
}

}  // namespace sgemm_detail

const char* sgemm_path() { return sgemm_detail::select_kernels().name; }

namespace sgemm_detail {
namespace {

void run(const Problem& p, int threads) {
  const int64_t M = p.M, N = p.N, K = p.K;
  if (M <= 0 || N <= 0) return;
  if (p.act != GemmAct::None && p.beta != 0.0f) {
    // The activation applies to the product alone, before C is added: compute it apart.
    std::vector<float> t(size_t(M) * size_t(N));
    Problem q = p;
    q.beta = 0.0f, q.C = t.data(), q.ldc = N;
    run(q, threads);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) p.C[i * p.ldc + j] = t[size_t(i * N + j)] + p.beta * p.C[i * p.ldc + j];
    return;
  }
  if (K <= 0) return scale_only(p);
  const Kernels& kr = select_kernels();
  const int64_t mt_max = ceil_div(M, kr.mr), nt_max = ceil_div(N, kr.nr);

  // Split C into tm x tn rectangles, one per thread. Each task packs the A rows and B columns it
  // needs, so a split over N re-packs A and a split over M re-packs B: pick the cheaper one.
  threads = threads > 0 ? std::min(threads, num_threads()) : num_threads();
  if (2.0 * double(M) * double(N) * double(K) < 4e6) threads = 1;  // not worth waking workers
  int64_t tm = 1, tn = 1;
  for (int64_t total = threads; total > 1 && tm * tn == 1; total--) {
    double best = -1;
    for (int64_t a = 1; a <= total; a++) {
      const int64_t b = total / a;
      if (total % a || a > mt_max || b > nt_max) continue;
      const double cost = double(b) * double(M) + double(a) * double(N);
      if (best < 0 || cost < best) best = cost, tm = a, tn = b;
    }
  }
  const int64_t tasks = tm * tn;
  auto task = [&](int64_t t) {
    const int64_t ti = t / tn, tj = t % tn;
    const int64_t m0 = std::min(M, mt_max * ti / tm * kr.mr), m1 = std::min(M, mt_max * (ti + 1) / tm * kr.mr);
    const int64_t n0 = std::min(N, nt_max * tj / tn * kr.nr), n1 = std::min(N, nt_max * (tj + 1) / tn * kr.nr);
    if (m0 < m1 && n0 < n1) run_tile(kr, p, m0, m1, n0, n1, tn > 1);
  };
  if (tasks == 1) return task(0);
  parallel_for(tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) task(t);
  });
}

}  // namespace
}  // namespace sgemm_detail

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
           const float* bias, GemmAct act, int threads) {
  sgemm_detail::run({transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, act}, threads);
}

int64_t sgemm_packed_b_floats(int64_t K, int64_t N) {
  const int64_t nr = sgemm_detail::select_kernels().nr;
  return K * ((N + nr - 1) / nr * nr);
}

void sgemm_pack_b(bool transB, int64_t K, int64_t N, const float* B, int64_t ldb, float* packed) {
  using namespace sgemm_detail;
  const Kernels& kr = select_kernels();
  const int64_t KC = k_block(kr, K), npad = ceil_div(N, kr.nr) * kr.nr;
  for (int64_t pc = 0; pc < K; pc += KC) {
    const Problem p{false, transB, 0, N, K, 1.0f, nullptr, 0, B, ldb, 0.0f, nullptr, 0, nullptr, GemmAct::None};
    kr.pack_b(transB, b_at(p, pc, 0), ldb, N, std::min(KC, K - pc), packed + pc * npad);
  }
}

void sgemm_packed(bool transA, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* packed, float beta, float* C, int64_t ldc, const float* bias, GemmAct act,
                  int threads) {
  sgemm_detail::Problem p{transA, false, M, N, K, alpha, A, lda, nullptr, 0, beta, C, ldc, bias, act};
  p.packed = packed;
  sgemm_detail::run(p, threads);
}

}  // namespace tsclip
