// CUDA contrastive-loss ops, tiled so that no N x N logits buffer exists; the kernels and the
// decomposition into row passes are described in clip_loss_kernels.cuh.
//   clip_loss_fwd/bwd: the symmetric CLIP loss over img [N,D] and txt [N,D].
//   clip_ce_fwd/bwd:   one direction, rows [n,D] against columns [m,D] with row i labelled
//                      i + offset: local rows against gathered columns under data parallelism.
// bf16 inputs run on tensor cores (fp32 accumulation); f32 inputs run exactly in f32 while the
// logits are few (n*m <= 2^24) and through a bf16 copy beyond. TSCLIP_CUDA_CLIP=simple|mma forces
// one of the two.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"
#include "clip_loss_kernels.cuh"

namespace tsclip {
namespace {

struct Scratch {
  void* p = nullptr;
  explicit Scratch(size_t bytes) { reset(bytes); }
  ~Scratch() { reset(0); }
  void reset(size_t bytes) {
    if (p) cuda::free(p);
    p = bytes ? cuda::alloc(bytes) : nullptr;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

enum class Want { Auto, Simple, Mma };
Want wanted() {
  static const Want w = [] {
    const char* v = std::getenv("TSCLIP_CUDA_CLIP");
    if (!v || !*v || !std::strcmp(v, "auto")) return Want::Auto;
    if (!std::strcmp(v, "simple")) return Want::Simple;
    if (!std::strcmp(v, "mma")) return Want::Mma;
    throw Error(std::string("TSCLIP_CUDA_CLIP must be auto, simple or mma, got '") + v + "'");
  }();
  return w;
}

struct Mat {
  const void* p;
  int64_t rows, cols, ld;
  bool bf;
};

Mat matrix(const OpArgs& a, const TensorRef& t, const char* name) {
  cuda::require_float(a, t, name);
  a.require(t.ndim == 2, std::string(name) + " must be [rows,D], got " + t.describe());
  a.require(t.strides[1] == 1 || t.shape[1] == 1, std::string(name) + " must have a unit last stride");
  a.require(t.shape[0] < (int64_t(1) << 31) && t.shape[1] < (int64_t(1) << 31), std::string(name) + " is too large");
  return {t.data, t.shape[0], t.shape[1], t.shape[0] == 1 ? t.shape[1] : t.strides[0], t.dtype == DType::BF16};
}

const float* scalar(const OpArgs& a, const TensorRef& t, const char* name) {
  a.require(t.dtype == DType::F32 && t.numel() == 1, std::string(name) + " must be float32[1], got " + t.describe());
  return t.ptr<const float>();
}
float* scalar_out(const OpArgs& a, const TensorRef& t, const char* name) {
  return const_cast<float*>(scalar(a, t, name));
}
float* vec_f32(const OpArgs& a, const TensorRef& t, const char* name, int64_t n) {
  a.require(t.dtype == DType::F32 && t.ndim == 1 && t.shape[0] == n && (t.strides[0] == 1 || n <= 1),
            std::string(name) + " must be contiguous float32[" + std::to_string(n) + "], got " + t.describe());
  return t.ptr<float>();
}

// The operands the kernels read: bf16 copies of f32 inputs when the tensor-core path runs.
struct Operands {
  tsclip::tc::ClipParams p;
  bool mma = false;
  Scratch ca{0}, cb{0};
  Operands(const OpArgs& args, const Mat& A, const Mat& B, cudaStream_t s) {
    p.n = int(A.rows), p.m = int(B.rows), p.D = int(A.cols);
    p.a = A.p, p.lda = A.ld, p.a_bf = A.bf;
    p.b = B.p, p.ldb = B.ld, p.b_bf = B.bf;
    const Want w = wanted();
    const bool f32 = !A.bf || !B.bf;
    mma = w == Want::Mma || (w == Want::Auto && (!f32 || double(A.rows) * double(B.rows) > double(1 << 24)));
    if (mma) {  // would the operands, once converted, suit the tensor-core kernels?
      tsclip::tc::ClipParams trial = p;
      if (!A.bf) trial.a = nullptr, trial.lda = A.cols, trial.a_bf = true;
      if (!B.bf) trial.b = nullptr, trial.ldb = B.cols, trial.b_bf = true;
      mma = tsclip::tc::clip_mma_eligible(trial);
    }
    args.require(mma || A.cols <= 2048, "D = " + std::to_string(A.cols) +
                                            " needs the tensor-core path (bf16-able, D a multiple of 8); the "
                                            "f32 kernels take D <= 2048");
    if (mma) {
      convert(A, &ca, &p.a, &p.lda, &p.a_bf, s);
      convert(B, &cb, &p.b, &p.ldb, &p.b_bf, s);
    }
  }
  static void convert(const Mat& M, Scratch* keep, const void** ptr, int64_t* ld, bool* bf, cudaStream_t s) {
    if (M.bf) return;
    keep->reset(size_t(M.rows) * size_t(M.cols) * 2);
    auto* dst = static_cast<__nv_bfloat16*>(keep->p);
    tsclip::tc::clip_to_bf16_kernel<<<cuda::grid_for(M.rows * M.cols), cuda::kBlock, 0, s>>>(
        static_cast<const float*>(M.p), M.ld, M.rows, int(M.cols), dst);
    CUDA_CHECK_LAUNCH();
    *ptr = dst, *ld = M.cols, *bf = true;
  }
};

using tsclip::tc::clip_swapped;

void out_matrix(const OpArgs& a, const TensorRef& t, const char* name, int64_t rows, int64_t D, tsclip::tc::ClipParams* q) {
  const Mat m = matrix(a, t, name);
  a.require(m.rows == rows && m.cols == D, std::string(name) + " must be [" + std::to_string(rows) + "," +
                                               std::to_string(D) + "], got " + t.describe());
  q->da = const_cast<void*>(m.p), q->ldda = m.ld, q->da_bf = m.bf;
}

// Backward row pass into da, with the partial sums of dZ s in `ds_part` (may be null).
void row_pass_bwd(const tsclip::tc::ClipParams& q, bool mma, float* ds_part, cudaStream_t s) {
  tsclip::tc::ClipParams r = q;
  r.ds_part = ds_part;
  CUDA_CHECK(tsclip::tc::clip_row_pass(r, s, mma, true));
}
size_t ds_parts(const tsclip::tc::ClipParams& q, bool mma) {
  return mma ? size_t(tsclip::tc::clip_row_blocks(q.n)) : size_t(q.n);
}

// clip_ce: rows and cols of one width, and the labels offset + i (i < n) inside the m columns. The
// messages are the CPU kernel's.
int64_t label_offset(const OpArgs& a, const Mat& R, const Mat& C) {
  const std::string rd = a.input(0).describe(), cd = a.input(1).describe();
  a.require(R.cols == C.cols, "rows " + rd + " and cols " + cd + " must have one width");
  const int64_t off = a.i(0);
  a.require(off >= 0 && off + R.rows <= C.rows, "the labels offset+i = " + std::to_string(off) + ".." +
                                                    std::to_string(off + R.rows - 1) + " of rows " + rd +
                                                    " must index the columns of cols " + cd);
  return off;
}

}  // namespace

void cuda_clip_loss_fwd(const OpArgs& args) {
  const Mat img = matrix(args, args.input(0), "img"), txt = matrix(args, args.input(1), "txt");
  args.require(img.rows == txt.rows && img.cols == txt.cols,
               "img " + args.input(0).describe() + " and txt " + args.input(1).describe() + " must have one shape");
  const int64_t N = img.rows;
  const float* t = scalar(args, args.input(2), "log_scale");
  float* loss = scalar_out(args, args.output(0), "loss");
  float* lse_row = vec_f32(args, args.output(1), "lse_row", N);
  float* lse_col = vec_f32(args, args.output(2), "lse_col", N);
  cudaStream_t s = cuda::stream();
  if (N == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), s));
    return;
  }
  Operands ops(args, img, txt, s);
  tsclip::tc::ClipParams p = ops.p;
  p.log_scale = t;
  p.lse_out = lse_row;
  CUDA_CHECK(tsclip::tc::clip_row_pass(p, s, ops.mma, false));
  tsclip::tc::ClipParams q = clip_swapped(p);
  q.lse_out = lse_col;
  CUDA_CHECK(tsclip::tc::clip_row_pass(q, s, ops.mma, false));
  const float w = float(0.5 / double(N));
  tsclip::tc::clip_loss_reduce_kernel<<<1, 1024, 0, s>>>(p, lse_row, lse_col, w, 2 * w, loss);
  CUDA_CHECK_LAUNCH();
}

