// CUDA kernels for 2-D convolution (NCHW, square stride and padding, no dilation or groups),
// batch norm and average pooling.
//
// Convolutions are implicit GEMMs (conv_kernels.cuh): v1, the fp32 tiled kernel, and v2, tensor
// cores. The path of each call:
//   - any GEMM operand in bfloat16 (forward: x or w; bwd data: dy or w; bwd weight: dy or x):
//     v2 on bf16 (m16n8k16), the other operand rounded to bf16 as it is loaded, fp32 accumulation.
//   - float32 operands follow the gemm op's rule, so f32 models keep their precision by default:
//     v2 with 3xTF32 (float32 accuracy; x = hi + lo in tf32, three products), or plain tf32
//     (10-bit mantissas, ~1e-3 relative) when allowed: ints[2] (allow_tf32) != 0, or
//     TSCLIP_CUDA_TF32=1 as for gemm.
//   - v1, exact float32, when TSCLIP_CUDA_CONV=simple (tests, ruling a kernel out), when the v2
//     grid does not fit (more than 65535 column tiles), and in the CPU emulation build.
// The weight gradient's K (batch x output pixels) is long and its output small, so both versions
// split K over blocks (grid z) into partial tiles that a second kernel sums in a fixed order: no
// atomics, the same result on every run. The bias gradient is a separate exact f32 reduction.
//
// Batch norm: per-channel mean/variance by Welford per thread, merged with Chan's formula across
// threads and blocks (stable for large counts); running stats updated as PyTorch does (unbiased
// variance, momentum). Pooling: one thread per output (forward) or per input pixel (backward,
// gathering the windows that cover it), so nothing is accumulated concurrently.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"
#include "conv_kernels.cuh"

