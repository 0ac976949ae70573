#include "tensor.h"

namespace tsclip {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "?";
}

std::string TensorRef::describe() const {
  std::string s = dtype_name(dtype);
  s += "[";
  for (int i = 0; i < ndim; i++) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

const TensorRef& OpArgs::input(size_t k) const {
  if (k >= in.size()) fail("missing input " + std::to_string(k));
  return in[k];
}
const TensorRef& OpArgs::output(size_t k) const {
  if (k >= out.size()) fail("missing output " + std::to_string(k));
  return out[k];
}
int64_t OpArgs::i(size_t k) const {
  if (k >= ints.size()) fail("missing integer argument " + std::to_string(k));
  return ints[k];
}
double OpArgs::f(size_t k) const {
  if (k >= floats.size()) fail("missing float argument " + std::to_string(k));
  return floats[k];
}
void OpArgs::fail(const std::string& why) const { throw Error(std::string(op) + ": " + why); }

}  // namespace tsclip
