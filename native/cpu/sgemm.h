// Single-precision GEMM on row-major matrices: cache-blocked with packed panels and a SIMD
// micro-kernel picked at run time (AVX-512, AVX2+FMA, or portable C++).
#pragma once
#include <cstdint>

namespace tsclip {

// An activation applied to the product (the op list's UnaryKind + 1; 0 = none).
enum class GemmAct : int { None = 0, Relu = 1, QuickGelu = 2, Gelu = 3 };

// C[i,j] = act(alpha * sum_k op(A)[i,k] * op(B)[k,j] + bias[j]) + beta * C[i,j]   (i < M, j < N)
// op(A)[i,k] = transA ? A[k*lda + i] : A[i*lda + k]
// op(B)[k,j] = transB ? B[j*ldb + k] : B[k*ldb + j]
// beta == 0 never reads C (it may hold garbage); bias may be null. Splits the work over up to
// `threads` threads of the pool (0: all of them; from inside a parallel region it runs inline).
void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
           const float* bias, GemmAct act = GemmAct::None, int threads = 0);

// The micro-kernel family sgemm uses on this machine: "avx512", "avx2" or "generic".
const char* sgemm_path();

// op(B) packed once for many products (inference weights): sgemm packs B on every call, which at
// few rows (M = 50 tokens of one image) costs as much as a third of the product. The layout is
// the micro-kernel's: k block by k block, each holding [ceil(N/NR)] slivers of [kc][NR], zero past
// N. It depends on this machine's kernel family, so a packed buffer is valid only in this process.
int64_t sgemm_packed_b_floats(int64_t K, int64_t N);
void sgemm_pack_b(bool transB, int64_t K, int64_t N, const float* B, int64_t ldb, float* packed);
// sgemm with op(B) given as sgemm_pack_b's output.
void sgemm_packed(bool transA, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* packed, float beta, float* C, int64_t ldc, const float* bias,
                  GemmAct act = GemmAct::None, int threads = 0);

namespace sgemm_detail {

// What a SIMD variant supplies; sgemm.cpp does the blocking, threading and edges.
// Packed A: panels of MR rows, panel p holds rows [p*MR, p*MR+MR) as [kc][MR] (rows past the
// edge are never read). Packed B: slivers of NR columns, each [kc][NR], zero past the edge.
constexpr int kMaxMR = 16;

// Cache lines for a micro-kernel to prefetch, one per k step, while it computes: `count` lines
// walked row by row from line `line` of the row at `row` (rows `ld` bytes apart, `per_row`
// lines each). sgemm uses it to pull in the source of the next B block.
struct PrefetchRange {
  const char* row;
  int64_t ld;
  int64_t line, per_row, count;
};

// c[i*ldc + j] = alpha * sum_k a[k*MR + i] * b[k*NR + j] + beta * c[i*ldc + j] + bias[j]
// for i < m (the table index), j < n <= NR; beta == 0 does not read c, bias may be null.
using MicroFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int n,
                         float alpha, float beta, const float* bias, PrefetchRange pf);
// Packs `count` rows of op(A) (pack_a) or columns of op(B) (pack_b) times kc, starting at src
// (already offset to the block's first element), into dst in the layouts above.
using PackFn = void (*)(bool trans, const float* src, int64_t ld, int64_t count, int64_t kc,
                        float* dst);

// Applies act in place to an m x n tile of c (row stride ldc).
using ActFn = void (*)(GemmAct act, float* c, int64_t ldc, int m, int n);

struct Kernels {
  const char* name;
  int mr, nr;              // micro-tile
  int64_t mc, kc, nc;      // cache blocks: A block mc x kc, B block kc x nc (multiples of mr, nr)
  MicroFn micro[kMaxMR + 1];  // micro[m] computes an m-row tile, 1 <= m <= mr
  PackFn pack_a, pack_b;
  ActFn act;
};

// The activations one element at a time (the portable path and a reference for the SIMD ones).
float gemm_act_scalar(GemmAct act, float v);

const Kernels& avx512_kernels();  // sgemm_avx512.cpp
const Kernels& avx2_kernels();    // sgemm_avx2.cpp

}  // namespace sgemm_detail
}  // namespace tsclip
