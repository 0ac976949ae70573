// CPU image preprocessing: PIL's antialiased BICUBIC resize, bit for bit, and the CLIP
// normalisation of a uint8 HWC image into planar float.
//
// resample_bicubic reproduces Pillow's ImagingResample for 8-bit images (libImaging/Resample.c):
// a separable filter (a = -0.5) whose support grows with the downscale factor, weights computed in
// double per output pixel, normalised to sum 1 and rounded (half away from zero) to fixed point with
// PRECISION_BITS = 22; each pass accumulates uint8 * weight in int32 starting from 1 << 21 and clips
// (sum >> 22) to [0, 255]. The horizontal pass runs first, over only the source rows the vertical
// pass reads; a pass is skipped exactly when PIL skips it. Channels are independent, so any channel
// count works (PIL stores RGB in 4 bytes, but the per-channel arithmetic is the same).
// On x86-64 both passes use SSE2 (exact integer sums in another order, so the same bytes); the
// portable loops serve other targets and channel counts above 4.
// This file must be compiled without FMA contraction (plain x86-64 flags) so that the double
// weights round as PIL's do.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../cpu/strided.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"
#include "pil_resample.h"

namespace tsclip {
namespace {

constexpr int kPrecisionBits = kPilPrecisionBits;

using Axis = PilAxis;

inline uint8_t clip8(int32_t v) {
  const int32_t q = v >> kPrecisionBits;  // arithmetic shift (floor), as PIL's lookup index
  return uint8_t(q < 0 ? 0 : (q > 255 ? 255 : q));
}

constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

// One output row of the horizontal pass; C fixed at compile time for the common channel counts.
template <int C>
void horizontal_row(const uint8_t* in, uint8_t* out, const Axis& h, int out_w) {
  for (int xx = 0; xx < out_w; xx++) {
    const int32_t* k = &h.kk[size_t(xx) * size_t(h.ksize)];
    const uint8_t* p = in + int64_t(h.first(xx)) * C;
    const int n = h.count(xx);
    int32_t acc[C];
    for (int c = 0; c < C; c++) acc[c] = kHalf;
    for (int x = 0; x < n; x++) {
      const int32_t kx = k[x];
      for (int c = 0; c < C; c++) acc[c] += int32_t(p[x * C + c]) * kx;
    }
    for (int c = 0; c < C; c++) out[int64_t(xx) * C + c] = clip8(acc[c]);
  }
}

void horizontal_row_any(const uint8_t* in, uint8_t* out, const Axis& h, int out_w, int64_t C) {
  for (int xx = 0; xx < out_w; xx++) {
    const int32_t* k = &h.kk[size_t(xx) * size_t(h.ksize)];
    const uint8_t* p = in + int64_t(h.first(xx)) * C;
    const int n = h.count(xx);
    for (int64_t c = 0; c < C; c++) {
      int32_t acc = kHalf;
      for (int x = 0; x < n; x++) acc += int32_t(p[x * C + c]) * k[x];
      out[xx * C + c] = clip8(acc);
    }
  }
}

void horizontal_row_dispatch(const uint8_t* in, uint8_t* out, const Axis& h, int out_w, int64_t C) {
  switch (C) {
    case 1: return horizontal_row<1>(in, out, h, out_w);
    case 2: return horizontal_row<2>(in, out, h, out_w);
    case 3: return horizontal_row<3>(in, out, h, out_w);
    case 4: return horizontal_row<4>(in, out, h, out_w);
    default: return horizontal_row_any(in, out, h, out_w, C);
  }
}

#if defined(__SSE2__) && !defined(TSCLIP_IMAGE_NO_SIMD)
#define TSCLIP_IMAGE_SSE2 1
// SSE2 passes. pmaddwd multiplies int16 pairs and adds each pair into an int32 lane; the 22-bit
// weights do not fit int16, so each is split as k = hi * 2048 + lo with lo in [0, 2048) and the
// two sums are recombined exactly. Integer sums do not depend on their order (nothing overflows),
// so the results are PIL's bit for bit.
constexpr int kSplitBits = 11;

inline int16_t weight_lo(int32_t k) { return int16_t(k & ((1 << kSplitBits) - 1)); }
inline int16_t weight_hi(int32_t k) { return int16_t(k >> kSplitBits); }  // arithmetic shift

// The split weights of one axis, each output's padded with zeros to a multiple of 8.
struct SplitWeights {
  int taps8 = 0;
  std::vector<int16_t> lo, hi;
};

// Whether every weight's high part fits int16 (always for bicubic, whose weights stay near 1;
// checked so that the split can never be wrong).
bool weights_split(const Axis& ax) {
  for (int32_t k : ax.kk)
    if ((k >> kSplitBits) > INT16_MAX || (k >> kSplitBits) < INT16_MIN) return false;
  return true;
}

SplitWeights split_weights(const Axis& ax, int out_size) {
  SplitWeights w;
  w.taps8 = (ax.ksize + 7) / 8 * 8;
  w.lo.assign(size_t(out_size) * size_t(w.taps8), 0);
  w.hi.assign(size_t(out_size) * size_t(w.taps8), 0);
  for (int i = 0; i < out_size; i++)
    for (int x = 0; x < ax.ksize; x++) {
      const int32_t k = ax.kk[size_t(i) * size_t(ax.ksize) + size_t(x)];
      w.lo[size_t(i) * size_t(w.taps8) + size_t(x)] = weight_lo(k);
      w.hi[size_t(i) * size_t(w.taps8) + size_t(x)] = weight_hi(k);
    }
  return w;
}

// Sum of one output's lanes, with its two weight halves recombined: (hi << 11) + lo per lane.
inline __m128i recombine(__m128i lo, __m128i hi) { return _mm_add_epi32(_mm_slli_epi32(hi, kSplitBits), lo); }

// [sum(a), sum(b), sum(c), sum(d)] of four vectors of int32 lanes.
inline __m128i sum4(__m128i a, __m128i b, __m128i c, __m128i d) {
  const __m128i ab = _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const __m128i cd = _mm_add_epi32(_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
  return _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd));
}

// The lanes of one output channel: its taps against the plane, 8 at a time.
inline __m128i dot_taps(const int16_t* p, const int16_t* lo, const int16_t* hi, int taps8) {
  __m128i al = _mm_setzero_si128(), ah = _mm_setzero_si128();
  for (int j = 0; j < taps8; j += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j));
    al = _mm_add_epi32(al, _mm_madd_epi16(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + j))));
    ah = _mm_add_epi32(ah, _mm_madd_epi16(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + j))));
  }
  return recombine(al, ah);
}

