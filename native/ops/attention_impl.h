// Per-head attention kernels, included by one file per ISA. Before including, define
// ATTN_ISA (a namespace name), ATTN_NAME (its name as a string), ATTN_VEC (floats per native
// vector), ATTN_UNROLL (vectors per column chunk), ATTN_ROWS (query rows per block) and
// ATTN_KERNELS (the function returning the Kernels table). Accumulators are GCC vector types of
// the native width, so a block of R x CH results stays in registers.
// Everything here has internal linkage and uses no library templates, so the variants compiled
// for different ISAs never share a definition.
#include <cstdint>

#include "attention_kernels.h"
#include "vexp.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace tsclip {
namespace attn {
namespace ATTN_ISA {
namespace {

constexpr int W = ATTN_VEC;        // floats per native vector
constexpr int U = ATTN_UNROLL;     // vectors per column chunk
constexpr int CH = W * U;          // columns per chunk: rows and key counts are padded to it
constexpr int R = ATTN_ROWS;       // query rows per block
typedef float vf __attribute__((vector_size(W * sizeof(float))));

__attribute__((always_inline)) inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(vf));
  return v;
}
__attribute__((always_inline)) inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof(vf)); }

inline int64_t up(int64_t n) { return (n + CH - 1) / CH * CH; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

inline int64_t visible(const Problem& p, int64_t i) {
  return p.causal ? min64(p.Sk, max64(0, i + p.Sk - p.Sq + 1)) : p.Sk;
}

// s[r][j] = sum_{d < dh} a[r][d] * bt[d][j] for r < R and j < nj (a multiple of CH).
template <int DH>
void rows_times_t(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t dh_rt, int64_t nj,
                  float* s, int64_t lds) {
  const int64_t dh = DH ? DH : dh_rt;
  for (int64_t j0 = 0; j0 < nj; j0 += CH) {
    vf acc[R][U];
    for (int r = 0; r < R; r++)
      for (int u = 0; u < U; u++) acc[r][u] = vf{};
    for (int64_t d = 0; d < dh; d++) {
      vf b[U];
      for (int u = 0; u < U; u++) b[u] = load(bt + d * ldb + j0 + u * W);
      for (int r = 0; r < R; r++) {
        const float ar = a[r * lda + d];
        for (int u = 0; u < U; u++) acc[r][u] += ar * b[u];
      }
    }
    for (int r = 0; r < R; r++)
      for (int u = 0; u < U; u++) store(s + r * lds + j0 + u * W, acc[r][u]);
  }
}

// c[r][:] = sum_{j < n} p[r][j] * b[j][:], rows of width dhp (a multiple of CH).
template <int DH>
void rows_times(const float* p, int64_t ldp, const float* b, int64_t dhp_rt, int64_t n, float* c) {
  const int64_t dhp = DH ? up(DH) : dhp_rt;
  for (int64_t d0 = 0; d0 < dhp; d0 += CH) {
    vf acc[R][U];
    for (int r = 0; r < R; r++)
      for (int u = 0; u < U; u++) acc[r][u] = vf{};
    for (int64_t j = 0; j < n; j++) {
      vf bj[U];
      for (int u = 0; u < U; u++) bj[u] = load(b + j * dhp + d0 + u * W);
      for (int r = 0; r < R; r++) {
        const float pr = p[r * ldp + j];
        for (int u = 0; u < U; u++) acc[r][u] += pr * bj[u];
      }
    }
    for (int r = 0; r < R; r++)
      for (int u = 0; u < U; u++) store(c + r * dhp + d0 + u * W, acc[r][u]);
  }
}

// b[j][:] += sum_r p[r][j] * a[r][:] for j < n, rows of width dhp.
template <int DH>
void add_rows_t(const float* p, int64_t ldp, const float* a, int64_t dhp_rt, int64_t n, float* b) {
  const int64_t dhp = DH ? up(DH) : dhp_rt;
  for (int64_t d0 = 0; d0 < dhp; d0 += CH) {
    vf ar[R][U];
    for (int r = 0; r < R; r++)
      for (int u = 0; u < U; u++) ar[r][u] = load(a + r * dhp + d0 + u * W);
    for (int64_t j = 0; j < n; j++) {
      vf acc[U];
      for (int u = 0; u < U; u++) acc[u] = load(b + j * dhp + d0 + u * W);
      for (int r = 0; r < R; r++) {
        const float pr = p[r * ldp + j];
        for (int u = 0; u < U; u++) acc[u] += pr * ar[r][u];
      }
      for (int u = 0; u < U; u++) store(b + j * dhp + d0 + u * W, acc[u]);
    }
  }
}

// Maximum and sum of x[0..n) with vector partials.
float row_max(const float* x, int64_t n) {
  vf acc = vf{} - __builtin_inff();
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const vf v = load(x + j);
    acc = acc > v ? acc : v;
  }
  float m = -__builtin_inff();
  for (int i = 0; i < W; i++) m = m > acc[i] ? m : acc[i];
  for (; j < n; j++) m = m > x[j] ? m : x[j];
  return m;
}
float row_sum(const float* x, int64_t n) {
  vf acc = vf{};
  int64_t j = 0;
  for (; j + W <= n; j += W) acc += load(x + j);
  float s = 0.f;
  for (; j < n; j++) s += x[j];
  for (int i = 0; i < W; i++) s += acc[i];
  return s;
}

