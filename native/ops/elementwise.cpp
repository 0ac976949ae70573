// CPU kernels for memory and elementwise ops: fill, copy (any strides, casts), binary with
// broadcasting, affine, unary activations and their derivatives, reductions, argmax.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../cpu/features.h"
#include "../cpu/strided.h"
#include "../cpu/threadpool.h"
#include "../tensor.h"
#include "activation_impl.h"
#include "kinds.h"

namespace tsclip {
namespace {

constexpr int64_t kGrain = 1 << 14;

void require_f32(const OpArgs& a, const TensorRef& t, const char* what) {
  a.require(t.dtype == DType::F32, std::string(what) + " must be float32, got " + t.describe());
}
void require_same_shape(const OpArgs& a, const TensorRef& x, const TensorRef& y) {
  bool same = x.ndim == y.ndim;
  for (int d = 0; same && d < x.ndim; d++) same = x.shape[d] == y.shape[d];
  a.require(same, "shape mismatch " + x.describe() + " vs " + y.describe());
}

// --- casts: every element goes through the widest exact type of its pair ---
template <class T> struct Elem;
template <> struct Elem<float> {
  static double get(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  static void set(void* p, int64_t i, double v) { static_cast<float*>(p)[i] = float(v); }
};
template <> struct Elem<uint16_t> {  // bfloat16
  static double get(const void* p, int64_t i) { return bf16_to_f32(static_cast<const uint16_t*>(p)[i]); }
  static void set(void* p, int64_t i, double v) { static_cast<uint16_t*>(p)[i] = f32_to_bf16(float(v)); }
};
template <> struct Elem<int32_t> {
  static double get(const void* p, int64_t i) { return static_cast<const int32_t*>(p)[i]; }
  static void set(void* p, int64_t i, double v) { static_cast<int32_t*>(p)[i] = int32_t(std::nearbyint(v)); }
};
template <> struct Elem<uint8_t> {
  static double get(const void* p, int64_t i) { return static_cast<const uint8_t*>(p)[i]; }
  static void set(void* p, int64_t i, double v) {
    static_cast<uint8_t*>(p)[i] = uint8_t(std::min(255.0, std::max(0.0, std::nearbyint(v))));
  }
};

// Same dtype, both innermost strides 1 (a permute that keeps the last dimension, as splitting
// heads or image patches does): whole rows at a time.
template <class T>
void copy_rows(const TensorRef& x, const TensorRef& y) {
  const int nd = y.ndim;
  const int64_t inner = y.shape[nd - 1], rows = y.numel() / inner;
  parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
    StridedCursor<2> c{nd - 1, y.shape, {x.strides, y.strides}};
    c.seek(b);
    for (int64_t r = b; r < e; r++, c.next())
      std::memcpy(static_cast<T*>(y.data) + c.off[1], static_cast<const T*>(x.data) + c.off[0], size_t(inner) * sizeof(T));
  });
}

template <class S, class D>
void copy_typed(const TensorRef& x, const TensorRef& y) {
  int64_t n = y.numel();
  if (std::is_same<S, D>::value && x.contiguous() && y.contiguous()) {
    std::memcpy(y.data, x.data, size_t(n) * sizeof(S));
    return;
  }
  if (std::is_same<S, D>::value && n > 0 && y.ndim >= 1 && y.shape[y.ndim - 1] >= 8 &&
      x.strides[y.ndim - 1] == 1 && y.strides[y.ndim - 1] == 1)
    return copy_rows<S>(x, y);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    StridedCursor<2> c{y.ndim, y.shape, {x.strides, y.strides}};
    c.seek(b);
    for (int64_t i = b; i < e; i++, c.next()) Elem<D>::set(y.data, c.off[1], Elem<S>::get(x.data, c.off[0]));
  });
}

template <class S>
void copy_to(const OpArgs& a, const TensorRef& x, const TensorRef& y) {
  switch (y.dtype) {
    case DType::F32: return copy_typed<S, float>(x, y);
    case DType::BF16: return copy_typed<S, uint16_t>(x, y);
    case DType::I32: return copy_typed<S, int32_t>(x, y);
    case DType::U8: return copy_typed<S, uint8_t>(x, y);
  }
  a.fail("unsupported output dtype");
}