// One row of the horizontal pass. The row is split into int16 channel planes of stride
// in_w + taps8 whose tails the caller has zeroed, so the padded taps read zeros (or pixels with
// zero weight); each output channel is a dot product 8 taps at a time, and four outputs are
// reduced and clipped together.
void horizontal_row_sse2(const uint8_t* in, uint8_t* out, const Axis& h, const SplitWeights& w, int in_w, int out_w,
                         int C, int16_t* planes) {
  const int64_t stride = int64_t(in_w) + w.taps8;
  const int t8 = w.taps8;
  for (int c = 0; c < C; c++) {
    int16_t* pl = planes + c * stride;
    for (int x = 0; x < in_w; x++) pl[x] = in[int64_t(x) * C + c];
  }
  const __m128i half = _mm_set1_epi32(kHalf);
  int xx = 0;
  for (; xx + 4 <= out_w; xx += 4) {
    const int16_t* lo = &w.lo[size_t(xx) * size_t(t8)];
    const int16_t* hi = &w.hi[size_t(xx) * size_t(t8)];
    const int64_t f0 = h.first(xx), f1 = h.first(xx + 1);
    const int64_t f2 = h.first(xx + 2), f3 = h.first(xx + 3);
    for (int c = 0; c < C; c++) {
      const int16_t* pl = planes + c * stride;
      const __m128i s = sum4(dot_taps(pl + f0, lo, hi, t8), dot_taps(pl + f1, lo + t8, hi + t8, t8),
                             dot_taps(pl + f2, lo + 2 * t8, hi + 2 * t8, t8), dot_taps(pl + f3, lo + 3 * t8, hi + 3 * t8, t8));
      alignas(16) int32_t q[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(q), _mm_srai_epi32(_mm_add_epi32(s, half), kPrecisionBits));
      for (int j = 0; j < 4; j++) out[int64_t(xx + j) * C + c] = uint8_t(q[j] < 0 ? 0 : (q[j] > 255 ? 255 : q[j]));
    }
  }
  for (; xx < out_w; xx++) {
    const int16_t* lo = &w.lo[size_t(xx) * size_t(t8)];
    const int16_t* hi = &w.hi[size_t(xx) * size_t(t8)];
    for (int c = 0; c < C; c++) {
      const __m128i s = dot_taps(planes + c * stride + h.first(xx), lo, hi, t8);
      const __m128i z = _mm_setzero_si128();
      out[int64_t(xx) * C + c] = clip8(_mm_cvtsi128_si32(sum4(s, z, z, z)) + kHalf);
    }
  }
}

