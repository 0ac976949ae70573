// The backends behind the op list: memory per device and the dispatch of an op to its kernel.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "tensor.h"

namespace tsclip {

int op_count();
const char* op_name(int id);
// Runs op `id` on the device of its tensors (all must agree) and checks the arguments' devices.
void run_op(int id, OpArgs& args);

void* device_alloc(Device d, size_t bytes);  // 64-byte aligned on the CPU; never returns null
void device_free(Device d, void* p);
// Copies bytes between any two devices (synchronous from the host's point of view).
void device_copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes);
void device_synchronize(Device d);

}  // namespace tsclip
