#include "backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "cuda/runtime.h"

namespace tsclip {

#define OP(name) void cpu_##name(const OpArgs&);
#include "ops.def"
#undef OP
static const OpFn kCpu[] = {
#define OP(name) cpu_##name,
#include "ops.def"
#undef OP
};
static const char* const kNames[] = {
#define OP(name) #name,
#include "ops.def"
#undef OP
};
constexpr int kOps = int(sizeof(kNames) / sizeof(kNames[0]));
static_assert(sizeof(kCpu) / sizeof(kCpu[0]) == kOps, "every op needs a CPU kernel");

#ifdef TSCLIP_WITH_CUDA
#define OP(name) void cuda_##name(const OpArgs&);
#include "ops.def"
#undef OP
static const OpFn kCuda[] = {
#define OP(name) cuda_##name,
#include "ops.def"
#undef OP
};
static_assert(sizeof(kCuda) / sizeof(kCuda[0]) == kOps, "every op needs a CUDA kernel");
#endif

int op_count() { return kOps; }
const char* op_name(int id) { return id >= 0 && id < kOps ? kNames[id] : "?"; }

void run_op(int id, OpArgs& args) {
  if (id < 0 || id >= kOps) throw Error("unknown op id " + std::to_string(id));
  args.op = kNames[id];
  Device dev = Device::CPU;
  bool first = true;
  auto check = [&](const TensorRef& t) {
    if (!t.defined()) return;
    if (first) dev = t.device, first = false;
    else if (t.device != dev) args.fail("tensors are on different devices");
  };
  for (auto& t : args.in) check(t);
  for (auto& t : args.out) check(t);
  if (dev == Device::CPU) return kCpu[id](args);
#ifdef TSCLIP_WITH_CUDA
  return kCuda[id](args);
#else
  args.fail("CUDA tensors given to a build without CUDA");
#endif
}

void* device_alloc(Device d, size_t bytes) {
  if (d == Device::CUDA) return cuda::alloc(bytes);
  size_t n = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, n ? n : 64);
  if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void device_free(Device d, void* p) {
  if (!p) return;
  if (d == Device::CUDA) return cuda::free(p);
  std::free(p);
}

void device_copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes) {
  if (!bytes) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) std::memcpy(dst, src, bytes);
  else if (dst_dev == Device::CUDA && src_dev == Device::CPU) cuda::copy_to_device(dst, src, bytes);
  else if (dst_dev == Device::CPU && src_dev == Device::CUDA) cuda::copy_to_host(dst, src, bytes);
  else cuda::copy_on_device(dst, src, bytes);
}

void device_synchronize(Device d) {
  if (d == Device::CUDA) cuda::synchronize();
}

}  // namespace tsclip