// Weights of one axis as broadcast pairs for the pixel-interleaved horizontal pass: for output i
// and tap pair q, four int32 lanes each holding the int16 pair (k[2q], k[2q+1]), low and high parts.
struct PairWeights {
  int pairs = 0;  // per output: ceil(ksize / 2)
  std::vector<int32_t> lo, hi;  // [out, pairs, 4]
};

PairWeights pair_weights(const Axis& ax, int out_size) {
  PairWeights w;
  w.pairs = (ax.ksize + 1) / 2;
  w.lo.assign(size_t(out_size) * size_t(w.pairs) * 4, 0);
  w.hi.assign(size_t(out_size) * size_t(w.pairs) * 4, 0);
  for (int i = 0; i < out_size; i++) {
    const int32_t* k = &ax.kk[size_t(i) * size_t(ax.ksize)];
    for (int q = 0; q < w.pairs; q++) {
      const int32_t k0 = k[2 * q], k1 = 2 * q + 1 < ax.ksize ? k[2 * q + 1] : 0;
      const int32_t l = int32_t(uint32_t(uint16_t(weight_lo(k0))) | (uint32_t(uint16_t(weight_lo(k1))) << 16));
      const int32_t h = int32_t(uint32_t(uint16_t(weight_hi(k0))) | (uint32_t(uint16_t(weight_hi(k1))) << 16));
      for (int j = 0; j < 4; j++) {
        w.lo[(size_t(i) * size_t(w.pairs) + size_t(q)) * 4 + size_t(j)] = l;
        w.hi[(size_t(i) * size_t(w.pairs) + size_t(q)) * 4 + size_t(j)] = h;
      }
    }
  }
  return w;
}

// One row of the horizontal pass for 3- or 4-channel pixels, which fit one 4-lane vector: two
// taps' pixels are interleaved byte by byte so that one pmaddwd applies both weights to every
// channel, and no lanes need summing at the end. `row` is a copy of the input row with at least
// 8 bytes of slack (a 3-channel pixel is read as 4 bytes; the odd tap of a pair may read one
// pixel past the window, with weight zero).
template <int C>
void horizontal_row_sse2_px(const uint8_t* row, uint8_t* out, const Axis& h, const PairWeights& w, int out_w) {
  const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(kHalf);
  for (int xx = 0; xx < out_w; xx++) {
    const uint8_t* p = row + int64_t(h.first(xx)) * C;
    const int pairs = (h.count(xx) + 1) / 2;
    const int32_t* lo = &w.lo[size_t(xx) * size_t(w.pairs) * 4];
    const int32_t* hi = &w.hi[size_t(xx) * size_t(w.pairs) * 4];
    __m128i al = zero, ah = zero;
    for (int q = 0; q < pairs; q++) {
      int32_t a, b;
      std::memcpy(&a, p + (2 * q) * C, 4);
      std::memcpy(&b, p + (2 * q + 1) * C, 4);
      const __m128i ab = _mm_unpacklo_epi8(_mm_unpacklo_epi8(_mm_cvtsi32_si128(a), _mm_cvtsi32_si128(b)), zero);
      al = _mm_add_epi32(al, _mm_madd_epi16(ab, _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + 4 * q))));
      ah = _mm_add_epi32(ah, _mm_madd_epi16(ab, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + 4 * q))));
    }
    const __m128i v = _mm_srai_epi32(_mm_add_epi32(recombine(al, ah), half), kPrecisionBits);
    const int32_t px = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(v, zero), zero));
    std::memcpy(out + int64_t(xx) * C, &px, C);
  }
}

