// CPU gemm op: c[b] = act(alpha * a[b] @ b[b] + bias) + (accumulate ? c[b] : 0), on strided views.
// Decodes each operand's strides into (transposed, leading dimension) for sgemm, folds a batch
// that shares one weight into a single taller product, and runs small batched products in
// parallel over the batch. bf16 operands, bias or output (as the CUDA op takes them) go through
// f32 copies: sgemm stays the one float32 kernel, and accumulation is float32 either way.
// gemm_pack_b / gemm_packed (at the end) serve inference with weights packed once.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/sgemm.h"
#include "../cpu/strided.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"

namespace tsclip {
namespace {

struct Operand {
  const float* data;
  int64_t batch_stride;  // 0: the same matrix for every batch entry
  int64_t rows, cols;
  bool trans;  // false: element (r, c) at r*ld + c; true: at c*ld + r
  int64_t ld;
};

std::string strides_of(const TensorRef& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; i++) s += (i ? "," : "") + std::to_string(t.strides[i]);
  return s + "]";
}

// Converts a bf16 operand's matrices into packed f32 ones in the same orientation: lines (rows,
// or columns when transposed) of unit stride, each `len` long, ld = len, one matrix per batch entry
// (one when broadcast). o is rewritten to describe the copy.
void widen(const uint16_t* src, Operand& o, int64_t batch, std::vector<float>& dst) {
  const int64_t lines = o.trans ? o.cols : o.rows, len = o.trans ? o.rows : o.cols;
  const int64_t mats = o.batch_stride == 0 ? 1 : batch;
  dst.resize(size_t(mats * lines * len));
  const int64_t bs = o.batch_stride, ld = o.ld;
  float* out = dst.data();
  parallel_for(mats * lines, std::max<int64_t>(1, 16384 / std::max<int64_t>(len, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t l = lo; l < hi; l++) {
      const uint16_t* s = src + (l / lines) * bs + (l % lines) * ld;
      float* d = out + l * len;
      for (int64_t j = 0; j < len; j++) d[j] = bf16_to_f32(s[j]);
    }
  });
  o.data = out;
  o.ld = len;
  o.batch_stride = mats > 1 ? lines * len : 0;
}

// A matrix view is usable when one of its last two strides is 1 (a dimension of size 1 may
// have any stride). Row-major: element (r, c) at r*ld + c; transposed: at c*ld + r.
// A bf16 operand is widened into `widened` (same orientation, packed), which `data` then points to.
Operand decode(const OpArgs& args, const TensorRef& t, const char* name, int64_t batch, std::vector<float>& widened) {
  args.require(t.dtype == DType::F32 || t.dtype == DType::BF16,
               std::string(name) + " must be float32 or bfloat16, got " + t.describe());
  args.require(t.ndim == 2 || t.ndim == 3,
               std::string(name) + " must be [batch,rows,cols] or [rows,cols], got " + t.describe());
  Operand o{t.dtype == DType::F32 ? t.ptr<const float>() : nullptr, 0, t.size(-2), t.size(-1), false, 0};
  if (t.ndim == 3) {
    args.require(t.shape[0] == batch || t.shape[0] == 1,
                 std::string(name) + " has batch " + std::to_string(t.shape[0]) + ", expected " +
                     std::to_string(batch) + " (or 1)");
    o.batch_stride = t.shape[0] == 1 ? 0 : t.strides[0];
  }
  const int64_t sr = t.stride(-2), sc = t.stride(-1);
  if (sc == 1 || o.cols == 1) {
    o.trans = false;
    o.ld = o.rows == 1 ? o.cols : sr;
  } else if (sr == 1 || o.rows == 1) {
    o.trans = true;
    o.ld = o.cols == 1 ? o.rows : sc;
  } else {
    args.fail(std::string(name) + " " + t.describe() + " has strides " + strides_of(t) +
              ": one of the last two strides must be 1");
  }
  if (t.dtype == DType::BF16) widen(t.ptr<const uint16_t>(), o, batch, widened);
  return o;
}

// ints[1]: the epilogue's activation (ints[2], allow_tf32, is CUDA's).
GemmAct epilogue_act(const OpArgs& args) {
  const int64_t act = args.ints.size() > 1 ? args.i(1) : 0;
  args.require(act >= 0 && act <= int64_t(GemmAct::Gelu),
               "activation must be 0 (none), 1 (relu), 2 (quick_gelu) or 3 (gelu), got " + std::to_string(act));
  return GemmAct(act);
}

void run_gemm(const Operand& a, const Operand& b, float* c, int64_t batch, int64_t M, int64_t N, int64_t K,
              float alpha, float beta, const float* bias, GemmAct act) {
  // One weight for every batch entry and a's rows evenly spaced across entries: a single
  // [batch*M, K] @ [K, N] product packs the weight once instead of once per entry.
  if (batch > 1 && b.batch_stride == 0 && !a.trans && (M == 1 || a.batch_stride == M * a.ld)) {
    const int64_t lda = M == 1 ? a.batch_stride : a.ld;
    sgemm(false, b.trans, batch * M, N, K, alpha, a.data, lda, b.data, b.ld, beta, c, N, bias, act);
    return;
  }
  auto one = [&](int64_t i, int threads) {
    sgemm(a.trans, b.trans, M, N, K, alpha, a.data + i * a.batch_stride, a.ld,
          b.data + i * b.batch_stride, b.ld, beta, c + i * M * N, N, bias, act, threads);
  };
  // Many small products: one thread each beats splitting every one of them.
  const double flops = 2.0 * double(M) * double(N) * double(K);
  if (batch > 1 && num_threads() > 1 && (batch >= 4 * num_threads() || flops < 8e6)) {
    parallel_for(batch, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; i++) one(i, 1);
    });
    return;
  }
  for (int64_t i = 0; i < batch; i++) one(i, 0);
}

}  // namespace

