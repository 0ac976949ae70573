// The per-head attention kernels behind cpu_attention_fwd/bwd. One source (attention_impl.h) is
// compiled three times: for baseline x86-64 (attention.cpp), AVX2+FMA (attention_avx2.cpp) and
// AVX-512 (attention_avx512.cpp); attention.cpp picks one at run time with cpu_features().
#pragma once
#include <cstdint>

namespace tsclip {
namespace attn {

// The sizes shared by every head of one call. Query i sees keys j < visible(i):
// all Sk keys, or with `causal` the keys j <= i + Sk - Sq.
struct Problem {
  int64_t Sq, Sk, Dh;
  bool causal;
  float scale;  // > 0
};

// One (batch, head) pair: row pointers with row strides in elements (columns are contiguous).
struct Head {
  const float *q, *k, *v;
  int64_t qs, ks, vs;
  float* o;  // forward: written; backward: read
  int64_t os;
  float* lse;  // [Sq], contiguous. forward: written; backward: read
  const float* dout;  // backward only
  int64_t dos;
  float *dq, *dk, *dv;  // backward only: overwritten
  int64_t dqs, dks, dvs;
};

struct Kernels {
  const char* name;
  // Forward for queries [q0, q1) of one head. `work` holds fwd_work_floats(p) floats.
  void (*fwd)(const Problem& p, const Head& h, int64_t q0, int64_t q1, float* work);
  // Backward for all queries of one head (dk, dv sum over queries). `work`: bwd_work_floats(p).
  void (*bwd)(const Problem& p, const Head& h, float* work);
  int64_t (*fwd_work_floats)(const Problem& p);
  int64_t (*bwd_work_floats)(const Problem& p);
};

const Kernels& kernels_generic();  // attention.cpp
const Kernels& kernels_avx2();     // attention_avx2.cpp
const Kernels& kernels_avx512();   // attention_avx512.cpp

}  // namespace attn
}  // namespace tsclip