namespace tsclip {
namespace {

using convk::ConvShape;
using cuda::ldf;
using cuda::stf;

// dbias[o] += sum over n, pixels of dy[n, o, :, :]. One block per channel.
__global__ void bias_grad_kernel(const void* dy, bool dyb, void* db, bool dbb, int N, int O, int64_t hw) {
  __shared__ float scratch[32];
  for (int o = blockIdx.x; o < O; o += gridDim.x) {
    float s = 0.f;
    int64_t total = int64_t(N) * hw;
    for (int64_t t = threadIdx.x; t < total; t += blockDim.x) {
      int64_t n = t / hw, q = t - n * hw;
      s += ldf(dy, dyb, (n * O + o) * hw + q);
    }
    s = cuda::block_sum(s, scratch);
    if (threadIdx.x == 0) stf(db, dbb, o, ldf(db, dbb, o) + s);
  }
}

// v1 on one direction's problem P, split over grid z when splits > 1.
template <class P>
void launch_simple(const P& p, int64_t M, int64_t N, int64_t K, int splits, int64_t k_per_split) {
  dim3 grid(unsigned((N + convk::kSimpleBN - 1) / convk::kSimpleBN), unsigned((M + convk::kSimpleBM - 1) / convk::kSimpleBM),
            unsigned(splits));
  cuda::launch(convk::conv_simple_kernel<P>, grid, convk::kSimpleThreads, 0, cuda::stream(), p, int(M), int(N), int(K),
      int(k_per_split));
}

// Checks x [N,C,H,W], w [O,C,kh,kw] and returns the geometry; every index fits in int32.
ConvShape conv_shape(const OpArgs& a, const TensorRef& x, const TensorRef& w) {
  a.require(x.ndim == 4, "x must be [N, C, H, W], got " + x.describe());
  a.require(w.ndim == 4, "weight must be [O, C, kh, kw], got " + w.describe());
  a.require(w.shape[1] == x.shape[1], "weight " + w.describe() + " does not match the channels of x " + x.describe());
  int64_t stride = a.i(0), pad = a.i(1);
  a.require(stride >= 1 && pad >= 0, "stride must be >= 1 and pad >= 0");
  int64_t Ho = (x.shape[2] + 2 * pad - w.shape[2]) / stride + 1;
  int64_t Wo = (x.shape[3] + 2 * pad - w.shape[3]) / stride + 1;
  a.require(x.shape[2] + 2 * pad >= w.shape[2] && x.shape[3] + 2 * pad >= w.shape[3],
            "kernel larger than the padded input");
  const int64_t lim = INT_MAX;
  a.require(x.numel() < lim && w.numel() < lim && x.shape[0] * w.shape[0] * Ho * Wo < lim &&
                x.shape[0] * Ho * Wo * w.shape[1] < lim && x.shape[0] * x.shape[2] * x.shape[3] < lim,
            "tensors too large for the 32-bit indexing of this kernel");
  return ConvShape{int(x.shape[0]), int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), int(w.shape[0]),
                   int(w.shape[2]), int(w.shape[3]), int(Ho), int(Wo), int(stride), int(pad)};
}

void require_nchw(const OpArgs& a, const TensorRef& t, int64_t n, int64_t c, int64_t h, int64_t w, const char* what) {
  bool ok = t.ndim == 4 && t.shape[0] == n && t.shape[1] == c && t.shape[2] == h && t.shape[3] == w && t.contiguous();
  a.require(ok, std::string(what) + " must be contiguous [" + std::to_string(n) + "," + std::to_string(c) + "," +
                    std::to_string(h) + "," + std::to_string(w) + "], got " + t.describe());
}
void require_vec(const OpArgs& a, const TensorRef& t, int64_t n, const char* what) {
  cuda::require_float(a, t, what);
  a.require(t.contiguous() && t.numel() == n,
            std::string(what) + " must be contiguous [" + std::to_string(n) + "], got " + t.describe());
}

#if !defined(TSCLIP_CPU_EMU)
// TSCLIP_CUDA_CONV=simple forces v1; auto (or unset) chooses.
bool simple_forced() {
  static const bool v = [] {
    const char* e = std::getenv("TSCLIP_CUDA_CONV");
    if (!e || !*e || !std::strcmp(e, "auto")) return false;
    if (!std::strcmp(e, "simple")) return true;
    throw Error(std::string("TSCLIP_CUDA_CONV must be auto or simple, got '") + e + "'");
  }();
  return v;
}

// The gemm op's tf32 rule: the call's allow_tf32 (ints[2]) or TSCLIP_CUDA_TF32=1 everywhere.
bool allow_tf32(const OpArgs& a) {
  static const bool everywhere = [] {
    const char* e = std::getenv("TSCLIP_CUDA_TF32");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return everywhere || (a.ints.size() > 2 && a.i(2) != 0);
}

// Runs v2 and returns true, or returns false (nothing launched) when its plan does not fit.
bool run_tc(const OpArgs& a, convk::ConvTcParams& p) {
  if (simple_forced()) return false;
  p.bf16_mma = p.a_bf16 || p.b_bf16;
  p.tf32_fast = !p.bf16_mma && allow_tf32(a);
  convk::conv_tc_sizes(p);
  const convk::ConvTcPlan pl = convk::conv_tc_plan(p, cuda::sm_count());
  if (!pl.ok) return false;
  p.k_per_split = pl.k_per_split;
  cudaStream_t st = cuda::stream();
  const convk::ConvKernel kern = convk::conv_tc_kernel(p, pl);
  if (pl.part_elems == 0) {
    cuda::launch(kern, dim3(pl.gx, pl.gy, pl.gz), pl.threads, size_t(pl.smem), st, p);
    return true;
  }
  // weight gradient split over K: partial tiles, then dw += their sum
  void* dw = p.out;
  p.part = static_cast<float*>(cuda::alloc(size_t(pl.part_elems) * sizeof(float)));
  try {
    cuda::launch(kern, dim3(pl.gx, pl.gy, pl.gz), pl.threads, size_t(pl.smem), st, p);
    const int64_t n = int64_t(p.M) * p.Ng;
    cuda::launch(convk::conv_sum_splits_kernel, cuda::grid_for(n), cuda::kBlock, 0, st, p.part, n, pl.splits, dw,
        p.out_bf16);
  } catch (...) {
    cuda::free(p.part);
    throw;
  }
  cuda::free(p.part);  // stream-ordered reuse
  return true;
}
#endif

// ---------------------------------------------------------------------------------------------
// Batch norm.
struct Welford {
  float n, mean, m2;
};
__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  float n = a.n + b.n;
  if (n == 0.f) return a;
  float d = b.mean - a.mean, f = b.n / n;
  return Welford{n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}
__device__ __forceinline__ Welford warp_merge(Welford w) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford other{__shfl_xor_sync(0xffffffffu, w.n, o), __shfl_xor_sync(0xffffffffu, w.mean, o),
                  __shfl_xor_sync(0xffffffffu, w.m2, o)};
    w = merge(w, other);
  }
  return w;
}