// Output rows [y0, y1) of the vertical pass: taps are taken in pairs, the two source rows'
// bytes interleaved so that one pmaddwd applies both weights; 16 bytes per step, 16 int32 lanes
// kept in registers across all taps.
void vertical_rows_sse2(const uint8_t* vin, int64_t vin_row, int vin_first, uint8_t* d, int64_t out_row, const Axis& v,
                        int64_t y0, int64_t y1) {
  std::vector<int32_t> wl(size_t(v.ksize / 2 + 1)), wh(size_t(v.ksize / 2 + 1));  // int16 weight pairs
  const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(kHalf);
  for (int64_t yy = y0; yy < y1; yy++) {
    const int32_t* k = &v.kk[size_t(yy) * size_t(v.ksize)];
    const int n = v.count(yy), pairs = (n + 1) / 2;
    const uint8_t* rows = vin + int64_t(v.first(yy) - vin_first) * vin_row;
    for (int q = 0; q < pairs; q++) {
      const int32_t k0 = k[2 * q], k1 = 2 * q + 1 < n ? k[2 * q + 1] : 0;
      wl[size_t(q)] = int32_t(uint32_t(uint16_t(weight_lo(k0))) | (uint32_t(uint16_t(weight_lo(k1))) << 16));
      wh[size_t(q)] = int32_t(uint32_t(uint16_t(weight_hi(k0))) | (uint32_t(uint16_t(weight_hi(k1))) << 16));
    }
    uint8_t* o = d + yy * out_row;
    int64_t e = 0;
    for (; e + 16 <= out_row; e += 16) {
      __m128i l0 = zero, l1 = zero, l2 = zero, l3 = zero, h0 = zero, h1 = zero, h2 = zero, h3 = zero;
      for (int q = 0; q < pairs; q++) {
        const uint8_t* r = rows + int64_t(2 * q) * vin_row + e;
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r));
        const __m128i b = 2 * q + 1 < n ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + vin_row)) : zero;
        const __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
        const __m128i x0 = _mm_unpacklo_epi8(ab0, zero), x1 = _mm_unpackhi_epi8(ab0, zero);
        const __m128i x2 = _mm_unpacklo_epi8(ab1, zero), x3 = _mm_unpackhi_epi8(ab1, zero);
        const __m128i kl = _mm_set1_epi32(wl[size_t(q)]), kh = _mm_set1_epi32(wh[size_t(q)]);
        l0 = _mm_add_epi32(l0, _mm_madd_epi16(x0, kl));
        l1 = _mm_add_epi32(l1, _mm_madd_epi16(x1, kl));
        l2 = _mm_add_epi32(l2, _mm_madd_epi16(x2, kl));
        l3 = _mm_add_epi32(l3, _mm_madd_epi16(x3, kl));
        h0 = _mm_add_epi32(h0, _mm_madd_epi16(x0, kh));
        h1 = _mm_add_epi32(h1, _mm_madd_epi16(x1, kh));
        h2 = _mm_add_epi32(h2, _mm_madd_epi16(x2, kh));
        h3 = _mm_add_epi32(h3, _mm_madd_epi16(x3, kh));
      }
      // (hi << 11) + lo + half, then >> 22; the two saturating packs clip to [0, 255] as clip8.
      auto fin = [&](__m128i l, __m128i h) {
        return _mm_srai_epi32(_mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(h, kSplitBits), l), half), kPrecisionBits);
      };
      const __m128i p01 = _mm_packs_epi32(fin(l0, h0), fin(l1, h1));
      const __m128i p23 = _mm_packs_epi32(fin(l2, h2), fin(l3, h3));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + e), _mm_packus_epi16(p01, p23));
    }
    for (; e < out_row; e++) {
      int32_t acc = kHalf;
      for (int t = 0; t < n; t++) acc += int32_t(rows[int64_t(t) * vin_row + e]) * k[t];
      o[e] = clip8(acc);
    }
  }
}
#endif

// Grain for row loops: about 64K touched bytes per task.
int64_t rows_grain(int64_t row_bytes, int64_t taps) {
  return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, row_bytes * std::max<int64_t>(1, taps)));
}

}  // namespace

