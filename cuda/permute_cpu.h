// One-pass CPU copies of strided 3-D views (permute_cpu.cpp), bound in lut_gemm_cpu.cpp.
#pragma once

#include <torch/extension.h>

// Contiguous uint8 indices (code modulo 2**bits, two's complement) of a 3-D float32 view of
// integer codes in [-2**15, 2**15), in the view's element order (any strides).
torch::Tensor codes_to_indices_3d(const torch::Tensor& codes, int64_t bits);

// A contiguous float32 copy of a 3-D float32 view (any strides).
torch::Tensor contiguous_3d(const torch::Tensor& view);