// grid (C, splits), 256 threads. Block (c, s) takes elements [s*chunk, (s+1)*chunk) of channel c,
// element t = n*HW + q. part[c*splits + s] = its (count, mean, M2).
__global__ void bn_stats_kernel(const void* x, bool xb, Welford* part, int C, int64_t HW, int64_t count,
                                int64_t chunk) {
  __shared__ Welford warps[32];
  int c = blockIdx.x, s = blockIdx.y;
  int64_t t0 = int64_t(s) * chunk, t1 = min(count, t0 + chunk);
  Welford w{0.f, 0.f, 0.f};
  for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
    int64_t n = t / HW, q = t - n * HW;
    float v = ldf(x, xb, (n * C + c) * HW + q);
    w.n += 1.f;
    float d = v - w.mean;
    w.mean += d / w.n;
    w.m2 += d * (v - w.mean);
  }
  w = warp_merge(w);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) warps[warp] = w;
  __syncthreads();
  if (warp == 0) {
    w = lane < nw ? warps[lane] : Welford{0.f, 0.f, 0.f};
    w = warp_merge(w);
    if (lane == 0) part[int64_t(c) * gridDim.y + s] = w;
  }
}

// One thread per channel: merge the splits, write mean and rstd, update the running stats (either
// may be null) as PyTorch does: the biased variance normalises, the unbiased one is tracked.
// `count` is exact (a float count drifts past 2^24 values); count > 1 is checked on the host.
__global__ void bn_finalize_kernel(const Welford* part, int splits, int C, double count, float eps, float momentum,
                                   float* mean, float* rstd, void* rmean, bool rmb, void* rvar, bool rvb) {
  CUDA_GRID_LOOP(c, C) {
    Welford w = part[c * splits];
    for (int k = 1; k < splits; k++) w = merge(w, part[c * splits + k]);
    double m2 = w.m2;
    mean[c] = w.mean;
    rstd[c] = float(1.0 / sqrt(m2 / count + double(eps)));
    if (rmean) stf(rmean, rmb, c, float((1.0 - momentum) * ldf(rmean, rmb, c) + double(momentum) * w.mean));
    if (rvar) stf(rvar, rvb, c, float((1.0 - momentum) * ldf(rvar, rvb, c) + double(momentum) * m2 / (count - 1.0)));
  }
}

// Evaluation mode: the statistics are the running ones.
__global__ void bn_eval_stats_kernel(const void* rmean, bool rmb, const void* rvar, bool rvb, int C, float eps,
                                     float* mean, float* rstd) {
  CUDA_GRID_LOOP(c, C) {
    mean[c] = ldf(rmean, rmb, c);
    rstd[c] = float(1.0 / sqrt(double(ldf(rvar, rvb, c)) + double(eps)));
  }
}

// y = (x - mean) * (rstd * w) + b; w and b may be null (1 and 0).
__global__ void bn_apply_kernel(const void* x, bool xb, const void* w, bool wb, const void* b, bool bb,
                                const float* mean, const float* rstd, void* y, bool yb, int64_t total, int C,
                                int64_t HW) {
  CUDA_GRID_LOOP(i, total) {
    int c = int((i / HW) % C);
    float scale = rstd[c] * (w ? ldf(w, wb, c) : 1.f), shift = b ? ldf(b, bb, c) : 0.f;
    stf(y, yb, i, (ldf(x, xb, i) - mean[c]) * scale + shift);
  }
}

