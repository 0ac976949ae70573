// Runs the CUDA kernels of the elementwise, index, norm, loss, optim, conv and image ops on the CPU
// through the emulation in cpu_emu.h and compares every op with the CPU backend's kernel on the
// same inputs: index arithmetic, broadcasting, split reductions, barrier and shuffle placement,
// edge shapes and error paths, on a machine without a GPU. Bit-exact ops (copy, casts, gathers,
// PIL resize, argmax) must match exactly; float ops within a few ulps of accumulated rounding.
// What it cannot see: memory coalescing, timing, races between blocks of a real device.
//
//   make -C native/cuda/dev emu && native/cuda/dev/build/ops_emu_test
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/runtime.h"
#include "ops/kinds.h"
#include "tensor.h"

namespace tsclip {
#define OP(name)                     \
  void cpu_##name(const OpArgs&);    \
  void cuda_##name(const OpArgs&);
#include "ops.def"
#undef OP

// --- the device runtime, emulated on host memory ---
namespace cuda {
[[noreturn]] void raise_error(cudaError_t, const char* expr, const char* file, int line) {
  throw Error(std::string("emulated CUDA error in ") + expr + " at " + file + ":" + std::to_string(line));
}
cudaStream_t stream() { return nullptr; }
int sm_count() { return 2; }
static int64_t g_flag = 0;
int64_t* flag_device() { return &g_flag; }
void reset_flag(int64_t v) { g_flag = v; }
int64_t read_flag() { return g_flag; }
static std::vector<void*> g_live;
void* alloc(size_t bytes) {
  void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  std::memset(p, 0xff, bytes);  // NaN: scratch read before it is written shows up
  g_live.push_back(p);
  return p;
}
void free(void* p) {
  if (!p) return;
  auto it = std::find(g_live.begin(), g_live.end(), p);
  if (it == g_live.end()) throw Error("free of a pointer not from alloc");
  g_live.erase(it);
  std::free(p);
}
void copy_to_device(void* d, const void* s, size_t n) { std::memcpy(d, s, n); }
void copy_to_host(void* d, const void* s, size_t n) { std::memcpy(d, s, n); }
void copy_on_device(void* d, const void* s, size_t n) { std::memcpy(d, s, n); }
void synchronize() {}
}  // namespace cuda
}  // namespace tsclip

using namespace tsclip;

namespace {

int g_checks = 0, g_failures = 0;

void fail(const std::string& what) {
  g_failures++;
  std::printf("FAIL %s\n", what.c_str());
}

// --- tensors on host memory ---
struct Tensor {
  DType dt = DType::F32;
  std::vector<int64_t> shape, strides;
  int64_t offset = 0;
  std::shared_ptr<std::vector<unsigned char>> mem;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  TensorRef ref() const {
    TensorRef t;
    t.data = mem->data() + offset * dtype_size(dt);
    t.dtype = dt;
    t.device = Device::CUDA;
    t.ndim = int(shape.size());
    for (size_t i = 0; i < shape.size(); i++) t.shape[i] = shape[i], t.strides[i] = strides[i];
    return t;
  }
  // Element i in row-major order of the view.
  int64_t at(int64_t i) const {
    int64_t off = offset;
    for (int d = int(shape.size()) - 1; d >= 0; d--) {
      off += (i % shape[size_t(d)]) * strides[size_t(d)];
      i /= shape[size_t(d)];
    }
    return off;
  }
  double get(int64_t i) const {
    const unsigned char* p = mem->data() + at(i) * dtype_size(dt);
    switch (dt) {
      case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
      case DType::BF16: { uint16_t h; std::memcpy(&h, p, 2); return __bfloat162float({h}); }
      case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
      case DType::U8: return *p;
    }
    return 0;
  }
  void set(int64_t i, double v) {
    unsigned char* p = mem->data() + at(i) * dtype_size(dt);
    switch (dt) {
      case DType::F32: { float f = float(v); std::memcpy(p, &f, 4); break; }
      case DType::BF16: { uint16_t h = __float2bfloat16_rn(float(v)).x; std::memcpy(p, &h, 2); break; }
      case DType::I32: { int32_t x = int32_t(v); std::memcpy(p, &x, 4); break; }
      case DType::U8: *p = uint8_t(v); break;
    }
  }
  Tensor clone() const {  // same view over a copy of the storage
    Tensor t = *this;
    t.mem = std::make_shared<std::vector<unsigned char>>(*mem);
    return t;
  }
};

Tensor make(DType dt, std::vector<int64_t> shape, double fill = NAN) {
  Tensor t;
  t.dt = dt;
  t.shape = shape;
  t.strides.resize(shape.size());
  int64_t s = 1;
  for (int d = int(shape.size()) - 1; d >= 0; d--) t.strides[size_t(d)] = s, s *= shape[size_t(d)];
  t.mem = std::make_shared<std::vector<unsigned char>>(size_t(std::max<int64_t>(s, 1) * dtype_size(dt)));
  bool is_int = dt == DType::I32 || dt == DType::U8;  // NaN (unwritten) only exists for floats
  for (int64_t i = 0; i < s; i++) t.set(i, is_int && std::isnan(fill) ? 0 : fill);
  return t;
}

// A view with given shape/strides/offset over a fresh storage of `storage` elements.
Tensor view(DType dt, int64_t storage, std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset,
            double fill = 0) {
  Tensor t = make(dt, {storage}, fill);
  t.shape = shape;
  t.strides = strides;
  t.offset = offset;
  return t;
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 7) {}
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return uint32_t(s >> 11);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * (next() & 0xffffff) / double(0x1000000); }
  int integer(int lo, int hi) { return lo + int(next() % uint32_t(hi - lo + 1)); }
};

Tensor randn(std::vector<int64_t> shape, Rng& r, double lo = -2, double hi = 2, DType dt = DType::F32) {
  Tensor t = make(dt, shape, 0);
  for (int64_t i = 0; i < t.numel(); i++) t.set(i, r.uniform(lo, hi));
  return t;
}

// Compares two tensors element by element: |a - b| <= atol + rtol * |a| (NaN must meet NaN).
void expect_close(const std::string& what, const Tensor& want, const Tensor& got, double atol, double rtol) {
  g_checks++;
  if (want.numel() != got.numel()) return fail(what + ": sizes differ");
  for (int64_t i = 0; i < want.numel(); i++) {
    double a = want.get(i), b = got.get(i);
    bool ok = (std::isnan(a) && std::isnan(b)) || a == b || std::fabs(a - b) <= atol + rtol * std::fabs(a);
    if (!ok) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: element %lld: cpu %.9g, cuda %.9g", what.c_str(), (long long)i, a, b);
      return fail(buf);
    }
  }
}
void expect_bytes(const std::string& what, const Tensor& want, const Tensor& got) {
  g_checks++;
  if (*want.mem != *got.mem) {
    for (size_t i = 0; i < want.mem->size(); i++)
      if ((*want.mem)[i] != (*got.mem)[i]) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "%s: byte %zu: cpu %d, cuda %d", what.c_str(), i, (*want.mem)[i], (*got.mem)[i]);
        return fail(buf);
      }
  }
}

using OpFn = void (*)(const OpArgs&);

OpArgs args_of(const char* op, const std::vector<const Tensor*>& in, const std::vector<const Tensor*>& out,
               std::vector<int64_t> ints = {}, std::vector<double> floats = {}) {
  OpArgs a;
  a.op = op;
  for (auto* t : in) a.in.push_back(t ? t->ref() : TensorRef{});
  for (auto* t : out) a.out.push_back(t ? t->ref() : TensorRef{});
  a.ints = ints;
  a.floats = floats;
  return a;
}

// Runs the CPU and the emulated CUDA kernel on copies of the outputs (so accumulating and in-place
// outputs start equal) and returns both sets; errors must agree in message.
struct Run {
  std::vector<Tensor> cpu, gpu;
  bool threw = false;
};
Run run_both(const char* op, OpFn cpu, OpFn gpu, const std::vector<const Tensor*>& in,
             const std::vector<const Tensor*>& out, std::vector<int64_t> ints = {}, std::vector<double> floats = {}) {
  Run r;
  std::vector<const Tensor*> oc, og;
  for (auto* t : out) {
    r.cpu.push_back(t ? t->clone() : Tensor{});
    r.gpu.push_back(t ? t->clone() : Tensor{});
  }
  for (size_t i = 0; i < out.size(); i++) {
    oc.push_back(out[i] ? &r.cpu[i] : nullptr);
    og.push_back(out[i] ? &r.gpu[i] : nullptr);
  }
  std::string ec, eg;
  try {
    cpu(args_of(op, in, oc, ints, floats));
  } catch (const std::exception& e) {
    ec = e.what();
  }
  try {
    gpu(args_of(op, in, og, ints, floats));
  } catch (const std::exception& e) {
    eg = e.what();
  }
  if (!ec.empty() || !eg.empty()) {
    r.threw = true;
    g_checks++;
    if (ec.empty() != eg.empty()) fail(std::string(op) + ": cpu threw '" + ec + "', cuda threw '" + eg + "'");
  }
  return r;
}
#define RUN(op, ...) run_both(#op, cpu_##op, cuda_##op, __VA_ARGS__)

void expect_throw(const char* what, OpFn fn, const OpArgs& a, const char* needle) {
  g_checks++;
  try {
    fn(a);
  } catch (const std::exception& e) {
    if (!std::strstr(e.what(), needle)) fail(std::string(what) + ": message '" + e.what() + "' lacks '" + needle + "'");
    return;
  }
  fail(std::string(what) + ": did not throw");
}

const DType kAll[] = {DType::F32, DType::BF16, DType::I32, DType::U8};

// ----------------------------------------------------------------------------------------------
void test_fill_copy() {
  for (DType dt : kAll)
    for (double v : {0.0, 2.7, -1.5, 100.0}) {
      if (dt == DType::U8 && v < 0) continue;  // uint8(negative) is undefined on the CPU side
      Tensor y = make(dt, {3, 5}, 0);
      Run r = RUN(fill, {}, {&y}, {}, {v});
      expect_bytes(std::string("fill ") + dtype_name(dt), r.cpu[0], r.gpu[0]);
    }
  Rng rng(1);
  for (DType from : kAll)
    for (DType to : kAll) {
      // Source: a permuted, offset view of [4,3,5]; values with .5 ties and out-of-range for u8.
      Tensor x = view(from, 80, {3, 4, 5}, {5, 15, 1}, 7);
      for (int64_t i = 0; i < x.numel(); i++) {
        double v = rng.integer(-600, 600) / 2.0;
        if (from == DType::U8) v = rng.integer(0, 255);
        if (from == DType::I32) v = rng.integer(-70000, 70000);
        x.set(i, v);
      }
      Tensor y = view(to, 200, {3, 4, 5}, {1, 30, 6}, 3);  // strided destination
      Run r = RUN(copy, {&x}, {&y});
      expect_bytes(std::string("copy ") + dtype_name(from) + "->" + dtype_name(to), r.cpu[0], r.gpu[0]);
      Tensor xc = make(from, {2, 7}, 0), yc = make(to, {2, 7}, 0);  // contiguous (memcpy path when equal)
      for (int64_t i = 0; i < 14; i++) xc.set(i, from == DType::U8 ? i * 17 : i * 3.25 - 20);
      Run rc = RUN(copy, {&xc}, {&yc});
      expect_bytes(std::string("copy contiguous ") + dtype_name(from) + "->" + dtype_name(to), rc.cpu[0], rc.gpu[0]);
    }
}