// dst[d][j] = src[j*ls + d]: keys as columns, zero past `rows` up to ldd. Blocks of 8 keys keep
// the reads to a few cache lines while the writes run along rows.
template <int DH>
void transpose_in(const float* src, int64_t ls, int64_t rows, int64_t dh_rt, float* dst, int64_t ldd) {
  const int64_t dh = DH ? DH : dh_rt;
  int64_t j0 = 0;
  for (; j0 + 8 <= rows; j0 += 8)
    for (int64_t d = 0; d < dh; d++)
      for (int jj = 0; jj < 8; jj++) dst[d * ldd + j0 + jj] = src[(j0 + jj) * ls + d];
  for (int64_t d = 0; d < dh; d++) {
    for (int64_t j = j0; j < rows; j++) dst[d * ldd + j] = src[j * ls + d];
    for (int64_t j = rows; j < ldd; j++) dst[d * ldd + j] = 0.f;
  }
}

// dst[j][d] = src[j*ls + d], rows padded with zeros to up(dh).
template <int DH>
void copy_rows(const float* src, int64_t ls, int64_t rows, int64_t dh_rt, float* dst) {
  const int64_t dh = DH ? DH : dh_rt, dhp = up(dh);
  for (int64_t j = 0; j < rows; j++) {
    for (int64_t d = 0; d < dh; d++) dst[j * dhp + d] = src[j * ls + d];
    for (int64_t d = dh; d < dhp; d++) dst[j * dhp + d] = 0.f;
  }
}

void zero(float* p, int64_t n) {
  for (int64_t i = 0; i < n; i++) p[i] = 0.f;
}

int64_t fwd_work(const Problem& p) {
  const int64_t skp = up(p.Sk), dhp = up(p.Dh);
  return p.Dh * skp + p.Sk * dhp + 2 * R * dhp + R * skp;
}

template <int DH>
void fwd_head(const Problem& p, const Head& h, int64_t q0, int64_t q1, float* work) {
  const int64_t Sk = p.Sk, dh = DH ? DH : p.Dh, dhp = up(dh), skp = up(Sk);
  float* kt = work;              // [dh][skp]
  float* vp = kt + dh * skp;     // [Sk][dhp]
  float* qb = vp + Sk * dhp;     // [R][dhp]
  float* ob = qb + R * dhp;      // [R][dhp]
  float* s = ob + R * dhp;       // [R][skp]: scores, then probabilities
  transpose_in<DH>(h.k, h.ks, Sk, dh, kt, skp);
  copy_rows<DH>(h.v, h.vs, Sk, dh, vp);
  for (int64_t i0 = q0; i0 < q1; i0 += R) {
    const int nr = int(min64(R, q1 - i0));
    int64_t vis[R], nmax = 0;
    for (int r = 0; r < R; r++) {
      vis[r] = r < nr ? visible(p, i0 + r) : 0;
      nmax = max64(nmax, vis[r]);
    }
    if (nmax == 0) {  // no key visible: zero output, lse = -inf
      for (int r = 0; r < nr; r++) {
        for (int64_t d = 0; d < dh; d++) h.o[(i0 + r) * h.os + d] = 0.f;
        h.lse[i0 + r] = -__builtin_inff();
      }
      continue;
    }
    const int64_t nj = up(nmax);
    copy_rows<DH>(h.q + i0 * h.qs, h.qs, nr, dh, qb);
    zero(qb + nr * dhp, (R - nr) * dhp);
    rows_times_t<DH>(qb, dhp, kt, skp, dh, nj, s, skp);
    float inv[R];
    for (int r = 0; r < R; r++) {
      float* sr = s + r * skp;
      const int64_t n = vis[r];
      inv[r] = 0.f;
      if (n == 0) {
        zero(sr, nj);
        if (r < nr) h.lse[i0 + r] = -__builtin_inff();
        continue;
      }
      const float ms = row_max(sr, n) * p.scale, sc = p.scale;
      exp_affine<W>(sr, sc, ms, sr, n);
      const float l = row_sum(sr, n);
      zero(sr + n, nj - n);
      inv[r] = 1.0f / l;
      h.lse[i0 + r] = ms + __builtin_logf(l);
    }
    rows_times<DH>(s, skp, vp, dhp, nmax, ob);
    for (int r = 0; r < nr; r++) {
      float* orow = h.o + (i0 + r) * h.os;
      for (int64_t d = 0; d < dh; d++) orow[d] = ob[r * dhp + d] * inv[r];
    }
  }
}

int64_t bwd_work(const Problem& p) {
  const int64_t skp = up(p.Sk), dhp = up(p.Dh);
  return 2 * p.Dh * skp + 3 * p.Sk * dhp + 3 * R * dhp + 2 * R * skp;
}

