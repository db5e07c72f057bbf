// The CPU LUT-GEMM kernels compiled for the compiler's baseline ISA (the portable path).
#include <cstdint>
#include <cstdlib>
#if defined(__AVX2__) || defined(__FMA__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "lut_gemm_cpu.h"

#define APPMULT_CPU_NS appmult_cpu_portable
#include "lut_gemm_cpu_kernels.h"