void test_binary_affine() {
  Rng rng(2);
  for (int k = 0; k <= int(BinaryKind::Min); k++) {
    Tensor a = randn({2, 3, 4}, rng), b = randn({2, 3, 4}, rng, 0.5, 2);
    Tensor y = make(DType::F32, {2, 3, 4});
    Run r = RUN(binary, {&a, &b}, {&y}, {k});
    expect_close("binary flat kind " + std::to_string(k), r.cpu[0], r.gpu[0], 0, 0);
    // Broadcast: b [1,3,1] expanded to [2,3,4] with strides 0.
    Tensor bb = view(DType::F32, 3, {2, 3, 4}, {0, 1, 0}, 0);
    for (int i = 0; i < 3; i++) bb.set(i * 4, 0.5 + i);  // element (0,i,0) is storage i
    Run rb = RUN(binary, {&a, &bb}, {&y}, {k});
    expect_close("binary broadcast kind " + std::to_string(k), rb.cpu[0], rb.gpu[0], 0, 0);
    // Transposed a, bias-like b [4] (strides 0,0,1), strided output.
    Tensor at = view(DType::F32, 24, {2, 3, 4}, {1, 8, 2}, 0);
    for (int64_t i = 0; i < 24; i++) at.set(i, rng.uniform(-3, 3));
    Tensor bias = view(DType::F32, 4, {2, 3, 4}, {0, 0, 1}, 0);
    for (int64_t i = 0; i < 4; i++) bias.set(i, rng.uniform(0.5, 2));
    Tensor ys = view(DType::F32, 60, {2, 3, 4}, {30, 10, 2}, 1);
    Run rs = RUN(binary, {&at, &bias}, {&ys}, {k});
    expect_close("binary strided kind " + std::to_string(k), rs.cpu[0], rs.gpu[0], 0, 0);
  }
  Tensor a = randn({1000}, rng), y = make(DType::F32, {1000});
  Run r = RUN(affine, {&a}, {&y}, {}, {1.7, -0.3});
  expect_close("affine", r.cpu[0], r.gpu[0], 0, 0);
  Tensor bad = make(DType::F32, {3, 4}), bb = make(DType::F32, {3, 5}), yy = make(DType::F32, {3, 4});
  expect_throw("binary bad broadcast", cuda_binary, args_of("binary", {&bad, &bb}, {&yy}, {0}), "cannot broadcast");
}

void test_unary() {
  Rng rng(3);
  for (int k = 0; k <= int(UnaryKind::Abs); k++) {
    bool positive = k == int(UnaryKind::Log) || k == int(UnaryKind::Sqrt);
    Tensor x = randn({517}, rng, positive ? 0.05 : -6, 6), y = make(DType::F32, {517});
    Run r = RUN(unary, {&x}, {&y}, {k});
    expect_close("unary kind " + std::to_string(k), r.cpu[0], r.gpu[0], 1e-6, 2e-6);
    Tensor dy = randn({517}, rng), dx = make(DType::F32, {517});
    Run rb = RUN(unary_backward, {&x, &dy}, {&dx}, {k});
    expect_close("unary_backward kind " + std::to_string(k), rb.cpu[0], rb.gpu[0], 1e-6, 2e-6);
  }
}

void test_reduce_argmax() {
  Rng rng(4);
  const int64_t shapes[][3] = {{3, 7, 5}, {1, 10000, 1}, {1, 3000, 40}, {5, 300, 1}, {2, 1, 3}, {2, 0, 3}, {70, 33, 2}};
  for (auto& s : shapes)
    for (int k = 0; k <= int(ReduceKind::SumSquares); k++) {
      Tensor x = randn({s[0] * s[1] * s[2]}, rng, -1, 3), y = make(DType::F32, {s[0] * s[2]});
      Run r = RUN(reduce, {&x}, {&y}, {s[0], s[1], s[2], k});
      expect_close("reduce [" + std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) +
                       "] kind " + std::to_string(k),
                   r.cpu[0], r.gpu[0], 1e-5, 1e-5);
    }
  for (int64_t cols : {1, 5, 33, 100, 1000}) {
    Tensor x = make(DType::F32, {6, cols}, 0);
    for (int64_t i = 0; i < x.numel(); i++) x.set(i, rng.integer(-3, 3));  // many ties
    if (cols > 3) {
      x.set(1 * cols + 2, NAN);  // ignored after position 0
      x.set(2 * cols + 0, NAN);  // wins at position 0
      for (int64_t c = 0; c < cols; c++) x.set(3 * cols + c, -INFINITY);
    }
    Tensor y = make(DType::I32, {6}, 0);
    Run r = RUN(argmax_last, {&x}, {&y});
    expect_bytes("argmax f32 cols " + std::to_string(cols), r.cpu[0], r.gpu[0]);
    Tensor xi = make(DType::I32, {4, cols}, 0);
    for (int64_t i = 0; i < xi.numel(); i++) xi.set(i, rng.integer(0, 49407));
    Tensor yi = make(DType::I32, {4}, 0);
    Run ri = RUN(argmax_last, {&xi}, {&yi});
    expect_bytes("argmax i32 cols " + std::to_string(cols), ri.cpu[0], ri.gpu[0]);
  }
}