void cpu_resample_bicubic(const OpArgs& a) {
  const TensorRef &src = a.input(0), &dst = a.output(0);
  a.require(src.dtype == DType::U8 && src.ndim == 3, "src must be a uint8 [H, W, C] image, got " + src.describe());
  const int64_t H = src.shape[0], W = src.shape[1], C = src.shape[2];
  a.require(C == 1 || (src.strides[2] == 1 && src.strides[1] == C),
            "src pixels must be packed (channel stride 1, pixel stride C); got " + src.describe() +
                " with strides [" + std::to_string(src.strides[0]) + "," + std::to_string(src.strides[1]) + "," +
                std::to_string(src.strides[2]) + "]");
  a.require(dst.dtype == DType::U8 && dst.ndim == 3 && dst.contiguous() && dst.shape[2] == C,
            "dst must be a contiguous uint8 [H2, W2, C] image with the source's channels, got " + dst.describe());
  const int64_t H2 = dst.shape[0], W2 = dst.shape[1];
  a.require(H < INT_MAX && W < INT_MAX && H2 < INT_MAX && W2 < INT_MAX && C < INT_MAX, "image too large");
  a.require(H >= 1 && W >= 1 && H2 >= 1 && W2 >= 1,
            "images must not be empty: " + src.describe() + " -> " + dst.describe());
  const float box[4] = {float(a.f(0)), float(a.f(1)), float(a.f(2)), float(a.f(3))};
  a.require(std::isfinite(box[0]) && std::isfinite(box[1]) && std::isfinite(box[2]) && std::isfinite(box[3]),
            "box must be finite");
  a.require(box[0] >= 0 && box[1] >= 0, "box offset can't be negative");
  a.require(box[2] <= float(W) && box[3] <= float(H), "box can't exceed original image size");
  a.require(box[2] - box[0] >= 0 && box[3] - box[1] >= 0, "box can't be empty");
  if (C == 0) return;

  // Pixel stride of a one-channel image may be anything; treat it as packed when it is.
  const int64_t pix = C == 1 ? src.strides[1] : C;
  const int64_t row_stride = src.strides[0];
  const auto* s = static_cast<const uint8_t*>(src.data);
  auto* d = static_cast<uint8_t*>(dst.data);
  const int xsize = int(W2), ysize = int(H2);
  const int64_t out_row = int64_t(xsize) * C;

  const bool need_h = xsize != W || box[0] != 0.f || box[2] != float(xsize);
  const bool need_v = ysize != H || box[1] != 0.f || box[3] != float(ysize);

  // A one-channel source with a pixel stride other than 1 is packed first (rare: a channel slice).
  std::vector<uint8_t> packed;
  int64_t in_row = row_stride;
  if (C == 1 && pix != 1) {
    packed.resize(size_t(H * W));
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) packed[size_t(y * W + x)] = s[y * row_stride + x * pix];
    s = packed.data();
    in_row = W;
  }

  if (!need_h && !need_v) {  // same size, whole image: PIL copies
    parallel_for(H, rows_grain(W * C, 1), [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; y++) std::memcpy(d + y * out_row, s + y * in_row, size_t(W * C));
    });
    return;
  }

  Axis v = pil_precompute(int(H), box[1], box[3], ysize);
  const int ybox_first = v.first(0);
  const int ybox_last = v.first(ysize - 1) + v.count(ysize - 1);

  // Horizontal pass into the rows [ybox_first, ybox_last) the vertical pass needs (or straight into
  // dst when there is no vertical pass, where those rows are exactly the image's).
  std::vector<uint8_t> tmp;
  const uint8_t* vin = s;  // the vertical pass's input and its row stride
  int64_t vin_row = in_row;
  int vin_first = 0;  // the source row that vin's first row holds
  if (need_h) {
    const Axis h = pil_precompute(int(W), box[0], box[2], xsize);
    const int64_t tmp_h = int64_t(ybox_last) - ybox_first;
    a.require(tmp_h >= 0 && (need_v || tmp_h == ysize), "internal: unexpected intermediate height");
    uint8_t* hout = d;
    if (need_v) {
      tmp.resize(size_t(tmp_h * out_row));
      hout = tmp.data();
    }
    const uint8_t* hin = s + int64_t(ybox_first) * in_row;
#ifdef TSCLIP_IMAGE_SSE2
    if ((C == 3 || C == 4) && weights_split(h)) {
      const PairWeights pw = pair_weights(h, xsize);
      parallel_for(tmp_h, rows_grain(out_row, h.ksize), [&](int64_t r0, int64_t r1) {
        std::vector<uint8_t> row(size_t((W + 2) * C + 8), 0);  // the slack stays zero
        for (int64_t r = r0; r < r1; r++) {
          std::memcpy(row.data(), hin + r * in_row, size_t(W * C));
          if (C == 3) horizontal_row_sse2_px<3>(row.data(), hout + r * out_row, h, pw, xsize);
          else horizontal_row_sse2_px<4>(row.data(), hout + r * out_row, h, pw, xsize);
        }
      });
    } else if (C <= 2 && weights_split(h)) {
      const SplitWeights hw = split_weights(h, xsize);
      parallel_for(tmp_h, rows_grain(out_row, h.ksize), [&](int64_t r0, int64_t r1) {
        std::vector<int16_t> planes(size_t(C) * size_t(W + hw.taps8), 0);  // tails stay zero
        for (int64_t r = r0; r < r1; r++)
          horizontal_row_sse2(hin + r * in_row, hout + r * out_row, h, hw, int(W), xsize, int(C), planes.data());
      });
    } else
#endif
    {
      parallel_for(tmp_h, rows_grain(out_row, h.ksize), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++) horizontal_row_dispatch(hin + r * in_row, hout + r * out_row, h, xsize, C);
      });
    }
    if (!need_v) return;
    vin = tmp.data();
    vin_row = out_row;
    vin_first = ybox_first;
  }

  // Vertical pass: each output row is a weighted sum of whole input rows.