// Backward pass 1: per (channel, split) sums of dy and dy * xhat. grid (C, splits).
__global__ void bn_bwd_sums_kernel(const void* dy, bool dyb, const void* x, bool xb, const float* mean,
                                   const float* rstd, float2* part, int C, int64_t HW, int64_t count, int64_t chunk) {
  __shared__ float scratch[32];
  int c = blockIdx.x, s = blockIdx.y;
  int64_t t0 = int64_t(s) * chunk, t1 = min(count, t0 + chunk);
  float m = mean[c], r = rstd[c], sd = 0.f, sdx = 0.f;
  for (int64_t t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
    int64_t n = t / HW, q = t - n * HW, i = (n * C + c) * HW + q;
    float d = ldf(dy, dyb, i);
    sd += d;
    sdx += d * (ldf(x, xb, i) - m) * r;
  }
  sd = cuda::block_sum(sd, scratch);
  sdx = cuda::block_sum(sdx, scratch);
  if (threadIdx.x == 0) part[int64_t(c) * gridDim.y + s] = make_float2(sd, sdx);
}

// Pass 2: per-channel totals (kept in sums[c]); dw += sum dy*xhat, db += sum dy (either may be null).
__global__ void bn_bwd_finalize_kernel(const float2* part, int splits, int C, float2* sums, void* dw, bool dwb,
                                       void* db, bool dbb) {
  CUDA_GRID_LOOP(c, C) {
    float sd = 0.f, sdx = 0.f;
    for (int k = 0; k < splits; k++) {
      float2 v = part[c * splits + k];
      sd += v.x;
      sdx += v.y;
    }
    sums[c] = make_float2(sd, sdx);
    if (dw) stf(dw, dwb, c, ldf(dw, dwb, c) + sdx);
    if (db) stf(db, dbb, c, ldf(db, dbb, c) + sd);
  }
}

// Pass 3: dx = w*rstd * (dy - mean(dy) - xhat * mean(dy*xhat)) in training; w*rstd*dy in evaluation
// mode, where the statistics are constants (sums is then unused). w may be null (1).
__global__ void bn_bwd_dx_kernel(const void* dy, bool dyb, const void* x, bool xb, const void* w, bool wb,
                                 const float* mean, const float* rstd, const float2* sums, void* dx, bool dxb,
                                 int64_t total, int C, int64_t HW, float inv_count, bool training) {
  CUDA_GRID_LOOP(i, total) {
    int c = int((i / HW) % C);
    float r = rstd[c], k = r * (w ? ldf(w, wb, c) : 1.f);
    float g = ldf(dy, dyb, i);
    if (training) {
      float2 s = sums[c];
      float xh = (ldf(x, xb, i) - mean[c]) * r;
      g -= s.x * inv_count + xh * s.y * inv_count;
    }
    stf(dx, dxb, i, k * g);
  }
}

// Splits of the per-channel count so that C * splits blocks fill the device, each >= 4096 elements.
int bn_splits(int64_t C, int64_t count) {
  int64_t target = int64_t(cuda::sm_count()) * 4;
  int64_t s = (target + C - 1) / C;
  s = std::min(s, (count + 4095) / 4096);
  return int(std::max<int64_t>(1, std::min<int64_t>(s, 1024)));
}

// ---------------------------------------------------------------------------------------------
// Average pooling without padding: y[n,c,i,j] = mean of the k x k window at (i*s, j*s).
__global__ void avgpool_fwd_kernel(const void* x, bool xb, void* y, bool yb, int64_t total, int H, int W, int Ho,
                                   int Wo, int k, int s) {
  float inv = 1.f / float(k * k);
  CUDA_GRID_LOOP(i, total) {
    int64_t plane = i / (int64_t(Ho) * Wo);
    int q = int(i - plane * Ho * Wo), oh = q / Wo, ow = q - oh * Wo;
    int64_t base = plane * H * W;
    float acc = 0.f;
    for (int dy = 0; dy < k; dy++)
      for (int dx = 0; dx < k; dx++) acc += ldf(x, xb, base + int64_t(oh * s + dy) * W + (ow * s + dx));
    stf(y, yb, i, acc * inv);
  }
}

