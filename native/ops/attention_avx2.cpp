// The attention kernels compiled for AVX2 + FMA: 8-float ymm vectors, two per 16-column chunk,
// 4 query rows per block (8 accumulators of the 16 registers).
#define ATTN_ISA avx2
#define ATTN_NAME "avx2"
#define ATTN_VEC 8
#define ATTN_UNROLL 2
#define ATTN_ROWS 4
#define ATTN_KERNELS kernels_avx2
#include "attention_impl.h"
