// CUDA image preprocessing: PIL's antialiased BICUBIC resize, bit for bit, and the CLIP
// normalisation to planar float.
//
// resample_bicubic follows Pillow's ImagingResample (libImaging/Resample.c) for 8-bit images:
// filter a = -0.5 with support 2 * max(scale, 1); per output pixel, weights over the source window
// are computed in double on the host, normalised to sum 1, and turned into fixed point with
// PRECISION_BITS = 22 (rounded half away from zero). The device accumulates uint8 * weight in int32
// from 1 << 21 and clips (sum >> 22) to [0, 255]. Horizontal pass first, over only the source rows
// the vertical pass reads, then the vertical pass; a pass is skipped exactly when PIL skips it.
// Channels are independent (PIL packs RGB in 4 bytes; the arithmetic per channel is the same).
#include <climits>
#include <cmath>
#include <vector>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"
#include "pil_resample.h"

namespace tsclip {
namespace {

constexpr int kPrecisionBits = kPilPrecisionBits;

using Axis = PilAxis;

__device__ __forceinline__ uint8_t clip8(int v) {
  int q = v >> kPrecisionBits;  // arithmetic shift: floor, as PIL's lookup index
  return uint8_t(q < 0 ? 0 : (q > 255 ? 255 : q));
}

// A uint8 [H, W, C] image with any element strides (a crop or channel view of a larger one).
struct Img {
  const uint8_t* p;
  int64_t sy, sx, sc;
  __device__ __forceinline__ int at(int64_t y, int64_t x, int64_t c) const { return p[y * sy + x * sx + c * sc]; }
};

// dst[y, xx, c] (contiguous [rows, out_w, C]) from source rows y + offset.
__global__ void resample_h_kernel(Img src, int C, uint8_t* dst, int64_t rows, int out_w, int offset,
                                  const int32_t* bounds, const int32_t* kk, int ksize) {
  int64_t n = rows * out_w * C;
  CUDA_GRID_LOOP(i, n) {
    int c = int(i % C);
    int64_t p = i / C;
    int xx = int(p % out_w);
    int64_t y = p / out_w + offset;
    int xmin = bounds[2 * xx], xmax = bounds[2 * xx + 1];
    const int32_t* k = kk + int64_t(xx) * ksize;
    int ss = 1 << (kPrecisionBits - 1);
    for (int x = 0; x < xmax; x++) ss += src.at(y, xmin + x, c) * k[x];
    dst[i] = clip8(ss);
  }
}

// dst[yy, xx, c] (contiguous [out_h, width, C]) from source rows bounds[2yy] + 0 .. count-1.
__global__ void resample_v_kernel(Img src, int width, int C, uint8_t* dst, int out_h, const int32_t* bounds,
                                  const int32_t* kk, int ksize) {
  int64_t row_len = int64_t(width) * C;
  int64_t n = int64_t(out_h) * row_len;
  CUDA_GRID_LOOP(i, n) {
    int64_t yy = i / row_len, e = i - yy * row_len;
    int64_t xx = e / C, c = e - xx * C;
    int ymin = bounds[2 * yy], ymax = bounds[2 * yy + 1];
    const int32_t* k = kk + yy * ksize;
    int ss = 1 << (kPrecisionBits - 1);
    for (int y = 0; y < ymax; y++) ss += src.at(ymin + y, xx, c) * k[y];
    dst[i] = clip8(ss);
  }
}

// Same size, whole image: a copy (PIL's ImagingCopy), from any strides.
__global__ void copy_image_kernel(Img src, uint8_t* dst, int64_t W, int64_t C, int64_t n) {
  CUDA_GRID_LOOP(i, n) {
    int64_t c = i % C, p = i / C, x = p % W, y = p / W;
    dst[i] = uint8_t(src.at(y, x, c));
  }
}

// (u / 255 - mean) / std in float32, as the CPU kernel (torchvision's ToTensor then Normalize).
__global__ void image_normalize_kernel(Img src, int64_t W, void* dst, bool db, int64_t hw, float3 mean, float3 sd) {
  int64_t n = 3 * hw;
  CUDA_GRID_LOOP(i, n) {
    int c = int(i / hw);
    int64_t p = i - c * hw, y = p / W, x = p - y * W;
    float m = c == 0 ? mean.x : (c == 1 ? mean.y : mean.z);
    float s = c == 0 ? sd.x : (c == 1 ? sd.y : sd.z);
    cuda::stf(dst, db, i, (float(src.at(y, x, c)) / 255.f - m) / s);
  }
}

Img image_of(const TensorRef& t) {
  return Img{static_cast<const uint8_t*>(t.data), t.strides[0], t.strides[1], t.strides[2]};
}

}  // namespace

void cuda_resample_bicubic(const OpArgs& a) {
  const TensorRef &src = a.input(0), &dst = a.output(0);
  a.require(src.dtype == DType::U8 && src.ndim == 3, "src must be a uint8 [H, W, C] image, got " + src.describe());
  a.require(dst.dtype == DType::U8 && dst.ndim == 3 && dst.contiguous() && dst.shape[2] == src.shape[2],
            "dst must be a contiguous uint8 [H2, W2, C] image with the source's channels, got " + dst.describe());
  int64_t H = src.shape[0], W = src.shape[1], C = src.shape[2], H2 = dst.shape[0], W2 = dst.shape[1];
  a.require(H < INT_MAX && W < INT_MAX && H2 < INT_MAX && W2 < INT_MAX && C < INT_MAX, "image too large");
  a.require(H >= 1 && W >= 1 && H2 >= 1 && W2 >= 1,
            "images must not be empty: " + src.describe() + " -> " + dst.describe());
  float box[4] = {float(a.f(0)), float(a.f(1)), float(a.f(2)), float(a.f(3))};
  a.require(std::isfinite(box[0]) && std::isfinite(box[1]) && std::isfinite(box[2]) && std::isfinite(box[3]),
            "box must be finite");
  a.require(box[0] >= 0 && box[1] >= 0, "box offset can't be negative");
  a.require(box[2] <= float(W) && box[3] <= float(H), "box can't exceed original image size");
  a.require(box[2] - box[0] >= 0 && box[3] - box[1] >= 0, "box can't be empty");
  if (C == 0) return;
  const Img in = image_of(src);

  int xsize = int(W2), ysize = int(H2);
  bool need_h = xsize != W || box[0] != 0.f || box[2] != float(xsize);
  bool need_v = ysize != H || box[1] != 0.f || box[3] != float(ysize);
  cudaStream_t st = cuda::stream();
  if (!need_h && !need_v) {  // same size, whole image: PIL copies
    if (src.contiguous()) {
      CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, size_t(src.numel()), cudaMemcpyDeviceToDevice, st));
    } else {
      int64_t n = src.numel();
      cuda::launch(copy_image_kernel, cuda::grid_for(n), cuda::kBlock, 0, st, in, static_cast<uint8_t*>(dst.data), W,
                   C, n);
    }
    return;
  }

  Axis v = pil_precompute(int(H), box[1], box[3], ysize);
  Axis h;
  int ybox_first = v.bounds[0];
  int ybox_last = v.bounds[size_t(ysize) * 2 - 2] + v.bounds[size_t(ysize) * 2 - 1];
  int tmp_h = ybox_last - ybox_first;
  if (need_h) {
    h = pil_precompute(int(W), box[0], box[2], xsize);
    for (int i = 0; i < ysize; i++) v.bounds[size_t(i) * 2] -= ybox_first;
    a.require(tmp_h >= 0 && (need_v || tmp_h == ysize), "internal: unexpected intermediate height");
  }

  // One device block: [h.bounds | h.kk | v.bounds | v.kk] as int32, then the intermediate image.
  std::vector<int32_t> table;
  table.insert(table.end(), h.bounds.begin(), h.bounds.end());
  table.insert(table.end(), h.kk.begin(), h.kk.end());
  table.insert(table.end(), v.bounds.begin(), v.bounds.end());
  table.insert(table.end(), v.kk.begin(), v.kk.end());
  size_t table_bytes = table.size() * sizeof(int32_t);
  size_t tmp_bytes = need_h && need_v ? size_t(tmp_h) * size_t(xsize) * size_t(C) : 0;
  auto* block = static_cast<uint8_t*>(cuda::alloc(table_bytes + tmp_bytes));
  try {
    // Pageable source: the call returns once the bytes are staged, so `table` may go out of scope.
    CUDA_CHECK(cudaMemcpyAsync(block, table.data(), table_bytes, cudaMemcpyHostToDevice, st));
    auto* t = reinterpret_cast<const int32_t*>(block);
    const int32_t* hb = t;
    const int32_t* hk = hb + h.bounds.size();
    const int32_t* vb = hk + h.kk.size();
    const int32_t* vk = vb + v.bounds.size();
    uint8_t* tmp = block + table_bytes;
    auto* d = static_cast<uint8_t*>(dst.data);
    if (need_h) {
      uint8_t* out = need_v ? tmp : d;
      int64_t n = int64_t(tmp_h) * xsize * C;
      if (n > 0)
        cuda::launch(resample_h_kernel, cuda::grid_for(n), cuda::kBlock, 0, st, in, int(C), out, int64_t(tmp_h), xsize,
                     ybox_first, hb, hk, h.ksize);
    }
    if (need_v) {
      // Without a horizontal pass the source already has width xsize.
      const Img vin = need_h ? Img{tmp, int64_t(xsize) * C, C, 1} : in;
      int64_t n = int64_t(ysize) * xsize * C;
      cuda::launch(resample_v_kernel, cuda::grid_for(n), cuda::kBlock, 0, st, vin, xsize, int(C), d, ysize, vb, vk,
                   v.ksize);
    }
  } catch (...) {
    cuda::free(block);
    throw;
  }
  cuda::free(block);  // stream-ordered reuse
}