// dx[n,c,h,w] = sum over windows (oh, ow) covering (h, w) of dy[n,c,oh,ow] / k^2.
__global__ void avgpool_bwd_kernel(const void* dy, bool dyb, void* dx, bool dxb, int64_t total, int H, int W, int Ho,
                                   int Wo, int k, int s) {
  float inv = 1.f / float(k * k);
  CUDA_GRID_LOOP(i, total) {
    int64_t plane = i / (int64_t(H) * W);
    int q = int(i - plane * H * W), h = q / W, w = q - h * W;
    // oh*s <= h < oh*s + k  <=>  (h - k) / s < oh <= h / s
    int oh0 = h - k + 1 <= 0 ? 0 : (h - k + 1 + s - 1) / s, oh1 = min(Ho - 1, h / s);
    int ow0 = w - k + 1 <= 0 ? 0 : (w - k + 1 + s - 1) / s, ow1 = min(Wo - 1, w / s);
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; oh++)
      for (int ow = ow0; ow <= ow1; ow++) acc += ldf(dy, dyb, plane * Ho * Wo + int64_t(oh) * Wo + ow);
    stf(dx, dxb, i, acc * inv);
  }
}

void pool_geometry(const OpArgs& a, const TensorRef& big, int64_t& k, int64_t& s, int64_t& Ho, int64_t& Wo) {
  a.require(big.ndim == 4, "expected [N, C, H, W], got " + big.describe());
  k = a.i(0);
  s = a.i(1);
  a.require(k >= 1 && s >= 1, "kernel and stride must be >= 1");
  a.require(big.shape[2] >= k && big.shape[3] >= k, "kernel larger than the input " + big.describe());
  Ho = (big.shape[2] - k) / s + 1;
  Wo = (big.shape[3] - k) / s + 1;
  a.require(big.shape[2] * big.shape[3] < INT_MAX && k * k < INT_MAX, "image too large");
}

}  // namespace

void cuda_conv2d_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &w = a.input(1), &y = a.output(0);
  const TensorRef* bias = a.in.size() > 2 && a.in[2].defined() ? &a.in[2] : nullptr;
  cuda::require_float(a, x, "x");
  cuda::require_float(a, w, "weight");
  cuda::require_float(a, y, "y");
  ConvShape s = conv_shape(a, x, w);
  require_nchw(a, x, s.N, s.C, s.H, s.W, "x");
  require_nchw(a, w, s.O, s.C, s.kh, s.kw, "weight");
  require_nchw(a, y, s.N, s.O, s.Ho, s.Wo, "y");
  if (bias) require_vec(a, *bias, s.O, "bias");
  int64_t M = s.O, N = int64_t(s.N) * s.Ho * s.Wo, K = int64_t(s.C) * s.kh * s.kw;
  if (M * N == 0) return;
#if !defined(TSCLIP_CPU_EMU)
  convk::ConvTcParams tp;
  tp.s = s, tp.dir = convk::kConvFwd;
  tp.a = x.data, tp.b = w.data, tp.bias = bias ? bias->data : nullptr, tp.out = y.data;
  tp.a_bf16 = cuda::is_bf16(x), tp.b_bf16 = cuda::is_bf16(w), tp.bias_bf16 = bias && cuda::is_bf16(*bias);
  tp.out_bf16 = cuda::is_bf16(y);
  if (run_tc(a, tp)) return;
#endif
  convk::ConvFwd p{x.data, w.data, bias ? bias->data : nullptr, y.data, cuda::is_bf16(x), cuda::is_bf16(w),
                   bias && cuda::is_bf16(*bias), cuda::is_bf16(y), s};
  launch_simple(p, M, N, K, 1, std::max<int64_t>(K, 1));
}

void cuda_conv2d_bwd_data(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &w = a.input(1), &dx = a.output(0);
  cuda::require_float(a, dy, "dy");
  cuda::require_float(a, w, "weight");
  cuda::require_float(a, dx, "dx");
  ConvShape s = conv_shape(a, dx, w);
  require_nchw(a, dx, s.N, s.C, s.H, s.W, "dx");
  require_nchw(a, w, s.O, s.C, s.kh, s.kw, "weight");
  require_nchw(a, dy, s.N, s.O, s.Ho, s.Wo, "dy");
  int64_t M = s.C, N = int64_t(s.N) * s.H * s.W, K = int64_t(s.O) * s.kh * s.kw;
  if (M * N == 0) return;
#if !defined(TSCLIP_CPU_EMU)
  convk::ConvTcParams tp;
  tp.s = s, tp.dir = convk::kConvBwdData;
  tp.a = dy.data, tp.b = w.data, tp.out = dx.data;
  tp.a_bf16 = cuda::is_bf16(dy), tp.b_bf16 = cuda::is_bf16(w), tp.out_bf16 = cuda::is_bf16(dx);
  if (run_tc(a, tp)) return;
#endif
  convk::ConvBwdData p{dy.data, w.data, dx.data, cuda::is_bf16(dy), cuda::is_bf16(w), cuda::is_bf16(dx), s};
  launch_simple(p, M, N, K, 1, std::max<int64_t>(K, 1));
}

