// CUDA LUT-GEMM kernels (no torch includes; compiled by lut_gemm_cuda.cu).
//
// One tiling for the three products: a 64 x 64 output tile per block of 256 threads, 4 x 4
// outputs per thread, the reduction walked in steps of 32 through shared-memory code/gradient
// tiles. Tables are (2**bits_a, 2**bits_b): entry (u, v) at u << bits_b | v, u a code of the row
// operand a, v of the column operand w; codes enter the shared-memory tiles masked to their
// width, so no index ever leaves the table. The multiplier table lives in shared memory:
//   forward: 16-bit entries (T - offset, exact when max(T) - min(T) < 2**16; the offset is added
//            back as K * offset at the end, modulo 2**32), else the int32 table read through the
//            read-only cache (the exact slow path);
//   dA, dW:  float32 entries in shared memory for bits_a + bits_b <= 14 (64 KB), read through
//            the read-only cache above (256 KB at 8 x 8 does not fit).
// A product's reduction can be split over gridDim.z to fill the GPU when the output is small;
// split partial sums are combined with atomicAdd (integer adds wrap, so the forward stays exact).
#pragma once

#include <cstdint>

#include "cuda_launch.h"

namespace appmult_cuda {

constexpr int kThreads = 256;  // 16 x 16 threads
constexpr int kTile = 64;      // output tile edge
constexpr int kStep = 32;      // reduction step per shared-memory tile
constexpr int kPer = 4;        // outputs per thread along each tile edge

__device__ __forceinline__ uint32_t byte_of(uint32_t word, int i) { return (word >> (8 * i)) & 0xffu; }

// The largest code of a `bits`-bit operand (its mask).
__device__ __forceinline__ uint8_t code_mask(int bits) {
  return static_cast<uint8_t>((1u << bits) - 1u);
}

// Y[b, m, n] = SUM_k T[a[b, m, k], w[b, k, n]] over the reduction range of split blockIdx.z % splits.
template <bool kShared16>
__global__ void __launch_bounds__(kThreads) lut_fwd_kernel(
    const uint8_t* __restrict__ a, const uint8_t* __restrict__ w, const int32_t* __restrict__ table,
    int bits_a, int bits_b, int M, int K, int N, int splits, int chunk, uint32_t offset,
    int32_t* __restrict__ y) {
  APPMULT_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ __align__(16) uint8_t As[kStep][kTile];  // As[t][row]
  __shared__ __align__(16) uint8_t Ws[kStep][kTile];  // Ws[t][col]
  uint16_t* lut = reinterpret_cast<uint16_t*>(smem);
  const int b = blockIdx.z / splits, split = blockIdx.z % splits;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  const int kbeg = split * chunk, kend = min(K, kbeg + chunk);
  a += static_cast<int64_t>(b) * M * K;
  w += static_cast<int64_t>(b) * K * N;
  y += static_cast<int64_t>(b) * M * N;
  if constexpr (kShared16) {
    for (int i = threadIdx.x; i < (1 << (bits_a + bits_b)); i += kThreads)
      lut[i] = static_cast<uint16_t>(table[i]);
  }
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  uint32_t acc[kPer][kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int j = 0; j < kPer; ++j) acc[i][j] = 0u;
  for (int k0 = kbeg; k0 < kend; k0 += kStep) {
    const int kc = min(kStep, kend - k0);
    __syncthreads();  // the previous tiles are consumed (and the table is written)
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int r = i / kStep, t = i % kStep, m = m0 + r;
      As[t][r] =
          (m < M && t < kc) ? a[static_cast<int64_t>(m) * K + k0 + t] & code_mask(bits_a) : 0;
    }
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int t = i / kTile, c = i % kTile, n = n0 + c;
      Ws[t][c] =
          (n < N && t < kc) ? w[static_cast<int64_t>(k0 + t) * N + n] & code_mask(bits_b) : 0;
    }
    __syncthreads();
    for (int t = 0; t < kc; ++t) {
      const uint32_t a4 = *reinterpret_cast<const uint32_t*>(&As[t][ty * kPer]);
      const uint32_t w4 = *reinterpret_cast<const uint32_t*>(&Ws[t][tx * kPer]);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const uint32_t row = byte_of(a4, i) << bits_b;
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          const uint32_t idx = row | byte_of(w4, j);
          acc[i][j] += kShared16 ? static_cast<uint32_t>(lut[idx])
                                 : static_cast<uint32_t>(__ldg(table + idx));
        }
      }
    }
  }
  // The 16-bit path stored T - offset: add offset once per product (split 0 holds it).
  const uint32_t shift = (kShared16 && split == 0) ? static_cast<uint32_t>(K) * offset : 0u;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int m = m0 + ty * kPer + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int n = n0 + tx * kPer + j;
      if (n >= N) continue;
      uint32_t* out = reinterpret_cast<uint32_t*>(y + static_cast<int64_t>(m) * N + n);
      if (splits == 1) {
        *out = acc[i][j] + shift;
      } else {
        atomicAdd(out, acc[i][j] + shift);
      }
    }
  }
}

