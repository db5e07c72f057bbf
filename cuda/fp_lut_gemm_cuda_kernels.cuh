// CUDA FP LUT-GEMM kernels and their torch-free launchers (compiled by fp_lut_gemm_cuda.cu, and
// as C++ by the host-emulation tests): one thread per output, 16x16 shared-memory operand tiles,
// the mantissa table in shared memory (64 KiB, int32) when m <= 7, sequential-k float32
// accumulation: bit-identical to appmult_fx/ops/fp_reference.py.
#pragma once

#include <cstdint>

#include "cuda_launch.h"
#include "fp_lut_gemm_common.h"

namespace appmult_fp {

constexpr int kTile = 16;
constexpr int kMaxSharedM = 7;

template <bool kSharedTable>
__global__ void fp_bmm_kernel(const uint32_t* __restrict__ a, const uint32_t* __restrict__ b,
                              const int32_t* __restrict__ table, float* __restrict__ out,
                              int M, int K, int N, int m) {
  APPMULT_DYNAMIC_SHARED(int32_t, shared_table);
  __shared__ uint32_t tile_a[kTile][kTile];
  __shared__ uint32_t tile_b[kTile][kTile];
  const int batch = blockIdx.z;
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int col = blockIdx.x * kTile + threadIdx.x;
  const int32_t* lut = table;
  if (kSharedTable) {
    const int entries = 1 << (2 * m);
    for (int t = threadIdx.y * kTile + threadIdx.x; t < entries; t += kTile * kTile) {
      shared_table[t] = table[t];
    }
    lut = shared_table;
  }
  a += int64_t(batch) * M * K;
  b += int64_t(batch) * K * N;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    const int ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
    tile_a[threadIdx.y][threadIdx.x] = (row < M && ka < K) ? a[int64_t(row) * K + ka] : 0u;
    tile_b[threadIdx.y][threadIdx.x] = (kb < K && col < N) ? b[int64_t(kb) * N + col] : 0u;
    __syncthreads();
    const int kend = min(kTile, K - k0);
    for (int kk = 0; kk < kend; ++kk) {
      const uint32_t p = fp_lut_product(tile_a[threadIdx.y][kk], tile_b[kk][threadIdx.x], lut, m);
      acc = __fadd_rn(acc, __uint_as_float(p));
    }
    __syncthreads();
  }
  if (row < M && col < N) out[(int64_t(batch) * M + row) * N + col] = acc;
}

__global__ void cast_kernel(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, int64_t n,
                            int m, bool nearest) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = fp_cast(src[i], m, nearest);
}

// dst[i] = src[i] cast to (1, 8, m) (float32 bit patterns; n < 2**31 * 256).
inline cudaError_t launch_fp_cast(const uint32_t* src, uint32_t* dst, int64_t n, int m,
                                  bool nearest, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  APPMULT_LAUNCH(cast_kernel, unsigned((n + 255) / 256), 256, 0, stream, src, dst, n, m, nearest);
  return cudaGetLastError();
}

// out [B, M, N] = sequential-k float32 sum of LUT products of a [B, M, K] and b [B, K, N]
// (operands already cast to (1, 8, m); table holds 2**(2m) int32 entries).
inline cudaError_t launch_fp_bmm(const uint32_t* a, const uint32_t* b, const int32_t* table,
                                 int B, int M, int K, int N, int m, float* out,
                                 cudaStream_t stream) {
  if (B == 0 || M == 0 || N == 0) return cudaSuccess;
  const dim3 block(kTile, kTile);
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile), unsigned(B));
  if (m <= kMaxSharedM) {
    const size_t shared = sizeof(int32_t) << (2 * m);
    if (shared > 48 * 1024) {
      const cudaError_t err = cudaFuncSetAttribute(
          fp_bmm_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
      if (err != cudaSuccess) return err;
    }
    APPMULT_LAUNCH(fp_bmm_kernel<true>, grid, block, shared, stream, a, b, table, out, M, K, N, m);
  } else {
    APPMULT_LAUNCH(fp_bmm_kernel<false>, grid, block, 0, stream, a, b, table, out, M, K, N, m);
  }
  return cudaGetLastError();
}

}  // namespace appmult_fp