void cuda_conv2d_bwd_weight(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1), &dw = a.output(0);
  const TensorRef* db = a.out.size() > 1 && a.out[1].defined() ? &a.out[1] : nullptr;
  cuda::require_float(a, dy, "dy");
  cuda::require_float(a, x, "x");
  cuda::require_float(a, dw, "dw");
  ConvShape s = conv_shape(a, x, dw);
  require_nchw(a, x, s.N, s.C, s.H, s.W, "x");
  require_nchw(a, dw, s.O, s.C, s.kh, s.kw, "dw");
  require_nchw(a, dy, s.N, s.O, s.Ho, s.Wo, "dy");
  if (db) require_vec(a, *db, s.O, "dbias");
  int64_t M = s.O, N = int64_t(s.C) * s.kh * s.kw, K = int64_t(s.N) * s.Ho * s.Wo;
  cudaStream_t st = cuda::stream();
  if (M * N > 0 && K > 0) {
    bool done = false;
#if !defined(TSCLIP_CPU_EMU)
    convk::ConvTcParams tp;
    tp.s = s, tp.dir = convk::kConvBwdWeight;
    tp.a = dy.data, tp.b = x.data, tp.out = dw.data;
    tp.a_bf16 = cuda::is_bf16(dy), tp.b_bf16 = cuda::is_bf16(x), tp.out_bf16 = cuda::is_bf16(dw);
    done = run_tc(a, tp);
#endif
    if (!done) {
      int64_t kps = 0;
      const int splits = convk::conv_simple_splits(M, N, K, cuda::sm_count(), &kps);
      float* part = static_cast<float*>(cuda::alloc(size_t(splits * M * N) * sizeof(float)));
      try {
        convk::ConvBwdWeight p{dy.data, x.data, part, cuda::is_bf16(dy), cuda::is_bf16(x), s};
        launch_simple(p, M, N, K, splits, kps);
        cuda::launch(convk::conv_sum_splits_kernel, cuda::grid_for(M * N), cuda::kBlock, 0, st, part, M * N, splits,
            dw.data, cuda::is_bf16(dw));
      } catch (...) {
        cuda::free(part);
        throw;
      }
      cuda::free(part);  // stream-ordered reuse
    }
  }
  if (db && s.O > 0) {
    int64_t hw = int64_t(s.Ho) * s.Wo;
    cuda::launch(bias_grad_kernel, unsigned(std::min(s.O, 65535)), 256, 0, st, dy.data, cuda::is_bf16(dy), db->data,
        cuda::is_bf16(*db), s.N, s.O, hw);
  }
}

namespace {
const TensorRef* optional_in(const OpArgs& a, size_t i) {
  return a.in.size() > i && a.in[i].defined() ? &a.in[i] : nullptr;
}
const TensorRef* optional_out(const OpArgs& a, size_t i) {
  return a.out.size() > i && a.out[i].defined() ? &a.out[i] : nullptr;
}
void require_f32_vec(const OpArgs& a, const TensorRef& t, int64_t n, const char* what) {
  a.require(t.dtype == DType::F32 && t.contiguous() && t.numel() == n,
            std::string(what) + " must be contiguous float32 [" + std::to_string(n) + "], got " + t.describe());
}
}  // namespace