// Copies the float table to shared memory (kShared) and returns where to read it from.
template <bool kShared>
__device__ __forceinline__ const float* stage_float_table(const float* table, int entries_log2,
                                                         float* smem) {
  if constexpr (kShared) {
    for (int i = threadIdx.x; i < (1 << entries_log2); i += kThreads) smem[i] = table[i];
    return smem;
  } else {
    return table;
  }
}

template <bool kShared>
__device__ __forceinline__ float read_table(const float* t, uint32_t idx) {
  return kShared ? t[idx] : __ldg(t + idx);
}

// dA[b, m, k] = SUM_n G[b, m, n] * GA[a[b, m, k], w[b, k, n]]; output tile rows m, cols k.
template <bool kShared>
__global__ void __launch_bounds__(kThreads) lut_grad_a_kernel(
    const float* __restrict__ g, const uint8_t* __restrict__ a, const uint8_t* __restrict__ w,
    const float* __restrict__ ga, int bits_a, int bits_b, int M, int K, int N, int splits,
    int chunk,
    float* __restrict__ da) {
  APPMULT_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ __align__(16) float Gs[kStep][kTile + 4];  // Gs[t][row]
  __shared__ __align__(16) uint8_t Ws[kStep][kTile];    // Ws[t][col] = w[col, t]
  const int b = blockIdx.z / splits, split = blockIdx.z % splits;
  const int m0 = blockIdx.y * kTile, k0 = blockIdx.x * kTile;
  const int nbeg = split * chunk, nend = min(N, nbeg + chunk);
  g += static_cast<int64_t>(b) * M * N;
  a += static_cast<int64_t>(b) * M * K;
  w += static_cast<int64_t>(b) * K * N;
  da += static_cast<int64_t>(b) * M * K;
  const float* lut =
      stage_float_table<kShared>(ga, bits_a + bits_b, reinterpret_cast<float*>(smem));
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  uint32_t row[kPer][kPer];  // table row offset of the fixed activation code of each output
  float acc[kPer][kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int m = m0 + ty * kPer + i;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int k = k0 + tx * kPer + j;
      const uint32_t code =
          (m < M && k < K) ? a[static_cast<int64_t>(m) * K + k] & code_mask(bits_a) : 0u;
      row[i][j] = code << bits_b;
      acc[i][j] = 0.f;
    }
  }
  for (int n0 = nbeg; n0 < nend; n0 += kStep) {
    const int nc = min(kStep, nend - n0);
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int r = i / kStep, t = i % kStep, m = m0 + r;
      Gs[t][r] = (m < M && t < nc) ? g[static_cast<int64_t>(m) * N + n0 + t] : 0.f;
    }
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int c = i / kStep, t = i % kStep, k = k0 + c;
      Ws[t][c] =
          (k < K && t < nc) ? w[static_cast<int64_t>(k) * N + n0 + t] & code_mask(bits_b) : 0;
    }
    __syncthreads();
    for (int t = 0; t < nc; ++t) {
      const float4 g4 = *reinterpret_cast<const float4*>(&Gs[t][ty * kPer]);
      const float gv[kPer] = {g4.x, g4.y, g4.z, g4.w};
      const uint32_t w4 = *reinterpret_cast<const uint32_t*>(&Ws[t][tx * kPer]);
#pragma unroll
      for (int i = 0; i < kPer; ++i)
#pragma unroll
        for (int j = 0; j < kPer; ++j)
          acc[i][j] = fmaf(gv[i], read_table<kShared>(lut, row[i][j] | byte_of(w4, j)), acc[i][j]);
    }
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int m = m0 + ty * kPer + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int k = k0 + tx * kPer + j;
      if (k >= K) continue;
      float* out = da + static_cast<int64_t>(m) * K + k;
      if (splits == 1) {
        *out = acc[i][j];
      } else {
        atomicAdd(out, acc[i][j]);
      }
    }
  }
}