void test_index() {
  Rng rng(5);
  struct Case {
    DType dt;
    int64_t dim;
  } cases[] = {{DType::F32, 8}, {DType::F32, 3}, {DType::U8, 5}, {DType::BF16, 6}, {DType::I32, 4}};
  for (auto c : cases) {
    Tensor table = randn({11, c.dim}, rng, 0, 100, c.dt);
    Tensor idx = make(DType::I32, {9}, 0);
    for (int i = 0; i < 9; i++) idx.set(i, rng.integer(0, 10));
    Tensor y = make(c.dt, {9, c.dim}, 0);
    Run r = RUN(gather_rows, {&table, &idx}, {&y});
    expect_bytes(std::string("gather ") + dtype_name(c.dt) + " dim " + std::to_string(c.dim), r.cpu[0], r.gpu[0]);
  }
  Tensor dy = randn({40, 7}, rng), idx = make(DType::I32, {40}, 0), dt = randn({5, 7}, rng);
  for (int i = 0; i < 40; i++) idx.set(i, rng.integer(0, 4));  // many repeats
  Run r = RUN(scatter_add_rows, {&dy, &idx}, {&dt});
  expect_close("scatter_add_rows", r.cpu[0], r.gpu[0], 1e-5, 1e-6);
  // Out-of-range ids throw the same message and leave the outputs untouched.
  Tensor table = randn({4, 3}, rng), bad = make(DType::I32, {3}, 0), y = make(DType::F32, {3, 3}, 0);
  bad.set(0, 1), bad.set(1, 4), bad.set(2, -1);
  Run rb = RUN(gather_rows, {&table, &bad}, {&y});
  g_checks++;
  if (!rb.threw) fail("gather with a bad id did not throw");
  expect_throw("gather bad id message", cuda_gather_rows, args_of("gather_rows", {&table, &bad}, {&y}),
               "index 4 at position 1 is out of range [0, 4)");
  Tensor dt2 = randn({4, 3}, rng), dt2c = dt2.clone();
  expect_throw("scatter bad id", cuda_scatter_add_rows, args_of("scatter_add_rows", {&y, &bad}, {&dt2}),
               "out of range");
  expect_bytes("scatter bad id leaves dtable", dt2c, dt2);
}

void test_norms() {
  Rng rng(6);
  for (int64_t D : {50, 768, 7000}) {
    int64_t rows = D > 1000 ? 3 : 37;
    Tensor x = randn({rows, D}, rng, -3, 5), w = randn({D}, rng, 0.5, 1.5), b = randn({D}, rng);
    Tensor y = make(DType::F32, {rows, D}), mean = make(DType::F32, {rows}), rstd = make(DType::F32, {rows});
    Run r = RUN(layernorm_fwd, {&x, &w, &b}, {&y, &mean, &rstd}, {}, {1e-5});
    std::string tag = " D=" + std::to_string(D);
    expect_close("layernorm_fwd y" + tag, r.cpu[0], r.gpu[0], 1e-5, 1e-5);
    expect_close("layernorm_fwd mean" + tag, r.cpu[1], r.gpu[1], 1e-5, 1e-5);
    expect_close("layernorm_fwd rstd" + tag, r.cpu[2], r.gpu[2], 1e-5, 1e-5);
    Tensor dy = randn({rows, D}, rng), dx = make(DType::F32, {rows, D});
    Tensor dw = randn({D}, rng), db = randn({D}, rng);  // accumulated onto
    const Tensor &m = r.cpu[1], &rs = r.cpu[2];
    Run rb = RUN(layernorm_bwd, {&dy, &x, &w, &m, &rs}, {&dx, &dw, &db});
    expect_close("layernorm_bwd dx" + tag, rb.cpu[0], rb.gpu[0], 1e-5, 1e-4);
    expect_close("layernorm_bwd dw" + tag, rb.cpu[1], rb.gpu[1], 1e-4, 1e-4);
    expect_close("layernorm_bwd db" + tag, rb.cpu[2], rb.gpu[2], 1e-4, 1e-4);
    Run rn = RUN(layernorm_bwd, {&dy, &x, &w, &m, &rs}, {&dx, nullptr, nullptr});
    expect_close("layernorm_bwd dx only" + tag, rn.cpu[0], rn.gpu[0], 1e-5, 1e-4);
    // The residual form: s = x + res is written and normalised.
    Tensor res = randn({rows, D}, rng), sum = make(DType::F32, {rows, D});
    Run rr = RUN(layernorm_fwd, {&x, &w, &b, &res}, {&y, &mean, &rstd, &sum}, {}, {1e-5});
    expect_close("layernorm_fwd+residual y" + tag, rr.cpu[0], rr.gpu[0], 1e-5, 1e-5);
    expect_close("layernorm_fwd+residual rstd" + tag, rr.cpu[2], rr.gpu[2], 1e-5, 1e-5);
    expect_close("layernorm_fwd+residual s" + tag, rr.cpu[3], rr.gpu[3], 0, 0);
    // Inference: no statistics written.
    Run ri = RUN(layernorm_fwd, {&x, &w, &b}, {&y, nullptr, nullptr}, {}, {1e-5});
    expect_close("layernorm_fwd without statistics" + tag, r.cpu[0], ri.gpu[0], 1e-5, 1e-5);
  }
  // L2 norm with a zero row and a tiny row (the eps branch).
  Tensor x = randn({6, 33}, rng);
  for (int c = 0; c < 33; c++) x.set(2 * 33 + c, 0.0), x.set(4 * 33 + c, 1e-9);
  Tensor y = make(DType::F32, {6, 33}), n = make(DType::F32, {6});
  Run r = RUN(l2norm_fwd, {&x}, {&y, &n}, {}, {1e-6});
  expect_close("l2norm_fwd y", r.cpu[0], r.gpu[0], 1e-6, 1e-6);
  expect_close("l2norm_fwd norm", r.cpu[1], r.gpu[1], 1e-6, 1e-6);
  Tensor dy = randn({6, 33}, rng), dx = make(DType::F32, {6, 33});
  Run rb = RUN(l2norm_bwd, {&dy, &r.cpu[0], &r.cpu[1]}, {&dx}, {}, {1e-6});
  expect_close("l2norm_bwd", rb.cpu[0], rb.gpu[0], 1e-5, 1e-5);
}