// The activations other than quick_gelu, sigmoid and exp, which run on the vector exp
// (exp_activation in activation_impl.h).
inline float unary_fwd(UnaryKind k, float x) {
  switch (k) {
    case UnaryKind::Relu: return x > 0 ? x : 0;
    case UnaryKind::Gelu: return 0.5f * x * (1.f + std::erf(x * float(M_SQRT1_2)));
    case UnaryKind::Log: return std::log(x);
    case UnaryKind::Neg: return -x;
    case UnaryKind::Sqrt: return std::sqrt(x);
    case UnaryKind::Square: return x * x;
    case UnaryKind::Tanh: return std::tanh(x);
    case UnaryKind::Abs: return std::fabs(x);
    case UnaryKind::QuickGelu: case UnaryKind::Sigmoid: case UnaryKind::Exp: break;
  }
  return 0;
}

// d unary(x) / dx
inline float unary_grad(UnaryKind k, float x) {
  switch (k) {
    case UnaryKind::Relu: return x > 0 ? 1.f : 0.f;
    case UnaryKind::Gelu:
      return 0.5f * (1.f + std::erf(x * float(M_SQRT1_2))) + x * std::exp(-0.5f * x * x) * 0.3989422804014327f;
    case UnaryKind::Log: return 1.f / x;
    case UnaryKind::Neg: return -1.f;
    case UnaryKind::Sqrt: return 0.5f / std::sqrt(x);
    case UnaryKind::Square: return 2.f * x;
    case UnaryKind::Tanh: {
      float t = std::tanh(x);
      return 1.f - t * t;
    }
    case UnaryKind::Abs: return x > 0 ? 1.f : (x < 0 ? -1.f : 0.f);
    case UnaryKind::QuickGelu: case UnaryKind::Sigmoid: case UnaryKind::Exp: break;
  }
  return 0;
}

bool exp_based(UnaryKind k) { return k == UnaryKind::QuickGelu || k == UnaryKind::Sigmoid || k == UnaryKind::Exp; }

// The widest exp-activation path this CPU has (activation_impl.h).
void exp_unary(UnaryKind k, const float* x, const float* dy, float* y, int64_t n) {
  static const auto fn = [] {
    const CpuFeatures& f = cpu_features();
    return f.avx512f ? &exp_activation_avx512 : f.avx2 && f.fma ? &exp_activation_avx2 : &exp_activation<4>;
  }();
  fn(k, x, dy, y, n);
}

UnaryKind unary_kind(const OpArgs& a) {
  int64_t k = a.i(0);
  a.require(k >= 0 && k <= int64_t(UnaryKind::Abs), "unknown unary kind " + std::to_string(k));
  return UnaryKind(k);
}

template <class F>
inline float binop(BinaryKind k, float x, float y) {
  switch (k) {
    case BinaryKind::Add: return x + y;
    case BinaryKind::Sub: return x - y;
    case BinaryKind::Mul: return x * y;
    case BinaryKind::Div: return x / y;
    case BinaryKind::Max: return x > y ? x : y;
    case BinaryKind::Min: return x < y ? x : y;
  }
  return 0;
}