void cpu_gemm(const OpArgs& args) {
  const TensorRef& ta = args.input(0);
  const TensorRef& tb = args.input(1);
  const TensorRef* tbias = args.in.size() > 2 && args.in[2].defined() ? &args.in[2] : nullptr;
  const TensorRef& tc = args.output(0);
  const bool accumulate = args.i(0) != 0;
  const GemmAct act = epilogue_act(args);
  const float alpha = float(args.f(0));

  args.require(tc.dtype == DType::F32 || tc.dtype == DType::BF16, "c must be float32 or bfloat16, got " + tc.describe());
  args.require(tc.ndim == 2 || tc.ndim == 3, "c must be [batch,M,N] or [M,N], got " + tc.describe());
  args.require(tc.contiguous(), "c " + tc.describe() + " must be contiguous, has strides " + strides_of(tc));
  const int64_t batch = tc.ndim == 3 ? tc.shape[0] : 1;
  const int64_t M = tc.size(-2), N = tc.size(-1);
  std::vector<float> wa, wb;  // f32 copies of bf16 operands
  const Operand a = decode(args, ta, "a", batch, wa), b = decode(args, tb, "b", batch, wb);
  args.require(a.cols == b.rows, "inner sizes differ: a " + ta.describe() + " @ b " + tb.describe());
  args.require(a.rows == M && b.cols == N, "c is " + tc.describe() + ", expected [" +
                                               std::to_string(a.rows) + "," + std::to_string(b.cols) +
                                               "] from a " + ta.describe() + " @ b " + tb.describe());
  const int64_t K = a.cols;

  const float* bias = nullptr;
  std::vector<float> bias_copy;
  if (tbias) {
    args.require((tbias->dtype == DType::F32 || tbias->dtype == DType::BF16) && tbias->ndim == 1 && tbias->shape[0] == N,
                 "bias must be float32[" + std::to_string(N) + "] or bfloat16[" + std::to_string(N) + "], got " +
                     tbias->describe());
    const int64_t s = tbias->strides[0];
    if (tbias->dtype == DType::BF16) {
      bias_copy.resize(size_t(N));
      for (int64_t j = 0; j < N; j++) bias_copy[size_t(j)] = bf16_to_f32(tbias->ptr<const uint16_t>()[j * s]);
      bias = bias_copy.data();
    } else {
      bias = tbias->ptr<const float>();
      if (N > 1 && s != 1) {  // the micro-kernels read the bias as a vector
        bias_copy.resize(size_t(N));
        for (int64_t j = 0; j < N; j++) bias_copy[size_t(j)] = bias[j * s];
        bias = bias_copy.data();
      }
    }
  }
  if (batch == 0 || M == 0 || N == 0) return;

  // A bf16 output is computed in f32 (holding c's old values when accumulating), then rounded once.
  const bool c_bf16 = tc.dtype == DType::BF16;
  const int64_t c_numel = batch * M * N;
  std::vector<float> wc;
  if (c_bf16) {
    wc.resize(size_t(c_numel));
    if (accumulate) {
      const uint16_t* src = tc.ptr<const uint16_t>();
      for (int64_t i = 0; i < c_numel; i++) wc[size_t(i)] = bf16_to_f32(src[i]);
    }
  }
  float* c = c_bf16 ? wc.data() : tc.ptr<float>();
  run_gemm(a, b, c, batch, M, N, K, alpha, accumulate ? 1.0f : 0.0f, bias, act);
  if (c_bf16) {
    uint16_t* dst = tc.ptr<uint16_t>();
    for (int64_t i = 0; i < c_numel; i++) dst[i] = f32_to_bf16(wc[size_t(i)]);
  }
}

