// One-pass CPU copies of strided 3-D views (permute_cpu.cpp), bound in lut_gemm_cpu.cpp.
#pragma once

#include <torch/extension.h>

// Contiguous uint8 indices (code modulo 2**bits, two's complement) of a 3-D float32 view of
// integer codes in [-2**15, 2**15), in the view's element order (any strides).
torch::Tensor codes_to_indices_3d(const torch::Tensor& codes, int64_t bits);

// A contiguous float32 copy of a 3-D float32 view (any strides).
torch::Tensor contiguous_3d(const torch::Tensor& view);

// Float32 planes [N, C, P] of contiguous int32 rows [N, P, C] (cast as torch casts: exact up
// to 2**24, rounded to nearest even beyond).
torch::Tensor planes_from_rows(const torch::Tensor& rows);

// col2im of one group: out [N, C, H, W] (contiguous float32) = the sum, over the windows of
// the (kh, kw) kernel at the given stride and dilation, of the im2col columns
// cols [N*Ho*Wo, kh*kw*C] (K ordered kh, kw, C), added tap by tap as F.fold adds them.
void fold_into_planes(const torch::Tensor& cols, torch::Tensor& out, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t dh, int64_t dw);
