// The one description of a tensor that kernels see: a raw pointer plus dtype, device, shape and
// element strides. No ownership, no Node types: the TypeScript layer owns memory and passes views.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tsclip {

constexpr int kMaxDims = 8;

enum class DType : int32_t { F32 = 0, BF16 = 1, I32 = 2, U8 = 3 };
enum class Device : int32_t { CPU = 0, CUDA = 1 };

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}
const char* dtype_name(DType t);

// Thrown by kernels and backends; the bindings turn it into a JS Error carrying the message.
struct Error : std::runtime_error {
  explicit Error(const std::string& m) : std::runtime_error(m) {}
};

struct TensorRef {
  void* data = nullptr;  // already offset to the first element
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements; 0 means broadcast

  bool defined() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
  }
  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  int64_t stride(int d) const { return strides[d < 0 ? d + ndim : d]; }
  bool contiguous() const {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
      if (shape[i] != 1 && strides[i] != s) return false;
      s *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  std::string describe() const;  // "f32[2,3]"
};

// Arguments of one op call. Which inputs, outputs, ints and floats an op takes is written next to
// its line in ops.def. An optional input is passed as an undefined TensorRef.
struct OpArgs {
  const char* op = "";
  std::vector<TensorRef> in;
  std::vector<TensorRef> out;
  std::vector<int64_t> ints;
  std::vector<double> floats;

  const TensorRef& input(size_t i) const;
  const TensorRef& output(size_t i) const;
  int64_t i(size_t k) const;
  double f(size_t k) const;
  [[noreturn]] void fail(const std::string& why) const;  // throws "op: why"
  void require(bool ok, const std::string& why) const { if (!ok) fail(why); }
};

using OpFn = void (*)(const OpArgs&);

}  // namespace tsclip
