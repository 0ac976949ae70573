// The CUDA device runtime as the rest of native/ sees it. A CPU-only build links runtime_none.cpp,
// where compiled() is false and everything else throws; a CUDA build links runtime.cu.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tsclip::cuda {

struct DeviceInfo {
  std::string name;
  size_t total_memory = 0;
  int major = 0, minor = 0, multiprocessors = 0;
};
struct MemoryStats {
  size_t reserved = 0;  // held by the caching allocator
  size_t used = 0;      // handed out to live tensors
  size_t peak_used = 0;
};

bool compiled();
// Devices visible at run time; an empty list fills `why` (no driver, no device, ...).
std::vector<DeviceInfo> devices(std::string* why);
bool available();  // compiled() and at least one device

void* alloc(size_t bytes);  // from the caching allocator; an out-of-memory error says asked and free
void free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_on_device(void* dst, const void* src, size_t bytes);
void synchronize();
MemoryStats memory_stats();
void empty_cache();

}  // namespace tsclip::cuda
