// The attention kernels compiled for AVX-512 (16-float vectors are single zmm registers, so
// 8 query rows per block fit the accumulators in registers).
#define ATTN_ISA avx512
#define ATTN_NAME "avx512"
#define ATTN_VEC 16
#define ATTN_UNROLL 1
#define ATTN_ROWS 8
#define ATTN_KERNELS kernels_avx512
#pragma GCC target("prefer-vector-width=512")
#include "attention_impl.h"
