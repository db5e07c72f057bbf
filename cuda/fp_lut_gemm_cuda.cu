// CUDA FP LUT-GEMM: one thread per output, 16x16 shared-memory operand tiles, the mantissa
// table in shared memory (64 KiB, int32) when m <= 7, sequential-k float32 accumulation:
// bit-identical to appmult_fx/ops/fp_reference.py.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "fp_lut_gemm_common.h"

namespace {

constexpr int kTile = 16;
constexpr int kMaxSharedM = 7;

template <bool kSharedTable>
__global__ void fp_bmm_kernel(const uint32_t* __restrict__ a, const uint32_t* __restrict__ b,
                              const int32_t* __restrict__ table, float* __restrict__ out,
                              int M, int K, int N, int m) {
  extern __shared__ int32_t shared_table[];
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
      const uint32_t p = appmult_fp::fp_lut_product(tile_a[threadIdx.y][kk], tile_b[kk][threadIdx.x], lut, m);
      acc = __fadd_rn(acc, __uint_as_float(p));
    }
    __syncthreads();
  }
  if (row < M && col < N) out[(int64_t(batch) * M + row) * N + col] = acc;
}

__global__ void cast_kernel(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, int64_t n,
                            int m, bool nearest) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = appmult_fp::fp_cast(src[i], m, nearest);
}

torch::Tensor cast(const torch::Tensor& x, int m, bool nearest, cudaStream_t stream) {
  auto xc = x.contiguous();
  auto out = torch::empty_like(xc);
  const int64_t n = xc.numel();
  if (n == 0) return out;
  cast_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(
      reinterpret_cast<const uint32_t*>(xc.data_ptr<float>()),
      reinterpret_cast<uint32_t*>(out.data_ptr<float>()), n, m, nearest);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// operands are cast to (1, 8, m) here (rounding "truncate" or "nearest")
torch::Tensor fp_bmm(torch::Tensor a, torch::Tensor b, torch::Tensor table, int64_t m,
                     const std::string& rounding) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && table.is_cuda(), "expected CUDA tensors");
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, "expected a [B,M,K] and b [B,K,N]");
  TORCH_CHECK(a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32,
              "expected float32 operands");
  TORCH_CHECK(table.scalar_type() == torch::kInt32, "expected an int32 mantissa table");
  TORCH_CHECK(m >= 1 && m <= 11 && table.numel() == (int64_t(1) << (2 * m)),
              "mantissa table size does not match m");
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), "batch/inner dimensions differ");
  TORCH_CHECK(rounding == "truncate" || rounding == "nearest", "rounding must be truncate or nearest");
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool nearest = rounding == "nearest";
  auto ac = cast(a, int(m), nearest, stream), bc = cast(b, int(m), nearest, stream);
  auto tc = table.contiguous();
  auto out = torch::empty({B, M, N}, a.options());
  if (out.numel() == 0) return out;
  const dim3 block(kTile, kTile);
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile), unsigned(B));
  const auto* pa = reinterpret_cast<const uint32_t*>(ac.data_ptr<float>());
  const auto* pb = reinterpret_cast<const uint32_t*>(bc.data_ptr<float>());
  if (m <= kMaxSharedM) {
    const size_t shared = sizeof(int32_t) << (2 * m);
    if (shared > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(fp_bmm_kernel<true>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
    }
    fp_bmm_kernel<true><<<grid, block, shared, stream>>>(pa, pb, tc.data_ptr<int32_t>(),
                                                         out.data_ptr<float>(), int(M), int(K), int(N), int(m));
  } else {
    fp_bmm_kernel<false><<<grid, block, 0, stream>>>(pa, pb, tc.data_ptr<int32_t>(),
                                                     out.data_ptr<float>(), int(M), int(K), int(N), int(m));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("fp_bmm", &fp_bmm, "FP LUT-GEMM (CUDA): sequential-k float32 sum of LUT products");
}