// dW[b, k, n] = SUM_m G[b, m, n] * GW[a[b, m, k], w[b, k, n]]; output tile rows k, cols n.
template <bool kShared>
__global__ void __launch_bounds__(kThreads) lut_grad_w_kernel(
    const float* __restrict__ g, const uint8_t* __restrict__ a, const uint8_t* __restrict__ w,
    const float* __restrict__ gw, int bits_a, int bits_b, int M, int K, int N, int splits,
    int chunk,
    float* __restrict__ dw) {
  APPMULT_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ __align__(16) float Gs[kStep][kTile];    // Gs[t][col] = g[t, col]
  __shared__ __align__(16) uint8_t As[kStep][kTile];  // As[t][row] = a[t, row]
  const int b = blockIdx.z / splits, split = blockIdx.z % splits;
  const int k0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  const int mbeg = split * chunk, mend = min(M, mbeg + chunk);
  g += static_cast<int64_t>(b) * M * N;
  a += static_cast<int64_t>(b) * M * K;
  w += static_cast<int64_t>(b) * K * N;
  dw += static_cast<int64_t>(b) * K * N;
  const float* lut =
      stage_float_table<kShared>(gw, bits_a + bits_b, reinterpret_cast<float*>(smem));
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  uint32_t col[kPer][kPer];  // the fixed weight code of each output
  float acc[kPer][kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = k0 + ty * kPer + i;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int n = n0 + tx * kPer + j;
      col[i][j] =
          (k < K && n < N) ? w[static_cast<int64_t>(k) * N + n] & code_mask(bits_b) : 0u;
      acc[i][j] = 0.f;
    }
  }
  for (int mt = mbeg; mt < mend; mt += kStep) {
    const int mc = min(kStep, mend - mt);
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * kStep; i += kThreads) {
      const int t = i / kTile, c = i % kTile, n = n0 + c, k = k0 + c;
      Gs[t][c] = (t < mc && n < N) ? g[static_cast<int64_t>(mt + t) * N + n] : 0.f;
      As[t][c] =
          (t < mc && k < K) ? a[static_cast<int64_t>(mt + t) * K + k] & code_mask(bits_a) : 0;
    }
    __syncthreads();
    for (int t = 0; t < mc; ++t) {
      const float4 g4 = *reinterpret_cast<const float4*>(&Gs[t][tx * kPer]);
      const float gv[kPer] = {g4.x, g4.y, g4.z, g4.w};
      const uint32_t a4 = *reinterpret_cast<const uint32_t*>(&As[t][ty * kPer]);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const uint32_t row = byte_of(a4, i) << bits_b;
#pragma unroll
        for (int j = 0; j < kPer; ++j)
          acc[i][j] = fmaf(gv[j], read_table<kShared>(lut, row | col[i][j]), acc[i][j]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int k = k0 + ty * kPer + i;
    if (k >= K) continue;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int n = n0 + tx * kPer + j;
      if (n >= N) continue;
      float* out = dw + static_cast<int64_t>(k) * N + n;
      if (splits == 1) {
        *out = acc[i][j];
      } else {
        atomicAdd(out, acc[i][j]);
      }
    }
  }
}

}  // namespace appmult_cuda