// Optional: weight, bias (1 and 0), running_mean/var (both or neither; needed in evaluation mode),
// save_mean, save_rstd.
void cuda_batchnorm_fwd(const OpArgs& a) {
  const TensorRef& x = a.input(0);
  const TensorRef *w = optional_in(a, 1), *b = optional_in(a, 2), *rm = optional_in(a, 3), *rv = optional_in(a, 4);
  const TensorRef& y = a.output(0);
  const TensorRef *sm = optional_out(a, 1), *sr = optional_out(a, 2);
  cuda::require_float(a, x, "x");
  cuda::require_float(a, y, "y");
  a.require(x.ndim == 4 && x.contiguous(), "x must be a contiguous [N, C, H, W] tensor, got " + x.describe());
  int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
  require_nchw(a, y, N, C, x.shape[2], x.shape[3], "y");
  if (w) require_vec(a, *w, C, "weight");
  if (b) require_vec(a, *b, C, "bias");
  bool have_running = rm || rv;
  if (have_running) {
    a.require(rm && rv, "running_mean and running_var go together");
    require_vec(a, *rm, C, "running_mean");
    require_vec(a, *rv, C, "running_var");
  }
  if (sm) require_f32_vec(a, *sm, C, "save_mean");
  if (sr) require_f32_vec(a, *sr, C, "save_rstd");
  bool training = a.i(0) != 0;
  float momentum = float(a.f(0)), eps = float(a.f(1));
  a.require(training || have_running, "evaluation mode needs running_mean and running_var");
  int64_t count = N * HW, total = x.numel();
  if (training) a.require(count > 1, "training needs more than 1 value per channel, got x " + x.describe());
  a.require(C < 65536 * 1024, "too many channels");
  if (C == 0) return;
  cudaStream_t st = cuda::stream();
  // Statistics go to save_mean/save_rstd, or to scratch when those are not wanted.
  int splits = training ? bn_splits(C, count) : 1;
  size_t part_bytes = training ? size_t(C * splits) * sizeof(Welford) : 0;
  size_t stat_bytes = (sm && sr) ? 0 : size_t(2 * C) * sizeof(float);
  auto* block = static_cast<uint8_t*>(cuda::alloc(part_bytes + stat_bytes));
  try {
    auto* part = reinterpret_cast<Welford*>(block);
    auto* stats = reinterpret_cast<float*>(block + part_bytes);
    float* mean = sm ? sm->ptr<float>() : stats;
    float* rstd = sr ? sr->ptr<float>() : stats + C;
    if (training) {
      int64_t chunk = (count + splits - 1) / splits;
      cuda::launch(bn_stats_kernel, dim3(unsigned(C), unsigned(splits)), 256, 0, st, x.data, cuda::is_bf16(x), part,
          int(C), HW, count, chunk);
      cuda::launch(bn_finalize_kernel, cuda::grid_for(C), cuda::kBlock, 0, st, part, splits, int(C), double(count), eps,
          momentum, mean, rstd, rm ? rm->data : nullptr, rm && cuda::is_bf16(*rm), rv ? rv->data : nullptr,
          rv && cuda::is_bf16(*rv));
    } else {
      cuda::launch(bn_eval_stats_kernel, cuda::grid_for(C), cuda::kBlock, 0, st, rm->data, cuda::is_bf16(*rm), rv->data,
          cuda::is_bf16(*rv), int(C), eps, mean, rstd);
    }
    if (total > 0) {
      cuda::launch(bn_apply_kernel, cuda::grid_for(total), cuda::kBlock, 0, st, x.data, cuda::is_bf16(x),
          w ? w->data : nullptr, w && cuda::is_bf16(*w), b ? b->data : nullptr, b && cuda::is_bf16(*b), mean, rstd,
          y.data, cuda::is_bf16(y), total, int(C), HW);
    }
  } catch (...) {
    cuda::free(block);
    throw;
  }
  cuda::free(block);  // stream-ordered reuse
}