template <BinaryKind K>
void binary_loop(const TensorRef& x, const TensorRef& y, const TensorRef& z) {
  const float* a = x.ptr<float>();
  const float* b = y.ptr<float>();
  float* c = z.ptr<float>();
  int64_t n = z.numel();
  bool flat = x.contiguous() && y.contiguous() && z.contiguous() && x.numel() == n && y.numel() == n;
  // A common broadcast: b repeats along the leading dims (bias, positional embedding).
  int64_t inner = 0;
  if (!flat && x.contiguous() && z.contiguous() && x.numel() == n && y.contiguous() == false) {
    int d = z.ndim;
    while (d > 0 && y.strides[d - 1] != 0) d--;
    bool tail_contig = true;
    int64_t s = 1;
    for (int k = z.ndim - 1; k >= d; k--) tail_contig &= y.strides[k] == s, s *= z.shape[k];
    bool head_bcast = true;
    for (int k = 0; k < d; k++) head_bcast &= y.strides[k] == 0;
    if (tail_contig && head_bcast && d > 0) inner = s;
  }
  parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
    if (flat) {
      for (int64_t i = lo; i < hi; i++) c[i] = binop<void>(K, a[i], b[i]);
    } else if (inner) {
      for (int64_t i = lo; i < hi; i++) c[i] = binop<void>(K, a[i], b[i % inner]);
    } else {
      StridedCursor<3> cur{z.ndim, z.shape, {x.strides, y.strides, z.strides}};
      cur.seek(lo);
      for (int64_t i = lo; i < hi; i++, cur.next()) c[cur.off[2]] = binop<void>(K, a[cur.off[0]], b[cur.off[1]]);
    }
  });
}

}  // namespace

void cpu_fill(const OpArgs& a) {
  const TensorRef& y = a.output(0);
  a.require(y.contiguous(), "output must be contiguous");
  double v = a.f(0);
  int64_t n = y.numel();
  switch (y.dtype) {
    case DType::F32: std::fill_n(y.ptr<float>(), n, float(v)); break;
    case DType::BF16: std::fill_n(y.ptr<uint16_t>(), n, f32_to_bf16(float(v))); break;
    case DType::I32: std::fill_n(y.ptr<int32_t>(), n, int32_t(v)); break;
    case DType::U8: std::fill_n(y.ptr<uint8_t>(), n, uint8_t(v)); break;
  }
}

void cpu_copy(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_same_shape(a, x, y);
  switch (x.dtype) {
    case DType::F32: return copy_to<float>(a, x, y);
    case DType::BF16: return copy_to<uint16_t>(a, x, y);
    case DType::I32: return copy_to<int32_t>(a, x, y);
    case DType::U8: return copy_to<uint8_t>(a, x, y);
  }
}

void cpu_binary(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.input(1), &z = a.output(0);
  require_f32(a, x, "a");
  require_f32(a, y, "b");
  require_f32(a, z, "output");
  a.require(x.ndim == z.ndim && y.ndim == z.ndim, "operands must be broadcast to the output's rank");
  for (int d = 0; d < z.ndim; d++)
    a.require((x.shape[d] == z.shape[d] || x.strides[d] == 0) && (y.shape[d] == z.shape[d] || y.strides[d] == 0),
              "cannot broadcast " + x.describe() + " and " + y.describe() + " to " + z.describe());
  switch (BinaryKind(a.i(0))) {
    case BinaryKind::Add: return binary_loop<BinaryKind::Add>(x, y, z);
    case BinaryKind::Sub: return binary_loop<BinaryKind::Sub>(x, y, z);
    case BinaryKind::Mul: return binary_loop<BinaryKind::Mul>(x, y, z);
    case BinaryKind::Div: return binary_loop<BinaryKind::Div>(x, y, z);
    case BinaryKind::Max: return binary_loop<BinaryKind::Max>(x, y, z);
    case BinaryKind::Min: return binary_loop<BinaryKind::Min>(x, y, z);
  }
  a.fail("unknown binary kind " + std::to_string(a.i(0)));
}

void cpu_affine(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_f32(a, x, "input");
  require_f32(a, y, "output");
  a.require(x.contiguous() && y.contiguous() && x.numel() == y.numel(), "contiguous tensors of one size expected");
  float al = float(a.f(0)), be = float(a.f(1));
  const float* p = x.ptr<float>();
  float* q = y.ptr<float>();
  parallel_for(y.numel(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) q[i] = p[i] * al + be;
  });
}

void cpu_unary(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_f32(a, x, "input");
  require_f32(a, y, "output");
  a.require(x.contiguous() && y.contiguous() && x.numel() == y.numel(), "contiguous tensors of one size expected");
  UnaryKind k = unary_kind(a);
  const float* p = x.ptr<float>();
  float* q = y.ptr<float>();
  parallel_for(y.numel(), kGrain / 4, [&](int64_t b, int64_t e) {
    if (exp_based(k)) return exp_unary(k, p + b, nullptr, q + b, e - b);
    for (int64_t i = b; i < e; i++) q[i] = unary_fwd(k, p[i]);
  });
}

