// The attention kernels compiled for AVX-512: 16-float zmm vectors, one per 16-column chunk,
// 8 query rows per block (measured best among 1-2 vectors x 6-12 rows on CLIP shapes).
#define ATTN_ISA avx512
#define ATTN_NAME "avx512"
#define ATTN_VEC 16
#define ATTN_UNROLL 1
#define ATTN_ROWS 8
#define ATTN_KERNELS kernels_avx512
#pragma GCC target("prefer-vector-width=512")
#include "attention_impl.h"
