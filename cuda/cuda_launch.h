// Kernel launch and dynamic shared memory through macros, so the kernels and host launchers
// compile with nvcc (real CUDA) and with g++ -DAPPMULT_CUDA_HOST_EMULATION (cuda_host_shim.h:
// blocks run in turn on the CPU, a block's threads as OS threads; see tests/ops/test_cuda_emulated.py).
#pragma once

#if defined(APPMULT_CUDA_HOST_EMULATION)
#include "cuda_host_shim.h"
// kernel<<<grid, block, smem, stream>>>(args...)
#define APPMULT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((void)(stream), appmult_emu::launch(kernel, grid, block, smem, __VA_ARGS__))
// extern __shared__ T name[] (the block's dynamic shared memory)
#define APPMULT_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(appmult_emu::dynamic_smem)
#else
#include <cuda_runtime.h>
#define APPMULT_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define APPMULT_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif
