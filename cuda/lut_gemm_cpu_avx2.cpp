// The CPU LUT-GEMM kernels compiled for AVX2 + FMA (selected at run time by lut_gemm_cpu.cpp).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "lut_gemm_cpu.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define APPMULT_CPU_NS appmult_cpu_avx2
#include "lut_gemm_cpu_kernels.h"
#pragma GCC pop_options
#endif
