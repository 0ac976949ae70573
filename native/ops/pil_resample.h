// PIL's resampling weights for one axis (ImagingResample's precompute_coeffs), shared by the CPU
// and CUDA resize kernels: host code, computed once per call, identical for both backends.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace tsclip {

constexpr int kPilPrecisionBits = 32 - 8 - 2;

inline double pil_bicubic(double x) {  // a = -0.5
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point weights: output i reads count(i) source samples from first(i), with weights
// kk[i * ksize ...]. bounds holds the (first, count) pairs, the layout the CUDA kernels upload.
struct PilAxis {
  int ksize = 0;
  std::vector<int32_t> bounds;
  std::vector<int32_t> kk;
  int first(int64_t i) const { return bounds[size_t(i) * 2]; }
  int count(int64_t i) const { return bounds[size_t(i) * 2 + 1]; }
};

// in0 and in1 arrive as floats and are subtracted as floats, as PIL receives the box.
inline PilAxis pil_precompute(int in_size, float in0, float in1, int out_size) {
  PilAxis ax;
  const double scale = double(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  ax.ksize = int(std::ceil(support)) * 2 + 1;
  ax.bounds.resize(size_t(out_size) * 2);
  ax.kk.assign(size_t(out_size) * size_t(ax.ksize), 0);
  std::vector<double> w(size_t(ax.ksize));
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; xx++) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);  // truncation, as PIL's (int) cast
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int n = xmax - xmin;  // never above ksize; the clamp only guards memory
    n = n < 0 ? 0 : (n > ax.ksize ? ax.ksize : n);
    double ww = 0.0;
    for (int x = 0; x < n; x++) {
      w[size_t(x)] = pil_bicubic((x + xmin - center + 0.5) * ss);
      ww += w[size_t(x)];
    }
    int32_t* k = &ax.kk[size_t(xx) * size_t(ax.ksize)];
    for (int x = 0; x < n; x++) {
      const double v = ww != 0.0 ? w[size_t(x)] / ww : w[size_t(x)];
      k[x] = v < 0 ? int(-0.5 + v * (1 << kPilPrecisionBits)) : int(0.5 + v * (1 << kPilPrecisionBits));
    }
    ax.bounds[size_t(xx) * 2] = xmin;
    ax.bounds[size_t(xx) * 2 + 1] = n;
  }
  return ax;
}

}  // namespace tsclip