// --- products with a weight packed once (inference) ---
// gemm_pack_b lays op(B) out as the CPU micro-kernel reads it, gemm_packed multiplies by it without
// packing again: at one image's 50 tokens the per-call packing of a transposed weight is a third of
// the product's time.

namespace {

// The buffer the TypeScript side allocates: the widest micro-tile (32 columns) bounds every path.
int64_t packed_capacity(int64_t K, int64_t N) { return K * ((N + 31) / 32 * 32); }

// The micro-kernels load packed slivers with aligned vector loads.
bool aligned64(const TensorRef& t) { return reinterpret_cast<uintptr_t>(t.data) % 64 == 0; }

}  // namespace

void cpu_gemm_pack_b(const OpArgs& args) {
  const TensorRef& tb = args.input(0);
  const TensorRef& out = args.output(0);
  args.require(tb.dtype == DType::F32 && tb.ndim == 2, "b must be float32 [K,N], got " + tb.describe());
  std::vector<float> unused;  // float32: nothing to widen
  const Operand b = decode(args, tb, "b", 1, unused);
  const int64_t K = b.rows, N = b.cols;
  args.require(out.dtype == DType::F32 && out.contiguous() && out.numel() >= packed_capacity(K, N),
               "packed must be contiguous float32 with " + std::to_string(packed_capacity(K, N)) +
                   " elements, got " + out.describe());
  args.require(aligned64(out), "packed must start on a 64-byte boundary (a fresh tensor, not an offset view)");
  sgemm_pack_b(b.trans, K, N, b.data, b.ld, out.ptr<float>());
}

void cpu_gemm_packed(const OpArgs& args) {
  const TensorRef& ta = args.input(0);
  const TensorRef& packed = args.input(1);
  const TensorRef* bias = args.in.size() > 2 && args.in[2].defined() ? &args.in[2] : nullptr;
  const TensorRef& c = args.output(0);
  const bool accumulate = args.i(0) != 0;
  const GemmAct act = epilogue_act(args);
  args.require(ta.dtype == DType::F32 && ta.ndim == 2, "a must be float32 [M,K], got " + ta.describe());
  args.require(c.dtype == DType::F32 && c.ndim == 2 && c.contiguous(), "c must be contiguous float32 [M,N], got " + c.describe());
  std::vector<float> unused;  // float32: nothing to widen
  const Operand a = decode(args, ta, "a", 1, unused);
  const int64_t M = a.rows, K = a.cols, N = c.shape[1];
  args.require(c.shape[0] == M, "c " + c.describe() + " must have a's " + std::to_string(M) + " rows");
  args.require(packed.dtype == DType::F32 && packed.contiguous() && packed.numel() >= packed_capacity(K, N),
               "packed " + packed.describe() + " is too small for a [" + std::to_string(K) + "," +
                   std::to_string(N) + "] weight");
  args.require(aligned64(packed), "packed must start on a 64-byte boundary (a fresh tensor, not an offset view)");
  if (bias)
    args.require(bias->dtype == DType::F32 && bias->ndim == 1 && bias->shape[0] == N && (N == 1 || bias->strides[0] == 1),
                 "bias must be contiguous float32[" + std::to_string(N) + "], got " + bias->describe());
  if (M == 0 || N == 0) return;
  sgemm_packed(a.trans, M, N, K, float(args.f(0)), a.data, a.ld, packed.ptr<const float>(),
               accumulate ? 1.0f : 0.0f, c.ptr<float>(), N, bias ? bias->ptr<const float>() : nullptr, act);
}

}  // namespace tsclip