void cpu_unary_backward(const OpArgs& a) {
  const TensorRef &x = a.input(0), &dy = a.input(1), &dx = a.output(0);
  require_f32(a, x, "input");
  a.require(x.contiguous() && dy.contiguous() && dx.contiguous() && x.numel() == dy.numel() && x.numel() == dx.numel(),
            "contiguous tensors of one size expected");
  UnaryKind k = unary_kind(a);
  const float *p = x.ptr<float>(), *g = dy.ptr<float>();
  float* q = dx.ptr<float>();
  parallel_for(x.numel(), kGrain / 4, [&](int64_t b, int64_t e) {
    if (exp_based(k)) return exp_unary(k, p + b, g + b, q + b, e - b);
    for (int64_t i = b; i < e; i++) q[i] = g[i] * unary_grad(k, p[i]);
  });
}

void cpu_reduce(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  require_f32(a, x, "input");
  require_f32(a, y, "output");
  int64_t outer = a.i(0), mid = a.i(1), inner = a.i(2);
  auto kind = ReduceKind(a.i(3));
  a.require(x.contiguous() && y.contiguous(), "contiguous tensors expected");
  a.require(x.numel() == outer * mid * inner && y.numel() == outer * inner,
            "sizes do not match [outer, mid, inner] = [" + std::to_string(outer) + "," + std::to_string(mid) + "," +
                std::to_string(inner) + "]");
  const float* p = x.ptr<float>();
  float* q = y.ptr<float>();
  // Chunks of `inner` columns are summed in double, row after row (cache friendly for any shape).
  int64_t cols = std::min<int64_t>(inner, 256);
  int64_t col_blocks = (inner + cols - 1) / cols;
  parallel_for(outer * col_blocks, 1, [&](int64_t b, int64_t e) {
    std::vector<double> acc(static_cast<size_t>(cols));
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / col_blocks, c0 = (t % col_blocks) * cols, c1 = std::min(inner, c0 + cols);
      double init = kind == ReduceKind::Max ? -INFINITY : 0.0;
      std::fill(acc.begin(), acc.end(), init);
      for (int64_t m = 0; m < mid; m++) {
        const float* row = p + (o * mid + m) * inner;
        for (int64_t c = c0; c < c1; c++) {
          double v = row[c];
          double& r = acc[size_t(c - c0)];
          if (kind == ReduceKind::Max) r = v > r ? v : r;
          else r += kind == ReduceKind::SumSquares ? v * v : v;
        }
      }
      for (int64_t c = c0; c < c1; c++) {
        double r = acc[size_t(c - c0)];
        q[o * inner + c] = float(kind == ReduceKind::Mean ? r / double(mid) : r);
      }
    }
  });
}

void cpu_argmax_last(const OpArgs& a) {
  const TensorRef &x = a.input(0), &y = a.output(0);
  a.require(x.ndim == 2 && x.contiguous(), "input must be a contiguous [rows, cols] tensor");
  a.require(y.dtype == DType::I32 && y.numel() == x.shape[0], "output must be int32 [rows]");
  int64_t rows = x.shape[0], cols = x.shape[1];
  int32_t* q = y.ptr<int32_t>();
  for (int64_t r = 0; r < rows; r++) {
    int64_t best = 0;
    if (x.dtype == DType::I32) {
      const int32_t* p = x.ptr<int32_t>() + r * cols;
      for (int64_t c = 1; c < cols; c++) if (p[c] > p[best]) best = c;
    } else {
      require_f32(a, x, "input");
      const float* p = x.ptr<float>() + r * cols;
      for (int64_t c = 1; c < cols; c++) if (p[c] > p[best]) best = c;
    }
    q[r] = int32_t(best);
  }
}

}  // namespace tsclip
