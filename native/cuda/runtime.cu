// The CUDA device runtime: device discovery, the op stream, a caching allocator, pinned staging for
// host copies, and the error flag kernels use to report bad input. Device 0 only for now.
//
// Allocator: sizes are rounded up to size classes and freed blocks go back to a per-class free list
// instead of cudaFree, so steady-state training never calls cudaMalloc. Reuse is safe without
// events because every op and copy runs on the one stream: a block freed by the host and handed out
// again is only touched by work enqueued after everything that used it before.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "runtime.h"

namespace tsclip::cuda {
namespace {

constexpr size_t kStagingBytes = size_t(4) << 20;  // per pinned buffer; two alternate

struct State {
  std::mutex mu;  // device init and allocator
  bool ready = false;
  int device = 0;
  cudaStream_t stream = nullptr;
  int sms = 0;

  std::unordered_map<size_t, std::vector<void*>> free_bins;  // class size -> cached blocks
  std::unordered_map<void*, size_t> live;                     // handed out: pointer -> class size
  size_t reserved = 0, used = 0, peak = 0;

  std::mutex copy_mu;  // the staging buffers
  void* staging[2] = {nullptr, nullptr};
  cudaEvent_t staged[2] = {nullptr, nullptr};  // last transfer through each staging buffer

  int64_t* flag_dev = nullptr;
  int64_t* flag_host = nullptr;  // pinned
};

// Never destroyed: at process exit the CUDA runtime may already be gone, and the OS reclaims all.
State& state() {
  static State* s = new State;
  return *s;
}

std::string short_file(const char* file) {
  const char* slash = std::strrchr(file, '/');
  return slash ? slash + 1 : file;
}

std::string describe(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

std::string mib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1024.0 * 1024.0));
  return buf;
}

// Selects the device on the calling thread (the current device is per host thread in CUDA).
void select_device(State& s) {
  thread_local int selected = -1;
  if (selected == s.device) return;
  CUDA_CHECK(cudaSetDevice(s.device));
  selected = s.device;
}

void init_locked(State& s) {
  if (s.ready) return;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("CUDA is not usable: " + describe(e));
  }
  if (n == 0) throw Error("CUDA is not usable: no CUDA device found");
  select_device(s);
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, s.device));
  s.sms = p.multiProcessorCount > 0 ? p.multiProcessorCount : 1;
  // Non-blocking: work on the legacy default stream (none of ours) never serialises with ops.
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMalloc(&s.flag_dev, sizeof(int64_t)));
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.flag_host), sizeof(int64_t), cudaHostAllocDefault));
  for (int k = 0; k < 2; k++) CUDA_CHECK(cudaEventCreateWithFlags(&s.staged[k], cudaEventDisableTiming));
  s.ready = true;
}

State& ready_state() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    init_locked(s);
  }
  select_device(s);
  return s;
}

// Size classes: 512-byte minimum, then four steps per power of two (at most 25% waste), and
// sixteen steps above 16 MiB where a quarter would waste a lot.
size_t size_class(size_t n) {
  if (n <= 512) return 512;
  int p = 63 - __builtin_clzll(static_cast<unsigned long long>(n - 1));  // 2^p < n <= 2^(p+1)
  size_t base = size_t(1) << p;
  size_t step = base >= (size_t(16) << 20) ? base / 16 : base / 4;
  return (n + step - 1) / step * step;
}

void release_cache_locked(State& s) {
  bool any = false;
  for (auto& bin : s.free_bins) any |= !bin.second.empty();
  if (!any) return;
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  for (auto& bin : s.free_bins) {
    for (void* p : bin.second) {
      CUDA_CHECK(cudaFree(p));
      s.reserved -= bin.first;
    }
  }
  s.free_bins.clear();
}

__global__ void set_flag_kernel(int64_t* flag, int64_t v) { *flag = v; }

}  // namespace

[[noreturn]] void raise_error(cudaError_t err, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so later calls do not report it again
  throw Error("CUDA error " + describe(err) + " in " + expr + " at " + short_file(file) + ":" + std::to_string(line));
}

cudaStream_t stream() { return ready_state().stream; }
int sm_count() { return ready_state().sms; }

int64_t* flag_device() { return ready_state().flag_dev; }

void reset_flag(int64_t value) {
  State& s = ready_state();
  cuda::launch(set_flag_kernel, 1, 1, 0, s.stream, s.flag_dev, value);
}

int64_t read_flag() {
  State& s = ready_state();
  CUDA_CHECK(cudaMemcpyAsync(s.flag_host, s.flag_dev, sizeof(int64_t), cudaMemcpyDeviceToHost, s.stream));
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  return *s.flag_host;
}

bool compiled() { return true; }