#ifdef TSCLIP_IMAGE_SSE2
  if (weights_split(v)) {
    parallel_for(ysize, rows_grain(out_row, v.ksize), [&](int64_t y0, int64_t y1) {
      vertical_rows_sse2(vin, vin_row, vin_first, d, out_row, v, y0, y1);
    });
    return;
  }
#endif
  // Portable version: accumulated row by row so that the inner loop runs over contiguous bytes.
  parallel_for(ysize, rows_grain(out_row, v.ksize), [&](int64_t y0, int64_t y1) {
    std::vector<int32_t> acc(static_cast<size_t>(out_row));
    for (int64_t yy = y0; yy < y1; yy++) {
      const int32_t* k = &v.kk[size_t(yy) * size_t(v.ksize)];
      const int first = v.first(yy) - vin_first, n = v.count(yy);
      std::fill(acc.begin(), acc.end(), kHalf);
      int32_t* ac = acc.data();
      for (int y = 0; y < n; y++) {
        const uint8_t* row = vin + int64_t(first + y) * vin_row;
        const int32_t ky = k[y];
        for (int64_t e = 0; e < out_row; e++) ac[e] += int32_t(row[e]) * ky;
      }
      uint8_t* o = d + yy * out_row;
      for (int64_t e = 0; e < out_row; e++) o[e] = clip8(ac[e]);
    }
  });
}

// (u / 255 - mean) / std in float32, the order of torchvision's ToTensor then Normalize, so the
// result is the same float. 256 values per channel: a table.
void cpu_image_normalize(const OpArgs& a) {
  const TensorRef &src = a.input(0), &dst = a.output(0);
  a.require(src.dtype == DType::U8 && src.ndim == 3 && src.shape[2] == 3,
            "src must be a uint8 [H, W, 3] image, got " + src.describe());
  const int64_t H = src.shape[0], W = src.shape[1];
  a.require(dst.dtype == DType::F32 || dst.dtype == DType::BF16,
            std::string("dst must be float32 or bfloat16, got ") + dst.describe());
  a.require(dst.ndim == 3 && dst.shape[0] == 3 && dst.shape[1] == H && dst.shape[2] == W && dst.contiguous(),
            "dst must be contiguous [3," + std::to_string(H) + "," + std::to_string(W) + "], got " + dst.describe());
  const float mean[3] = {float(a.f(0)), float(a.f(1)), float(a.f(2))};
  const float sd[3] = {float(a.f(3)), float(a.f(4)), float(a.f(5))};
  a.require(sd[0] != 0.f && sd[1] != 0.f && sd[2] != 0.f, "std must not be zero");
  const int64_t hw = H * W;
  if (hw == 0) return;

  float table[3][256];
  for (int c = 0; c < 3; c++)
    for (int u = 0; u < 256; u++) table[c][u] = (float(u) / 255.f - mean[c]) / sd[c];

  const auto* s = static_cast<const uint8_t*>(src.data);
  const int64_t sy = src.strides[0], sx = src.strides[1], sc = src.strides[2];
  const bool bf16 = dst.dtype == DType::BF16;
  parallel_for(H, rows_grain(W * 3, 1), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; y++) {
      const uint8_t* row = s + y * sy;
      for (int c = 0; c < 3; c++) {
        const float* t = table[c];
        const uint8_t* p = row + c * sc;
        const int64_t o = c * hw + y * W;
        if (bf16) {
          uint16_t* out = dst.ptr<uint16_t>() + o;
          for (int64_t x = 0; x < W; x++) out[x] = f32_to_bf16(t[p[x * sx]]);
        } else {
          float* out = dst.ptr<float>() + o;
          for (int64_t x = 0; x < W; x++) out[x] = t[p[x * sx]];
        }
      }
    }
  });
}

}  // namespace tsclip