void test_softmax() {
  Rng rng(7);
  struct Case {
    int64_t B, Sq, Sk;
    bool causal, mask;
  } cases[] = {{2, 5, 5, false, false}, {2, 7, 7, true, false}, {1, 3, 70, true, false},
               {3, 4, 9, false, true},  {2, 6, 6, true, true},   {1, 2, 1000, false, false}};
  for (auto c : cases) {
    Tensor x = randn({c.B, c.Sq, c.Sk}, rng, -6, 6), y = make(DType::F32, {c.B, c.Sq, c.Sk});
    // Mask: a broadcast row (strides 0,1) with -inf entries, so one row is fully masked in causal.
    Tensor mask = view(DType::F32, c.Sk, {c.Sq, c.Sk}, {0, 1}, 0);
    for (int64_t j = 0; j < c.Sk; j++) mask.set(j, j == 0 ? -INFINITY : rng.uniform(-1, 1));
    std::string tag = "softmax B" + std::to_string(c.B) + " Sq" + std::to_string(c.Sq) + " Sk" + std::to_string(c.Sk) +
                      (c.causal ? " causal" : "") + (c.mask ? " mask" : "");
    Run r = RUN(softmax_fwd, {&x, c.mask ? &mask : nullptr}, {&y}, {c.causal ? 1 : 0});
    expect_close(tag, r.cpu[0], r.gpu[0], 1e-7, 1e-5);
    Tensor dy = randn({c.B, c.Sq, c.Sk}, rng), dx = make(DType::F32, {c.B, c.Sq, c.Sk});
    Run rb = RUN(softmax_bwd, {&r.cpu[0], &dy}, {&dx});
    expect_close(tag + " bwd", rb.cpu[0], rb.gpu[0], 1e-6, 1e-5);
  }
}

void test_loss_optim() {
  Rng rng(8);
  Tensor x = randn({13, 37}, rng, -5, 5), labels = make(DType::I32, {13}, 0);
  for (int i = 0; i < 13; i++) labels.set(i, rng.integer(0, 36));
  Tensor loss = make(DType::F32, {13}), lse = make(DType::F32, {13});
  Run r = RUN(cross_entropy_fwd, {&x, &labels}, {&loss, &lse});
  expect_close("cross_entropy_fwd loss", r.cpu[0], r.gpu[0], 1e-5, 1e-5);
  expect_close("cross_entropy_fwd lse", r.cpu[1], r.gpu[1], 1e-5, 1e-5);
  Tensor dloss = randn({13}, rng), dlogits = make(DType::F32, {13, 37});
  Run rb = RUN(cross_entropy_bwd, {&x, &labels, &r.cpu[1], &dloss}, {&dlogits});
  expect_close("cross_entropy_bwd", rb.cpu[0], rb.gpu[0], 1e-6, 1e-5);
  Tensor one = view(DType::F32, 1, {13}, {0}, 0, 0.25);  // one upstream gradient for every row
  Run r1 = RUN(cross_entropy_bwd, {&x, &labels, &r.cpu[1], &one}, {&dlogits});
  expect_close("cross_entropy_bwd broadcast dloss", r1.cpu[0], r1.gpu[0], 1e-6, 1e-5);
  labels.set(5, 37);
  expect_throw("cross_entropy bad label", cuda_cross_entropy_fwd,
               args_of("cross_entropy_fwd", {&x, &labels}, {&loss, &lse}), "label 37 at row 5 is out of range");
  expect_throw("cross_entropy_bwd bad label", cuda_cross_entropy_bwd,
               args_of("cross_entropy_bwd", {&x, &labels, &r.cpu[1], &dloss}, {&dlogits}), "label 37 at row 5");

  for (int64_t n : {1003, 4096, 3}) {
    Tensor g = randn({n}, rng), p = randn({n}, rng, -0.1, 0.1), m = randn({n}, rng, -0.01, 0.01),
           v = randn({n}, rng, 0, 0.001);
    for (int step : {1, 7}) {
      double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.98, step);
      Run ra = RUN(adamw, {&g}, {&p, &m, &v}, {}, {1e-3, 0.9, 0.98, 1e-6, 0.2, bc1, bc2});
      std::string tag = "adamw n" + std::to_string(n) + " step " + std::to_string(step);
      expect_close(tag + " param", ra.cpu[0], ra.gpu[0], 1e-7, 1e-6);
      expect_close(tag + " m", ra.cpu[1], ra.gpu[1], 1e-8, 1e-6);
      expect_close(tag + " v", ra.cpu[2], ra.gpu[2], 1e-10, 1e-6);
    }
  }
}