void cuda_clip_loss_bwd(const OpArgs& args) {
  const Mat img = matrix(args, args.input(0), "img"), txt = matrix(args, args.input(1), "txt");
  args.require(img.rows == txt.rows && img.cols == txt.cols,
               "img " + args.input(0).describe() + " and txt " + args.input(1).describe() + " must have one shape");
  const int64_t N = img.rows, D = img.cols;
  const float* t = scalar(args, args.input(2), "log_scale");
  const float* lse_row = vec_f32(args, args.input(3), "lse_row", N);
  const float* lse_col = vec_f32(args, args.input(4), "lse_col", N);
  const float* dloss = scalar(args, args.input(5), "dloss");
  tsclip::tc::ClipParams p;
  out_matrix(args, args.output(0), "dimg", N, D, &p);
  tsclip::tc::ClipParams pt;
  out_matrix(args, args.output(1), "dtxt", N, D, &pt);
  float* dscale = scalar_out(args, args.output(2), "dscale");
  cudaStream_t s = cuda::stream();
  if (N == 0 || D == 0) {
    CUDA_CHECK(cudaMemsetAsync(dscale, 0, sizeof(float), s));
    return;
  }
  Operands ops(args, img, txt, s);
  tsclip::tc::ClipParams q = ops.p;
  q.log_scale = t, q.dloss = dloss;
  q.lse_r = lse_row, q.lse_c = lse_col;
  q.c_row = q.c_col = float(0.5 / double(N));
  q.offset = 0;
  q.da = p.da, q.ldda = p.ldda, q.da_bf = p.da_bf;
  Scratch part(ds_parts(q, ops.mma) * sizeof(float));
  row_pass_bwd(q, ops.mma, static_cast<float*>(part.p), s);
  tsclip::tc::ClipParams qt = clip_swapped(q);
  qt.da = pt.da, qt.ldda = pt.ldda, qt.da_bf = pt.da_bf;
  row_pass_bwd(qt, ops.mma, nullptr, s);
  tsclip::tc::clip_sum_kernel<<<1, 1024, 0, s>>>(static_cast<float*>(part.p), int(ds_parts(q, ops.mma)), dscale);
  CUDA_CHECK_LAUNCH();
}

