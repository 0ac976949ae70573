#include "backend.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
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

// Host memory: blocks from 16 KiB up are cached by size class and reused, since a model allocates
// the same activation sizes every step. Going back to malloc each time either page-faults fresh
// mappings in (slow) or fragments the heap so that a training loop's memory creeps up. Under
// Node, malloc mapped a [50, 768] activation (150 KiB) afresh for every op: 20-40 page faults,
// several times the cost of the op itself.
namespace {
constexpr size_t kCacheMin = 16 * 1024;
constexpr size_t kCacheMax = size_t(2) << 30;  // cached bytes kept at most

size_t size_class(size_t n) {
  if (n < kCacheMin) return (n + 63) / 64 * 64;
  // Four classes per power of two: at most 25% slack.
  size_t p = size_t(1) << (63 - __builtin_clzll(n));
  size_t q = p / 4;
  return (n + q - 1) / q * q;
}

struct HostCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;
  std::unordered_map<void*, size_t> sizes;
  size_t cached = 0;

  void* take(size_t cls) {
    std::lock_guard<std::mutex> lk(mu);
    auto it = free_blocks.find(cls);
    if (it == free_blocks.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached -= cls;
    return p;
  }
  void note(void* p, size_t cls) {
    std::lock_guard<std::mutex> lk(mu);
    sizes[p] = cls;
  }
  // Returns false when the block is small or the cache is full: the caller frees it.
  bool give(void* p) {
    std::lock_guard<std::mutex> lk(mu);
    auto it = sizes.find(p);
    if (it == sizes.end()) return false;
    size_t cls = it->second;
    if (cached + cls > kCacheMax) {
      sizes.erase(it);
      return false;
    }
    free_blocks[cls].push_back(p);
    cached += cls;
    return true;
  }
};
HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: frees may come during exit
  return *c;
}
}  // namespace

void* device_alloc(Device d, size_t bytes) {
  if (d == Device::CUDA) return cuda::alloc(bytes);
  size_t cls = size_class(bytes ? bytes : 64);
  if (cls >= kCacheMin) {
    if (void* p = host_cache().take(cls)) return p;
  }
  void* p = std::aligned_alloc(64, cls);
  if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  if (cls >= kCacheMin) host_cache().note(p, cls);
  return p;
}

void device_free(Device d, void* p) {
  if (!p) return;
  if (d == Device::CUDA) return cuda::free(p);
  if (!host_cache().give(p)) std::free(p);
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
