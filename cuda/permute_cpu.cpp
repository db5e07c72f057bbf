// One-pass CPU copies of strided 3-D views, written contiguously in the view's order: float32
// codes to uint8 table indices (the low `bits` bits of the two's-complement code), or float32
// to float32. With a permuted view this is the channels-last activation indices, the im2col
// weight indices or the weight gradient's [O, C/g, kh, kw] layout in one read and one write,
// where the torch expressions (luts/indexing.codes_to_indices and the permuted copies of
// ops/conv_gemm.py) take two to four passes, some of them transposing element by element.
#include "permute_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int64_t kTile = 16;  // elements of a tile side

// A code's table index: its low bits as luts/indexing.codes_to_indices takes them (integer
// codes in [-2**15, 2**15), the quantizers' output; truncation toward zero like torch's cast).
struct IndexOf {
  uint8_t mask;
  uint8_t operator()(float code) const {
    return static_cast<uint8_t>(static_cast<int16_t>(static_cast<int32_t>(code))) & mask;
  }
};

struct Same {
  float operator()(float v) const { return v; }
};

// out[a * oa + b * ob] = f(x[a * sa + b * sb]) for a < na, b < nb (b innermost).
template <typename Out, typename F>
inline void tile_copy(const float* __restrict__ x, int64_t sa, int64_t sb, int64_t na, int64_t nb,
                      Out* __restrict__ out, int64_t oa, int64_t ob, F f) {
  for (int64_t a = 0; a < na; ++a)
    for (int64_t b = 0; b < nb; ++b) out[a * oa + b * ob] = f(x[a * sa + b * sb]);
}

// out (contiguous [d0, d1, d2]) = f(view) for a 3-D view with strides s0, s1, s2. A task takes
// a strip of kTile elements of d2, and of d0 too when d0 is the view's closest dimension (a
// transposed view), so the strip's source and destination lines stay in L1 while the other
// dimension advances along them.
template <typename Out, typename F>
void copy_view(const torch::Tensor& v, Out* out, F f) {
  const int64_t d0 = v.size(0), d1 = v.size(1), d2 = v.size(2);
  const int64_t s0 = v.stride(0), s1 = v.stride(1), s2 = v.stride(2);
  const float* x = v.data_ptr<float>();
  const int64_t strips = (d2 + kTile - 1) / kTile;
  const bool d0_closest = s0 < s1 && d0 > 1;
  const int64_t blocks = d0_closest ? (d0 + kTile - 1) / kTile : 1;
  at::parallel_for(0, strips * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t j0 = t % strips * kTile, nj = std::min(kTile, d2 - j0);
      if (d0_closest) {
        const int64_t a0 = t / strips * kTile, na = std::min(kTile, d0 - a0);
        for (int64_t i1 = 0; i1 < d1; ++i1)
          tile_copy(x + a0 * s0 + i1 * s1 + j0 * s2, s0, s2, na, nj,
                    out + (a0 * d1 + i1) * d2 + j0, d1 * d2, 1, f);
      } else {
        for (int64_t i0 = 0; i0 < d0; ++i0)
          tile_copy(x + i0 * s0 + j0 * s2, s1, s2, d1, nj, out + i0 * d1 * d2 + j0, d2, 1, f);
      }
    }
  });
}

void check_view(const torch::Tensor& v) {
  TORCH_CHECK(v.device().is_cpu() && v.scalar_type() == torch::kFloat32 && v.dim() == 3,
              "appmult-fx: expected a 3-D float32 CPU view");
}

}  // namespace

torch::Tensor codes_to_indices_3d(const torch::Tensor& codes, int64_t bits) {
  check_view(codes);
  TORCH_CHECK(bits >= 1 && bits <= 8, "appmult-fx: expected 1..8 index bits, got ", bits);
  auto out = torch::empty(codes.sizes(), codes.options().dtype(torch::kUInt8));
  copy_view(codes, out.data_ptr<uint8_t>(), IndexOf{static_cast<uint8_t>((1u << bits) - 1u)});
  return out;
}

torch::Tensor contiguous_3d(const torch::Tensor& view) {
  check_view(view);
  auto out = torch::empty(view.sizes(), view.options());
  copy_view(view, out.data_ptr<float>(), Same{});
  return out;
}
