// One-pass CPU im2col of channels-last uint8 table indices: every output row (one output pixel)
// is kh * kw * groups runs of C/groups contiguous bytes copied from the [N, H, W, C] input, in
// the layout of ops/conv_gemm.im2col_indices ([groups, N * Ho * Wo, kh * kw * C/groups], K
// ordered kh, kw, C/groups). torch's strided copy of the same windows moves each run through a
// generic element loop, about 3x slower.
#include "im2col_cpu.h"

#include <ATen/Parallel.h>

#include <cstring>

torch::Tensor im2col_nhwc(const torch::Tensor& nhwc, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t dh, int64_t dw, int64_t groups) {
  TORCH_CHECK(nhwc.device().is_cpu() && nhwc.scalar_type() == torch::kUInt8 && nhwc.dim() == 4 &&
                  nhwc.is_contiguous(),
              "appmult-fx: expected contiguous uint8 [N, H, W, C] indices");
  const int64_t n = nhwc.size(0), h = nhwc.size(1), w = nhwc.size(2), c = nhwc.size(3);
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1 && groups >= 1 &&
                  c % groups == 0,
              "appmult-fx: bad im2col kernel, stride, dilation or groups");
  const int64_t ho = (h - dh * (kh - 1) - 1) / sh + 1, wo = (w - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(ho >= 1 && wo >= 1, "appmult-fx: im2col kernel larger than the input");
  const int64_t cg = c / groups, k = kh * kw * cg, rows = n * ho * wo;
  auto out = torch::empty({groups, rows, k}, nhwc.options());
  const uint8_t* in = nhwc.data_ptr<uint8_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, k * groups)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) {
                       const int64_t b = r / (ho * wo), y = r / wo % ho, x = r % wo;
                       for (int64_t g = 0; g < groups; ++g) {
                         uint8_t* dst = o + (g * rows + r) * k;
                         for (int64_t i = 0; i < kh; ++i)
                           for (int64_t j = 0; j < kw; ++j) {
                             const int64_t yy = y * sh + i * dh, xx = x * sw + j * dw;
                             std::memcpy(dst + (i * kw + j) * cg,
                                         in + ((b * h + yy) * w + xx) * c + g * cg, cg);
                           }
                       }
                     }
                   });
  return out;
}