// in: dy, x, weight (optional), save_mean, save_rstd. out: dx, dw, db (each optional; dw, db
// accumulated). ints: training (optional, default 1).
void cuda_batchnorm_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &x = a.input(1), &mean = a.input(3), &rstd = a.input(4);
  const TensorRef* w = optional_in(a, 2);
  const TensorRef *dx = optional_out(a, 0), *dw = optional_out(a, 1), *db = optional_out(a, 2);
  cuda::require_float(a, dy, "dy");
  cuda::require_float(a, x, "x");
  a.require(x.ndim == 4 && x.contiguous(), "x must be a contiguous [N, C, H, W] tensor, got " + x.describe());
  int64_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
  require_nchw(a, dy, N, C, x.shape[2], x.shape[3], "dy");
  if (dx) {
    cuda::require_float(a, *dx, "dx");
    require_nchw(a, *dx, N, C, x.shape[2], x.shape[3], "dx");
  }
  if (w) require_vec(a, *w, C, "weight");
  if (dw) require_vec(a, *dw, C, "dweight");
  if (db) require_vec(a, *db, C, "dbias");
  require_f32_vec(a, mean, C, "save_mean");
  require_f32_vec(a, rstd, C, "save_rstd");
  bool training = a.ints.empty() || a.ints[0] != 0;
  a.require(C < 65536 * 1024, "too many channels");
  int64_t count = N * HW, total = x.numel();
  if (C == 0) return;
  cudaStream_t st = cuda::stream();
  bool need_sums = dw || db || (dx && training);
  int splits = bn_splits(C, std::max<int64_t>(count, 1));
  auto* part = static_cast<float2*>(cuda::alloc(size_t(C * splits + C) * sizeof(float2)));
  float2* sums = part + C * splits;
  try {
    if (need_sums) {
      int64_t chunk = std::max<int64_t>(1, (count + splits - 1) / splits);
      cuda::launch(bn_bwd_sums_kernel, dim3(unsigned(C), unsigned(splits)), 256, 0, st, dy.data, cuda::is_bf16(dy),
          x.data, cuda::is_bf16(x), mean.ptr<float>(), rstd.ptr<float>(), part, int(C), std::max<int64_t>(HW, 1), count,
          chunk);
      cuda::launch(bn_bwd_finalize_kernel, cuda::grid_for(C), cuda::kBlock, 0, st, part, splits, int(C), sums,
          dw ? dw->data : nullptr, dw && cuda::is_bf16(*dw), db ? db->data : nullptr, db && cuda::is_bf16(*db));
    }
    if (dx && total > 0) {
      cuda::launch(bn_bwd_dx_kernel, cuda::grid_for(total), cuda::kBlock, 0, st, dy.data, cuda::is_bf16(dy), x.data,
          cuda::is_bf16(x), w ? w->data : nullptr, w && cuda::is_bf16(*w), mean.ptr<float>(), rstd.ptr<float>(), sums,
          dx->data, cuda::is_bf16(*dx), total, int(C), HW, float(1.0 / double(count)), training);
    }
  } catch (...) {
    cuda::free(part);
    throw;
  }
  cuda::free(part);
}

void cuda_avgpool2d_fwd(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  cuda::require_float(a, x, "x");
  cuda::require_float(a, y, "y");
  int64_t k, s, Ho, Wo;
  pool_geometry(a, x, k, s, Ho, Wo);
  require_nchw(a, x, x.shape[0], x.shape[1], x.shape[2], x.shape[3], "x");
  require_nchw(a, y, x.shape[0], x.shape[1], Ho, Wo, "y");
  int64_t total = y.numel();
  if (total == 0) return;
  cuda::launch(avgpool_fwd_kernel, cuda::grid_for(total), cuda::kBlock, 0, cuda::stream(), x.data, cuda::is_bf16(x),
      y.data, cuda::is_bf16(y), total, int(x.shape[2]), int(x.shape[3]), int(Ho), int(Wo), int(k), int(s));
}

void cuda_avgpool2d_bwd(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &dx = a.output(0);
  cuda::require_float(a, dy, "dy");
  cuda::require_float(a, dx, "dx");
  int64_t k, s, Ho, Wo;
  pool_geometry(a, dx, k, s, Ho, Wo);
  require_nchw(a, dx, dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3], "dx");
  require_nchw(a, dy, dx.shape[0], dx.shape[1], Ho, Wo, "dy");
  int64_t total = dx.numel();
  if (total == 0) return;
  cuda::launch(avgpool_bwd_kernel, cuda::grid_for(total), cuda::kBlock, 0, cuda::stream(), dy.data, cuda::is_bf16(dy),
      dx.data, cuda::is_bf16(dx), total, int(dx.shape[2]), int(dx.shape[3]), int(Ho), int(Wo), int(k), int(s));
}

}  // namespace tsclip