void test_conv() {
  Rng rng(9);
  struct Case {
    int64_t N, C, H, W, O, k, s, p;
    bool bias;
  } cases[] = {{2, 3, 9, 9, 4, 3, 2, 1, true},   {1, 2, 8, 12, 3, 4, 4, 0, true}, {2, 5, 6, 6, 7, 1, 1, 0, false},
               {4, 2, 32, 32, 3, 3, 1, 1, true}, {1, 70, 5, 5, 66, 3, 1, 1, true}, {2, 3, 7, 5, 2, 3, 3, 2, false}};
  for (auto c : cases) {
    int64_t Ho = (c.H + 2 * c.p - c.k) / c.s + 1, Wo = (c.W + 2 * c.p - c.k) / c.s + 1;
    std::string tag = "conv N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " H" + std::to_string(c.H) +
                      " O" + std::to_string(c.O) + " k" + std::to_string(c.k) + " s" + std::to_string(c.s) + " p" +
                      std::to_string(c.p);
    Tensor x = randn({c.N, c.C, c.H, c.W}, rng), w = randn({c.O, c.C, c.k, c.k}, rng, -0.5, 0.5),
           b = randn({c.O}, rng);
    Tensor y = make(DType::F32, {c.N, c.O, Ho, Wo});
    Run r = RUN(conv2d_fwd, {&x, &w, c.bias ? &b : nullptr}, {&y}, {c.s, c.p});
    expect_close(tag + " fwd", r.cpu[0], r.gpu[0], 1e-4, 1e-4);
    Tensor dy = randn({c.N, c.O, Ho, Wo}, rng), dx = make(DType::F32, {c.N, c.C, c.H, c.W});
    Run rd = RUN(conv2d_bwd_data, {&dy, &w}, {&dx}, {c.s, c.p});
    expect_close(tag + " bwd_data", rd.cpu[0], rd.gpu[0], 1e-4, 1e-4);
    Tensor dw = randn({c.O, c.C, c.k, c.k}, rng), db = randn({c.O}, rng);
    Run rw = RUN(conv2d_bwd_weight, {&dy, &x}, {&dw, c.bias ? &db : nullptr}, {c.s, c.p});
    expect_close(tag + " bwd_weight dw", rw.cpu[0], rw.gpu[0], 1e-3, 1e-4);
    if (c.bias) expect_close(tag + " bwd_weight db", rw.cpu[1], rw.gpu[1], 1e-3, 1e-4);
  }
}

void test_batchnorm_pool() {
  Rng rng(10);
  for (bool affine : {true, false}) {
    Tensor x = randn({3, 5, 7, 6}, rng, 2, 6), w = randn({5}, rng, 0.5, 1.5), b = randn({5}, rng);
    Tensor rm = randn({5}, rng), rv = randn({5}, rng, 0.5, 2);
    Tensor y = make(DType::F32, {3, 5, 7, 6}), sm = make(DType::F32, {5}), sr = make(DType::F32, {5});
    for (int training : {1, 0}) {
      std::string tag = std::string("batchnorm ") + (training ? "train" : "eval") + (affine ? "" : " no affine");
      // running_mean/var are inputs updated in place: run each side on its own copy.
      Tensor rm_c = rm.clone(), rv_c = rv.clone(), rm_g = rm.clone(), rv_g = rv.clone();
      Tensor yc = y.clone(), yg = y.clone(), smc = sm.clone(), smg = sm.clone(), src = sr.clone(), srg = sr.clone();
      cpu_batchnorm_fwd(args_of("batchnorm_fwd", {&x, affine ? &w : nullptr, affine ? &b : nullptr, &rm_c, &rv_c},
                                {&yc, &smc, &src}, {training}, {0.1, 1e-5}));
      cuda_batchnorm_fwd(args_of("batchnorm_fwd", {&x, affine ? &w : nullptr, affine ? &b : nullptr, &rm_g, &rv_g},
                                 {&yg, &smg, &srg}, {training}, {0.1, 1e-5}));
      expect_close(tag + " y", yc, yg, 1e-5, 1e-5);
      expect_close(tag + " save_mean", smc, smg, 1e-5, 1e-5);
      expect_close(tag + " save_rstd", src, srg, 1e-5, 1e-5);
      expect_close(tag + " running_mean", rm_c, rm_g, 1e-6, 1e-5);
      expect_close(tag + " running_var", rv_c, rv_g, 1e-6, 1e-5);
      Tensor dy = randn({3, 5, 7, 6}, rng), dx = make(DType::F32, {3, 5, 7, 6});
      Tensor dw = randn({5}, rng), db = randn({5}, rng);
      Run rb = RUN(batchnorm_bwd, {&dy, &x, affine ? &w : nullptr, &smc, &src}, {&dx, &dw, &db}, {training});
      expect_close(tag + " bwd dx", rb.cpu[0], rb.gpu[0], 1e-5, 1e-4);
      expect_close(tag + " bwd dw", rb.cpu[1], rb.gpu[1], 1e-4, 1e-4);
      expect_close(tag + " bwd db", rb.cpu[2], rb.gpu[2], 1e-4, 1e-4);
    }
    // Training without running stats or saved outputs.
    Run rn = RUN(batchnorm_fwd, {&x, &w, &b, nullptr, nullptr}, {&y, nullptr, nullptr}, {1}, {0.1, 1e-5});
    expect_close("batchnorm train, nothing saved", rn.cpu[0], rn.gpu[0], 1e-5, 1e-5);
  }
  for (auto kp : {std::pair<int, int>{2, 2}, {3, 2}, {2, 3}, {7, 1}}) {
    int k = kp.first, s = kp.second;
    Tensor x = randn({2, 3, 7, 9}, rng);
    int64_t Ho = (7 - k) / s + 1, Wo = (9 - k) / s + 1;
    Tensor y = make(DType::F32, {2, 3, Ho, Wo});
    std::string tag = "avgpool k" + std::to_string(k) + " s" + std::to_string(s);
    Run r = RUN(avgpool2d_fwd, {&x}, {&y}, {k, s});
    expect_close(tag + " fwd", r.cpu[0], r.gpu[0], 1e-6, 1e-6);
    Tensor dy = randn({2, 3, Ho, Wo}, rng), dx = make(DType::F32, {2, 3, 7, 9});
    Run rb = RUN(avgpool2d_bwd, {&dy}, {&dx}, {k, s});
    expect_close(tag + " bwd", rb.cpu[0], rb.gpu[0], 1e-6, 1e-6);
  }
}