// One direction with a label offset (clip_ce_fwd / clip_ce_bwd in ops.def).
// fwd: in rows [n,D], cols [m,D], log_scale [1]. out loss [1] = weight * sum_i (lse_i - s_{i,i+offset}),
//      lse [n]. ints: offset. floats: weight.
void cuda_clip_ce_fwd(const OpArgs& args) {
  const Mat R = matrix(args, args.input(0), "rows"), Cm = matrix(args, args.input(1), "cols");
  const int64_t off = label_offset(args, R, Cm);
  const float* t = scalar(args, args.input(2), "log_scale");
  float* loss = scalar_out(args, args.output(0), "loss");
  float* lse = vec_f32(args, args.output(1), "lse", R.rows);
  const float weight = float(args.f(0));
  cudaStream_t s = cuda::stream();
  if (R.rows == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), s));
    return;
  }
  Operands ops(args, R, Cm, s);
  tsclip::tc::ClipParams p = ops.p;
  p.log_scale = t, p.lse_out = lse, p.offset = int(off);
  CUDA_CHECK(tsclip::tc::clip_row_pass(p, s, ops.mma, false));
  tsclip::tc::clip_loss_reduce_kernel<<<1, 1024, 0, s>>>(p, lse, nullptr, weight, weight, loss);
  CUDA_CHECK_LAUNCH();
}

// bwd: in rows, cols, log_scale, lse [n], dloss [1]. out drows [n,D], dcols [m,D], dscale [1]
//      (overwritten). ints: offset. floats: weight.
void cuda_clip_ce_bwd(const OpArgs& args) {
  const Mat R = matrix(args, args.input(0), "rows"), Cm = matrix(args, args.input(1), "cols");
  const int64_t off = label_offset(args, R, Cm);
  const float* t = scalar(args, args.input(2), "log_scale");
  const float* lse = vec_f32(args, args.input(3), "lse", R.rows);
  const float* dloss = scalar(args, args.input(4), "dloss");
  tsclip::tc::ClipParams pr, pc;
  out_matrix(args, args.output(0), "drows", R.rows, R.cols, &pr);
  out_matrix(args, args.output(1), "dcols", Cm.rows, Cm.cols, &pc);
  float* dscale = scalar_out(args, args.output(2), "dscale");
  const float weight = float(args.f(0));
  cudaStream_t s = cuda::stream();
  if (Cm.rows == 0 || R.cols == 0) {
    CUDA_CHECK(cudaMemsetAsync(dscale, 0, sizeof(float), s));
    return;
  }
  if (R.rows == 0) {  // no loss terms: the column gradient is zero
    for (int64_t r = 0; r < Cm.rows; r++)
      CUDA_CHECK(cudaMemsetAsync(static_cast<char*>(pc.da) + r * pc.ldda * (pc.da_bf ? 2 : 4), 0,
                                 size_t(Cm.cols) * (pc.da_bf ? 2 : 4), s));
    CUDA_CHECK(cudaMemsetAsync(dscale, 0, sizeof(float), s));
    return;
  }
  Operands ops(args, R, Cm, s);
  tsclip::tc::ClipParams p = ops.p;
  p.log_scale = t, p.dloss = dloss;
  tsclip::tc::ClipCeBwdPlan plan = tsclip::tc::clip_ce_bwd_plan(p, lse, weight, int(off));
  plan.rows.da = pr.da, plan.rows.ldda = pr.ldda, plan.rows.da_bf = pr.da_bf;
  plan.cols.da = pc.da, plan.cols.ldda = pc.ldda, plan.cols.da_bf = pc.da_bf;
  Scratch part(ds_parts(plan.rows, ops.mma) * sizeof(float));
  row_pass_bwd(plan.rows, ops.mma, static_cast<float*>(part.p), s);
  row_pass_bwd(plan.cols, ops.mma, nullptr, s);
  tsclip::tc::clip_sum_kernel<<<1, 1024, 0, s>>>(static_cast<float*>(part.p), int(ds_parts(plan.rows, ops.mma)), dscale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tsclip
