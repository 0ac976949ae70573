// The attention kernels compiled for AVX2 + FMA (16-float vectors are ymm register pairs).
#define ATTN_ISA avx2
#define ATTN_NAME "avx2"
#define ATTN_VEC 8
#define ATTN_UNROLL 2
#define ATTN_ROWS 4
#define ATTN_KERNELS kernels_avx2
#include "attention_impl.h"
