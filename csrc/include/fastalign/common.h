// fastalign/common.h — portability macros shared by the CPU (g++) and CUDA (nvcc) backends.
#pragma once
#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FA_HOST_DEVICE __host__ __device__
#else
#define FA_HOST_DEVICE
#endif