void test_image() {
  Rng rng(11);
  struct Case {
    int64_t H, W, C, H2, W2;
    double box[4];  // NAN: the whole image
  } cases[] = {{37, 29, 3, 13, 11, {NAN}}, {20, 16, 3, 45, 33, {NAN}},     {31, 31, 1, 31, 31, {NAN}},
               {30, 40, 3, 30, 17, {NAN}}, {30, 40, 3, 11, 40, {NAN}},     {50, 60, 3, 24, 24, {5.5, 3.25, 47.0, 44.5}},
               {24, 24, 4, 24, 24, {1, 0, 24, 24}}, {64, 48, 3, 7, 5, {NAN}}};
  for (auto c : cases) {
    // The source is a crop of a larger image, so its rows are strided.
    Tensor big = make(DType::U8, {c.H + 3, c.W + 5, c.C}, 0);
    for (int64_t i = 0; i < big.numel(); i++) big.set(i, rng.integer(0, 255));
    Tensor src = big;
    src.shape = {c.H, c.W, c.C};
    src.offset = (2 * (c.W + 5) + 4) * c.C;
    Tensor dst = make(DType::U8, {c.H2, c.W2, c.C}, 0);
    double box[4] = {c.box[0], c.box[1], c.box[2], c.box[3]};
    if (std::isnan(box[0])) box[0] = 0, box[1] = 0, box[2] = double(c.W), box[3] = double(c.H);
    std::string tag = "resample " + std::to_string(c.H) + "x" + std::to_string(c.W) + "x" + std::to_string(c.C) +
                      " -> " + std::to_string(c.H2) + "x" + std::to_string(c.W2);
    Run r = RUN(resample_bicubic, {&src}, {&dst}, {}, {box[0], box[1], box[2], box[3]});
    expect_bytes(tag, r.cpu[0], r.gpu[0]);
  }
  Tensor img = make(DType::U8, {9, 11, 3}, 0);
  for (int64_t i = 0; i < img.numel(); i++) img.set(i, rng.integer(0, 255));
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor out = make(dt, {3, 9, 11});
    Run r = RUN(image_normalize, {&img}, {&out}, {},
                {0.48145466, 0.4578275, 0.40821073, 0.26862954, 0.26130258, 0.27577711});
    expect_bytes(std::string("image_normalize ") + dtype_name(dt), r.cpu[0], r.gpu[0]);
  }
}

