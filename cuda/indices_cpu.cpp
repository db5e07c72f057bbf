// One-pass CPU table indices: the uint8 index (the low `bits` bits of the two's-complement code)
// of every element of a strided 3-D view of float32 codes, written contiguously in the view's
// order. With a permuted view this is the channels-last activation layout or the im2col weight
// layout in one read, where the torch expression (luts/indexing.codes_to_indices, then the
// permuted copies of ops/conv_gemm.py) takes three to four passes.
#include "indices_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int64_t kTile = 16;  // columns (d2) per task

// out[i1 * ld + j] = index of code x[i1 * s1 + j * s2] for i1 < n1, j < nj: a strip of nj
// columns walked row by row, so the nj source lines of a transposed view roll along together.
inline void index_strip(const float* __restrict__ x, int64_t s1, int64_t s2, int64_t n1,
                        int64_t nj, uint8_t* __restrict__ out, int64_t ld, uint8_t mask) {
  for (int64_t i1 = 0; i1 < n1; ++i1)
    for (int64_t j = 0; j < nj; ++j) {
      const auto code = static_cast<int16_t>(static_cast<int32_t>(x[i1 * s1 + j * s2]));
      out[i1 * ld + j] = static_cast<uint8_t>(code) & mask;
    }
}

}  // namespace

torch::Tensor codes_to_indices_3d(const torch::Tensor& codes, int64_t bits) {
  TORCH_CHECK(codes.device().is_cpu() && codes.scalar_type() == torch::kFloat32 &&
                  codes.dim() == 3,
              "appmult-fx: expected a 3-D float32 CPU view of codes");
  TORCH_CHECK(bits >= 1 && bits <= 8, "appmult-fx: expected 1..8 index bits, got ", bits);
  auto out = torch::empty(codes.sizes(), codes.options().dtype(torch::kUInt8));
  const int64_t d0 = codes.size(0), d1 = codes.size(1), d2 = codes.size(2);
  const int64_t s0 = codes.stride(0), s1 = codes.stride(1), s2 = codes.stride(2);
  const float* x = codes.data_ptr<float>();
  uint8_t* o = out.data_ptr<uint8_t>();
  const auto mask = static_cast<uint8_t>((1u << bits) - 1u);
  // A task takes kTile columns of every row (i0, i1): its source stays in cache across i0.
  const int64_t tiles = (d2 + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t j0 = t * kTile, nj = std::min(kTile, d2 - j0);
      if (s0 < s1) {  // d0 is the closer dimension in the source (im2col weights: kh * kw)
        for (int64_t i1 = 0; i1 < d1; ++i1)
          index_strip(x + i1 * s1 + j0 * s2, s0, s2, d0, nj, o + i1 * d2 + j0, d1 * d2, mask);
      } else {
        for (int64_t i0 = 0; i0 < d0; ++i0)
          index_strip(x + i0 * s0 + j0 * s2, s1, s2, d1, nj, o + i0 * d1 * d2 + j0, d2, mask);
      }
    }
  });
  return out;
}