void cuda_image_normalize(const OpArgs& a) {
  const TensorRef &src = a.input(0), &dst = a.output(0);
  a.require(src.dtype == DType::U8 && src.ndim == 3 && src.shape[2] == 3,
            "src must be a uint8 [H, W, 3] image, got " + src.describe());
  int64_t H = src.shape[0], W = src.shape[1];
  cuda::require_float(a, dst, "dst");
  a.require(dst.ndim == 3 && dst.shape[0] == 3 && dst.shape[1] == H && dst.shape[2] == W && dst.contiguous(),
            "dst must be contiguous [3," + std::to_string(H) + "," + std::to_string(W) + "], got " + dst.describe());
  float3 mean = make_float3(float(a.f(0)), float(a.f(1)), float(a.f(2)));
  float3 sd = make_float3(float(a.f(3)), float(a.f(4)), float(a.f(5)));
  a.require(sd.x != 0.f && sd.y != 0.f && sd.z != 0.f, "std must not be zero");
  int64_t hw = H * W;
  if (hw == 0) return;
  cuda::launch(image_normalize_kernel, cuda::grid_for(3 * hw), cuda::kBlock, 0, cuda::stream(), image_of(src), W,
               dst.data, cuda::is_bf16(dst), hw, mean, sd);
}

}  // namespace tsclip
