// CPU kernels for row gathers (embedding lookup, end-of-text pooling) and their scatter-add backward.
#include <cstring>

#include "../cpu/threadpool.h"
#include "../tensor.h"

namespace tsclip {

static void check_ids(const OpArgs& a, const TensorRef& idx, int64_t rows) {
  a.require(idx.dtype == DType::I32 && idx.contiguous(), "indices must be contiguous int32, got " + idx.describe());
  const int32_t* id = idx.ptr<int32_t>();
  for (int64_t i = 0; i < idx.numel(); i++)
    a.require(id[i] >= 0 && id[i] < rows, "index " + std::to_string(id[i]) + " at position " + std::to_string(i) +
                                              " is out of range [0, " + std::to_string(rows) + ")");
}

void cpu_gather_rows(const OpArgs& a) {
  const TensorRef &table = a.input(0), &idx = a.input(1), &y = a.output(0);
  a.require(table.ndim == 2 && table.contiguous() && y.contiguous(), "table must be a contiguous [rows, dim] tensor");
  a.require(table.dtype == y.dtype, "output dtype must match the table");
  int64_t rows = table.shape[0], dim = table.shape[1], m = idx.numel();
  a.require(y.numel() == m * dim, "output must be [" + std::to_string(m) + "," + std::to_string(dim) + "], got " + y.describe());
  check_ids(a, idx, rows);
  const int32_t* id = idx.ptr<int32_t>();
  size_t row_bytes = size_t(dim * dtype_size(table.dtype));
  auto* src = static_cast<const uint8_t*>(table.data);
  auto* dst = static_cast<uint8_t*>(y.data);
  parallel_for(m, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes);
  });
}

void cpu_scatter_add_rows(const OpArgs& a) {
  const TensorRef &dy = a.input(0), &idx = a.input(1), &dt = a.output(0);
  a.require(dy.dtype == DType::F32 && dt.dtype == DType::F32, "float32 expected");
  a.require(dt.ndim == 2 && dt.contiguous() && dy.contiguous(), "contiguous tensors expected");
  int64_t rows = dt.shape[0], dim = dt.shape[1], m = idx.numel();
  a.require(dy.numel() == m * dim, "gradient must be [" + std::to_string(m) + "," + std::to_string(dim) + "], got " + dy.describe());
  check_ids(a, idx, rows);
  const int32_t* id = idx.ptr<int32_t>();
  const float* g = dy.ptr<float>();
  float* t = dt.ptr<float>();
  // Split over columns so that repeated ids never race.
  parallel_for(dim, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = 0; i < m; i++) {
      const float* src = g + i * dim;
      float* dst = t + int64_t(id[i]) * dim;
      for (int64_t c = b; c < e; c++) dst[c] += src[c];
    }
  });
}

}  // namespace tsclip