// bfloat16 operands, which only the CUDA kernels take: compared with the CPU kernel on float32
// copies of the same (bf16-rounded) values; the output's bf16 rounding bounds the difference.
Tensor as(DType dt, const Tensor& t) {
  Tensor r = make(dt, t.shape, 0);
  for (int64_t i = 0; i < t.numel(); i++) r.set(i, t.get(i));
  return r;
}
void test_bf16() {
  Rng rng(12);
  const double tol = 1.0 / 128;  // two bf16 ulps
  {
    Tensor a = as(DType::BF16, randn({4, 6}, rng)), b = randn({4, 6}, rng);
    Tensor y32 = make(DType::F32, {4, 6}), y16 = make(DType::BF16, {4, 6});
    Tensor a32 = as(DType::F32, a);
    cpu_binary(args_of("binary", {&a32, &b}, {&y32}, {int(BinaryKind::Mul)}));
    cuda_binary(args_of("binary", {&a, &b}, {&y16}, {int(BinaryKind::Mul)}));
    expect_close("bf16 binary", y32, y16, 1e-6, tol);
  }
  for (int k : {int(UnaryKind::QuickGelu), int(UnaryKind::Gelu), int(UnaryKind::Tanh)}) {
    Tensor x = as(DType::BF16, randn({300}, rng, -4, 4)), x32 = as(DType::F32, x);
    Tensor y32 = make(DType::F32, {300}), y = make(DType::F32, {300});
    cpu_unary(args_of("unary", {&x32}, {&y32}, {k}));
    cuda_unary(args_of("unary", {&x}, {&y}, {k}));
    expect_close("bf16 unary kind " + std::to_string(k), y32, y, 1e-6, 2e-6);
  }
  {
    Tensor x = as(DType::BF16, randn({9, 96}, rng, -3, 5)), x32 = as(DType::F32, x);
    Tensor w = randn({96}, rng, 0.5, 1.5), b = randn({96}, rng);
    Tensor y32 = make(DType::F32, {9, 96}), y = make(DType::BF16, {9, 96});
    Tensor m32 = make(DType::F32, {9}), r32 = make(DType::F32, {9});
    Tensor m = make(DType::F32, {9}), r = make(DType::F32, {9});
    cpu_layernorm_fwd(args_of("layernorm_fwd", {&x32, &w, &b}, {&y32, &m32, &r32}, {}, {1e-5}));
    cuda_layernorm_fwd(args_of("layernorm_fwd", {&x, &w, &b}, {&y, &m, &r}, {}, {1e-5}));
    expect_close("bf16 layernorm y", y32, y, 1e-2, tol);
    expect_close("bf16 layernorm rstd", r32, r, 1e-6, 1e-5);
  }
  {
    Tensor x = as(DType::BF16, randn({2, 5, 40}, rng, -5, 5)), x32 = as(DType::F32, x);
    Tensor y32 = make(DType::F32, {2, 5, 40}), y = make(DType::BF16, {2, 5, 40});
    cpu_softmax_fwd(args_of("softmax_fwd", {&x32, nullptr}, {&y32}, {1}));
    cuda_softmax_fwd(args_of("softmax_fwd", {&x, nullptr}, {&y}, {1}));
    expect_close("bf16 softmax", y32, y, 1e-6, tol);
  }
  {
    Tensor x = as(DType::BF16, randn({2, 3, 8, 8}, rng)), w = as(DType::BF16, randn({5, 3, 3, 3}, rng, -0.5, 0.5));
    Tensor x32 = as(DType::F32, x), w32 = as(DType::F32, w);
    Tensor y32 = make(DType::F32, {2, 5, 8, 8}), y = make(DType::F32, {2, 5, 8, 8});
    cpu_conv2d_fwd(args_of("conv2d_fwd", {&x32, &w32, nullptr}, {&y32}, {1, 1}));
    cuda_conv2d_fwd(args_of("conv2d_fwd", {&x, &w, nullptr}, {&y}, {1, 1}));
    expect_close("bf16 conv2d_fwd", y32, y, 1e-4, 1e-4);
  }
  {
    // All three directions with bf16 storage everywhere (outputs, bias, accumulated gradients),
    // stride 2 and padding, against the CPU kernels on float32 copies of the same values. This
    // build runs the ops' fp32 kernels; the tensor-core kernels are checked in emu_test.cpp.
    const int64_t N = 2, C = 3, H = 9, W = 8, O = 5, k = 3, s = 2, p = 1;
    const int64_t Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    Tensor x = as(DType::BF16, randn({N, C, H, W}, rng)), w = as(DType::BF16, randn({O, C, k, k}, rng, -0.5, 0.5));
    Tensor b = as(DType::BF16, randn({O}, rng)), dy = as(DType::BF16, randn({N, O, Ho, Wo}, rng));
    Tensor x32 = as(DType::F32, x), w32 = as(DType::F32, w), b32 = as(DType::F32, b), dy32 = as(DType::F32, dy);
    Tensor y32 = make(DType::F32, {N, O, Ho, Wo}), y = make(DType::BF16, {N, O, Ho, Wo});
    cpu_conv2d_fwd(args_of("conv2d_fwd", {&x32, &w32, &b32}, {&y32}, {s, p}));
    cuda_conv2d_fwd(args_of("conv2d_fwd", {&x, &w, &b}, {&y}, {s, p}));
    expect_close("bf16 conv2d_fwd s2 bias ->bf16", y32, y, 1e-3, tol);
    Tensor dx32 = make(DType::F32, {N, C, H, W}), dx = make(DType::BF16, {N, C, H, W});
    cpu_conv2d_bwd_data(args_of("conv2d_bwd_data", {&dy32, &w32}, {&dx32}, {s, p}));
    cuda_conv2d_bwd_data(args_of("conv2d_bwd_data", {&dy, &w}, {&dx}, {s, p}));
    expect_close("bf16 conv2d_bwd_data s2 ->bf16", dx32, dx, 1e-3, tol);
    Tensor dw = as(DType::BF16, randn({O, C, k, k}, rng)), db = as(DType::BF16, randn({O}, rng));
    Tensor dw32 = as(DType::F32, dw), db32 = as(DType::F32, db);
    cpu_conv2d_bwd_weight(args_of("conv2d_bwd_weight", {&dy32, &x32}, {&dw32, &db32}, {s, p}));
    cuda_conv2d_bwd_weight(args_of("conv2d_bwd_weight", {&dy, &x}, {&dw, &db}, {s, p}));
    expect_close("bf16 conv2d_bwd_weight s2 dw (accumulated)", dw32, dw, 1e-3, tol);
    expect_close("bf16 conv2d_bwd_weight s2 dbias (accumulated)", db32, db, 1e-3, tol);
    // allow_tf32 (ints[2]) is accepted as the gemm op's is; the result stays within tf32 of float32
    Tensor yt = make(DType::F32, {N, O, Ho, Wo});
    cuda_conv2d_fwd(args_of("conv2d_fwd", {&x32, &w32, &b32}, {&yt}, {s, p, 1}));
    expect_close("conv2d_fwd allow_tf32", y32, yt, 1e-2, 5e-3);
  }
  {
    Tensor g = as(DType::BF16, randn({515}, rng)), g32 = as(DType::F32, g);
    Tensor p = randn({515}, rng), m = randn({515}, rng, -0.01, 0.01), v = randn({515}, rng, 0, 0.01);
    Tensor pc = p.clone(), mc = m.clone(), vc = v.clone();
    std::vector<double> hyper = {1e-3, 0.9, 0.98, 1e-6, 0.2, 0.1, 0.02};
    cpu_adamw(args_of("adamw", {&g32}, {&pc, &mc, &vc}, {}, hyper));
    cuda_adamw(args_of("adamw", {&g}, {&p, &m, &v}, {}, hyper));
    expect_close("bf16-grad adamw param", pc, p, 1e-7, 1e-6);
  }
}

}  // namespace

int main() {
  alarm(900);  // a divergent barrier or shuffle hangs the emulation: fail instead of waiting forever
  struct {
    const char* name;
    void (*fn)();
  } groups[] = {{"fill/copy", test_fill_copy},    {"binary/affine", test_binary_affine},
                {"unary", test_unary},            {"reduce/argmax", test_reduce_argmax},
                {"index", test_index},            {"norms", test_norms},
                {"softmax", test_softmax},        {"loss/optim", test_loss_optim},
                {"conv", test_conv},              {"batchnorm/pool", test_batchnorm_pool},
                {"image", test_image},            {"bfloat16", test_bf16}};
  for (auto& g : groups) {
    int before = g_failures;
    try {
      g.fn();
    } catch (const std::exception& e) {
      fail(std::string(g.name) + ": unexpected exception: " + e.what());
    }
    std::printf("%-16s %s\n", g.name, g_failures == before ? "ok" : "FAILED");
    std::fflush(stdout);
  }
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