template <int DH>
void bwd_head(const Problem& p, const Head& h, float* work) {
  const int64_t Sq = p.Sq, Sk = p.Sk, dh = DH ? DH : p.Dh, dhp = up(dh), skp = up(Sk);
  float* kt = work;            // [dh][skp]
  float* vt = kt + dh * skp;   // [dh][skp]
  float* kp = vt + dh * skp;   // [Sk][dhp]
  float* dkp = kp + Sk * dhp;  // [Sk][dhp], accumulated over queries
  float* dvp = dkp + Sk * dhp; // [Sk][dhp]
  float* qb = dvp + Sk * dhp;  // [R][dhp]
  float* dob = qb + R * dhp;   // [R][dhp]
  float* dqb = dob + R * dhp;  // [R][dhp]
  float* pr = dqb + R * dhp;   // [R][skp]: probabilities
  float* ds = pr + R * skp;    // [R][skp]: d(scores), scaled
  transpose_in<DH>(h.k, h.ks, Sk, dh, kt, skp);
  transpose_in<DH>(h.v, h.vs, Sk, dh, vt, skp);
  copy_rows<DH>(h.k, h.ks, Sk, dh, kp);
  zero(dkp, 2 * Sk * dhp);
  for (int64_t i0 = 0; i0 < Sq; i0 += R) {
    const int nr = int(min64(R, Sq - i0));
    int64_t vis[R], nmax = 0;
    for (int r = 0; r < R; r++) {
      vis[r] = r < nr ? visible(p, i0 + r) : 0;
      nmax = max64(nmax, vis[r]);
    }
    if (nmax == 0) {
      for (int r = 0; r < nr; r++)
        for (int64_t d = 0; d < dh; d++) h.dq[(i0 + r) * h.dqs + d] = 0.f;
      continue;
    }
    const int64_t nj = up(nmax);
    copy_rows<DH>(h.q + i0 * h.qs, h.qs, nr, dh, qb);
    copy_rows<DH>(h.dout + i0 * h.dos, h.dos, nr, dh, dob);
    zero(qb + nr * dhp, (R - nr) * dhp);
    zero(dob + nr * dhp, (R - nr) * dhp);
    rows_times_t<DH>(qb, dhp, kt, skp, dh, nj, pr, skp);
    rows_times_t<DH>(dob, dhp, vt, skp, dh, nj, ds, skp);
    for (int r = 0; r < R; r++) {
      float *prr = pr + r * skp, *dsr = ds + r * skp;
      const int64_t n = vis[r];
      if (n == 0) {
        zero(prr, nj);
        zero(dsr, nj);
        continue;
      }
      // D = <do, o> = sum_j P_j dP_j: the softmax backward's row constant.
      const float* orow = h.o + (i0 + r) * h.os;
      const float* dorow = dob + r * dhp;
      float D = 0.f;
      for (int64_t d = 0; d < dh; d++) D += dorow[d] * orow[d];
      const float lse = h.lse[i0 + r], sc = p.scale;
      exp_affine<W>(prr, sc, lse, prr, n);
      for (int64_t j = 0; j < n; j++) dsr[j] = prr[j] * (dsr[j] - D) * sc;
      zero(prr + n, nj - n);
      zero(dsr + n, nj - n);
    }
    add_rows_t<DH>(pr, skp, dob, dhp, nmax, dvp);  // dV += P^T dO
    add_rows_t<DH>(ds, skp, qb, dhp, nmax, dkp);   // dK += dS^T Q
    rows_times<DH>(ds, skp, kp, dhp, nmax, dqb);   // dQ = dS K
    for (int r = 0; r < nr; r++) {
      float* dqrow = h.dq + (i0 + r) * h.dqs;
      for (int64_t d = 0; d < dh; d++) dqrow[d] = dqb[r * dhp + d];
    }
  }
  for (int64_t j = 0; j < Sk; j++) {
    float *dkrow = h.dk + j * h.dks, *dvrow = h.dv + j * h.dvs;
    for (int64_t d = 0; d < dh; d++) {
      dkrow[d] = dkp[j * dhp + d];
      dvrow[d] = dvp[j * dhp + d];
    }
  }
}

// Head dimension 64 (every CLIP model) gets loops with constant trip counts.
void fwd(const Problem& p, const Head& h, int64_t q0, int64_t q1, float* work) {
  if (p.Dh == 64) fwd_head<64>(p, h, q0, q1, work);
  else fwd_head<0>(p, h, q0, q1, work);
}
void bwd(const Problem& p, const Head& h, float* work) {
  if (p.Dh == 64) bwd_head<64>(p, h, work);
  else bwd_head<0>(p, h, work);
}

}  // namespace
}  // namespace ATTN_ISA

const Kernels& ATTN_KERNELS() {
  static const Kernels k{ATTN_NAME, &ATTN_ISA::fwd, &ATTN_ISA::bwd, &ATTN_ISA::fwd_work, &ATTN_ISA::bwd_work};
  return k;
}

}  // namespace attn
}  // namespace tsclip

#pragma GCC diagnostic pop
