// CUDA kernels for row gathers (embedding lookup, end-of-text pooling) and their scatter-add
// backward. Ids are checked on the device first: a check kernel records the first bad position in
// the runtime's flag, the main kernel does nothing when the flag is set, and the host reads the flag
// and throws the same message as the CPU kernel. Nothing is read or written out of range.
#include <climits>
#include <cstdint>

#include "../cuda/common.cuh"
#include "../cuda/runtime.h"
#include "../tensor.h"

namespace tsclip {
namespace {

constexpr int64_t kNoError = INT64_MAX;

__global__ void check_ids_kernel(const int32_t* id, int64_t m, int64_t rows, int64_t* flag) {
  CUDA_GRID_LOOP(i, m) {
    int32_t v = id[i];
    if (v < 0 || v >= rows) atomicMin(reinterpret_cast<long long*>(flag), (long long)i);
  }
}

// W: the word type rows are copied in (16, 4 or 1 bytes, chosen from the row size and alignment).
template <class W>
__global__ void gather_kernel(const W* table, const int32_t* id, W* y, int64_t m, int64_t words,
                              const int64_t* flag) {
  if (*flag != kNoError) return;
  int64_t n = m * words;
  CUDA_GRID_LOOP(e, n) {
    int64_t i = e / words, c = e - i * words;
    y[e] = table[int64_t(id[i]) * words + c];
  }
}

__global__ void scatter_add_kernel(const float* dy, const int32_t* id, float* dt, int64_t m, int64_t dim,
                                   const int64_t* flag) {
  if (*flag != kNoError) return;
  int64_t n = m * dim;
  CUDA_GRID_LOOP(e, n) {
    int64_t i = e / dim, c = e - i * dim;
    atomicAdd(dt + int64_t(id[i]) * dim + c, dy[e]);  // repeated ids meet here; order is free
  }
}

// Enqueues the check; returns after the main kernel has been enqueued by `launch`, then reads the
// flag and throws on a bad id.
template <class Launch>
void with_checked_ids(const OpArgs& a, const TensorRef& idx, int64_t rows, Launch&& launch) {
  a.require(idx.dtype == DType::I32 && idx.contiguous(), "indices must be contiguous int32, got " + idx.describe());
  int64_t m = idx.numel();
  if (m == 0) return;
  cuda::reset_flag(kNoError);
  cuda::launch(check_ids_kernel, cuda::grid_for(m), cuda::kBlock, 0, cuda::stream(), idx.ptr<int32_t>(), m, rows,
      cuda::flag_device());
  launch(cuda::flag_device());
  int64_t bad = cuda::read_flag();  // synchronizes: an out-of-range id must throw here
  if (bad == kNoError) return;
  int32_t v = 0;
  cuda::copy_to_host(&v, idx.ptr<int32_t>() + bad, sizeof v);
  a.fail("index " + std::to_string(v) + " at position " + std::to_string(bad) + " is out of range [0, " +
         std::to_string(rows) + ")");
}

bool aligned(const void* p, size_t k) { return reinterpret_cast<uintptr_t>(p) % k == 0; }

}  // namespace

void cuda_gather_rows(const OpArgs& a) {
  const TensorRef &table = a.input(0), &idx = a.input(1), &y = a.output(0);
  a.require(table.ndim == 2 && table.contiguous() && y.contiguous(), "table must be a contiguous [rows, dim] tensor");
  a.require(table.dtype == y.dtype, "output dtype must match the table");
  int64_t rows = table.shape[0], dim = table.shape[1], m = idx.numel();
  a.require(y.numel() == m * dim,
            "output must be [" + std::to_string(m) + "," + std::to_string(dim) + "], got " + y.describe());
  int64_t row_bytes = dim * dtype_size(table.dtype);
  with_checked_ids(a, idx, rows, [&](const int64_t* flag) {
    if (row_bytes == 0) return;
    cudaStream_t st = cuda::stream();
    const int32_t* id = idx.ptr<int32_t>();
    if (row_bytes % 16 == 0 && aligned(table.data, 16) && aligned(y.data, 16)) {
      int64_t w = row_bytes / 16;
      cuda::launch(gather_kernel<uint4>, cuda::grid_for(m * w), cuda::kBlock, 0, st,
          static_cast<const uint4*>(table.data), id, static_cast<uint4*>(y.data), m, w, flag);
    } else if (row_bytes % 4 == 0 && aligned(table.data, 4) && aligned(y.data, 4)) {
      int64_t w = row_bytes / 4;
      cuda::launch(gather_kernel<uint32_t>, cuda::grid_for(m * w), cuda::kBlock, 0, st,
          static_cast<const uint32_t*>(table.data), id, static_cast<uint32_t*>(y.data), m, w, flag);
    } else {
      cuda::launch(gather_kernel<uint8_t>, cuda::grid_for(m * row_bytes), cuda::kBlock, 0, st,
          static_cast<const uint8_t*>(table.data), id, static_cast<uint8_t*>(y.data), m, row_bytes, flag);
    }
  });
}

void cuda_scatter_add_rows(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &idx = a.input(1), &dt = a.output(0);
  a.require(dy.dtype == DType::F32 && dt.dtype == DType::F32, "float32 expected");
  a.require(dt.ndim == 2 && dt.contiguous() && dy.contiguous(), "contiguous tensors expected");
  int64_t rows = dt.shape[0], dim = dt.shape[1], m = idx.numel();
  a.require(dy.numel() == m * dim,
            "gradient must be [" + std::to_string(m) + "," + std::to_string(dim) + "], got " + dy.describe());
  with_checked_ids(a, idx, rows, [&](const int64_t* flag) {
    if (dim == 0) return;
    cuda::launch(scatter_add_kernel, cuda::grid_for(m * dim), cuda::kBlock, 0, cuda::stream(), dy.ptr<float>(),
        idx.ptr<int32_t>(), dt.ptr<float>(), m, dim, flag);
  });
}

}  // namespace tsclip
