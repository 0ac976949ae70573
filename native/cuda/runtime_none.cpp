// Linked into CPU-only builds: no CUDA here, and every call that needs it says so.
#include "../tensor.h"
#include "runtime.h"

namespace tsclip::cuda {
namespace {
[[noreturn]] void none() { throw Error("this build of tsclip has no CUDA backend (nvcc was not found or TSCLIP_CUDA=off when it was built)"); }
}  // namespace
bool compiled() { return false; }
std::vector<DeviceInfo> devices(std::string* why) {
  if (why) *why = "CUDA backend not compiled in";
  return {};
}
bool available() { return false; }
void* alloc(size_t) { none(); }
void free(void*) {}
void copy_to_device(void*, const void*, size_t) { none(); }
void copy_to_host(void*, const void*, size_t) { none(); }
void copy_on_device(void*, const void*, size_t) { none(); }
void synchronize() {}
MemoryStats memory_stats() { return {}; }
void empty_cache() {}
}  // namespace tsclip::cuda