std::vector<DeviceInfo> devices(std::string* why) {
  std::vector<DeviceInfo> out;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = describe(e);
    return out;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return out;
  }
  for (int i = 0; i < n; i++) {
    cudaDeviceProp p{};
    e = cudaGetDeviceProperties(&p, i);
    if (e != cudaSuccess) {
      cudaGetLastError();
      if (why) *why = "device " + std::to_string(i) + ": " + describe(e);
      continue;
    }
    DeviceInfo d;
    d.name = p.name;
    d.total_memory = p.totalGlobalMem;
    d.major = p.major;
    d.minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    out.push_back(d);
  }
  return out;
}

bool available() {
  static const bool ok = [] {
    std::string why;
    return !devices(&why).empty();
  }();
  return ok;
}

void* alloc(size_t bytes) {
  State& s = ready_state();
  std::lock_guard<std::mutex> lock(s.mu);
  size_t c = size_class(bytes);
  void* p = nullptr;
  auto bin = s.free_bins.find(c);
  if (bin != s.free_bins.end() && !bin->second.empty()) {
    p = bin->second.back();
    bin->second.pop_back();
  } else {
    cudaError_t e = cudaMalloc(&p, c);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cache_locked(s);  // cached blocks of other sizes may make room
      e = cudaMalloc(&p, c);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      throw Error("CUDA out of memory: asked for " + std::to_string(bytes) + " bytes (" + mib(bytes) + "), " +
                  std::to_string(free_b) + " bytes (" + mib(free_b) + ") free of " + mib(total_b) +
                  "; tensors of this process hold " + mib(s.used));
    }
    if (e != cudaSuccess) raise_error(e, "cudaMalloc", __FILE__, __LINE__);
    s.reserved += c;
  }
  s.live.emplace(p, c);
  s.used += c;
  s.peak = std::max(s.peak, s.used);
  return p;
}

void free(void* p) {
  if (!p) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.live.find(p);
  if (it == s.live.end()) throw Error("CUDA free of a pointer that the allocator did not hand out");
  size_t c = it->second;
  s.live.erase(it);
  s.used -= c;
  s.free_bins[c].push_back(p);
}

// Host -> device through the pinned buffers: the copy into one buffer overlaps the DMA out of the
// other. Returns once the data is on the device.
void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  State& s = ready_state();
  std::lock_guard<std::mutex> lock(s.copy_mu);
  for (int k = 0; k < 2; k++)
    if (!s.staging[k]) CUDA_CHECK(cudaHostAlloc(&s.staging[k], kStagingBytes, cudaHostAllocDefault));
  auto* d = static_cast<uint8_t*>(dst);
  auto* h = static_cast<const uint8_t*>(src);
  int k = 0;
  for (size_t off = 0; off < bytes; off += kStagingBytes, k ^= 1) {
    size_t n = std::min(kStagingBytes, bytes - off);
    CUDA_CHECK(cudaEventSynchronize(s.staged[k]));  // the DMA that last read this buffer is done
    std::memcpy(s.staging[k], h + off, n);
    CUDA_CHECK(cudaMemcpyAsync(d + off, s.staging[k], n, cudaMemcpyHostToDevice, s.stream));
    CUDA_CHECK(cudaEventRecord(s.staged[k], s.stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

// Device -> host: chunk i+1 is in flight while chunk i is copied out of its pinned buffer.
void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  State& s = ready_state();
  std::lock_guard<std::mutex> lock(s.copy_mu);
  for (int k = 0; k < 2; k++)
    if (!s.staging[k]) CUDA_CHECK(cudaHostAlloc(&s.staging[k], kStagingBytes, cudaHostAllocDefault));
  auto* h = static_cast<uint8_t*>(dst);
  auto* d = static_cast<const uint8_t*>(src);
  size_t chunks = (bytes + kStagingBytes - 1) / kStagingBytes;
  auto chunk_len = [&](size_t i) { return std::min(kStagingBytes, bytes - i * kStagingBytes); };
  for (size_t i = 0; i <= chunks; i++) {
    if (i < chunks) {
      int k = int(i & 1);
      CUDA_CHECK(cudaMemcpyAsync(s.staging[k], d + i * kStagingBytes, chunk_len(i), cudaMemcpyDeviceToHost, s.stream));
      CUDA_CHECK(cudaEventRecord(s.staged[k], s.stream));
    }
    if (i > 0) {
      int k = int((i - 1) & 1);
      CUDA_CHECK(cudaEventSynchronize(s.staged[k]));
      std::memcpy(h + (i - 1) * kStagingBytes, s.staging[k], chunk_len(i - 1));
    }
  }
}

void copy_on_device(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  State& s = ready_state();
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s.stream));
}

void synchronize() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.ready) return;  // nothing was ever enqueued
  }
  select_device(s);
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

MemoryStats memory_stats() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  MemoryStats m;
  m.reserved = s.reserved;
  m.used = s.used;
  m.peak_used = s.peak;
  return m;
}

void empty_cache() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.ready) return;
  select_device(s);
  release_cache_locked(s);
}

}  // namespace tsclip::cuda
