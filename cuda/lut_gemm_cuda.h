// Host launchers of the CUDA LUT-GEMM kernels (plain CUDA runtime API, no torch).
// All pointers are device pointers to contiguous tensors; outputs must be zero-filled. Tables are
// (2**bits_a, 2**bits_b), row-major: rows indexed by codes of a, columns by codes of w.
#pragma once
#include "cuda_launch.h"  // <cuda_runtime.h>, or its host emulation

#include <cstdint>

namespace appmult_cuda {

// Y [B, M, N] int32 = SUM_k T[a, w]. With table16, `table` holds T - offset and every entry is in
// [0, 65535] (the shared-memory path); otherwise it holds T and offset is ignored.
cudaError_t launch_lut_fwd(const uint8_t* a, const uint8_t* w, const int32_t* table, bool table16,
                           uint32_t offset, int bits_a, int bits_b, int B, int M, int K, int N,
                           int num_sms, int32_t* y, cudaStream_t stream);

// dA [B, M, K] float32 = SUM_n G * GA[a, w].
cudaError_t launch_lut_grad_a(const float* g, const uint8_t* a, const uint8_t* w, const float* ga,
                              int bits_a, int bits_b, int B, int M, int K, int N,
                              int num_sms, float* da,
                              cudaStream_t stream);

// dW [B, K, N] float32 = SUM_m G * GW[a, w].
cudaError_t launch_lut_grad_w(const float* g, const uint8_t* a, const uint8_t* w, const float* gw,
                              int bits_a, int bits_b, int B, int M, int K, int N,
                              int num_sms, float* dw,
                              cudaStream_t stream);

}  // namespace appmult_cuda
