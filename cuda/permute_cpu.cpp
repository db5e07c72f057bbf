// One-pass CPU copies of strided 3-D views, written contiguously in the view's order: float32
// codes to uint8 table indices (the low `bits` bits of the two's-complement code), or float32
// to float32. With a permuted view this is the channels-last activation indices, the im2col
// weight indices or the weight gradient's [O, C/g, kh, kw] layout in one read and one write,
// where the torch expressions (luts/indexing.codes_to_indices and the permuted copies of
// ops/conv_gemm.py) take two to four passes, some of them transposing element by element. And
// int32 sums in rows [N, Ho*Wo, O] to float32 planes [N, O, Ho*Wo] in tiles (torch's strided
// cast of the permuted view runs 2-3x slower).
#include "permute_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

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

constexpr int64_t kPlaneTile = 32;  // pixels x channels of a transposed tile

// dst[j * p + i] = float(src[i * c + j]) for pixels i in [p0, p1) and channels j in [c0, c1)
// (sizes passed by value, so the stores cannot alias them and the loop vectorizes).
template <typename In>
void plane_tile(const In* __restrict__ src, float* __restrict__ dst, int64_t p, int64_t c,
                int64_t p0, int64_t p1, int64_t c0, int64_t c1) {
  for (int64_t j = c0; j < c1; ++j)
    for (int64_t i = p0; i < p1; ++i) dst[j * p + i] = static_cast<float>(src[i * c + j]);
}

// All of one image's [p, c] rows as [c, p] planes, tile by tile (the tile's source and
// destination lines stay in L1 while the other index runs along them).
template <typename In>
void image_planes(const In* src, float* dst, int64_t p, int64_t c) {
  for (int64_t p0 = 0; p0 < p; p0 += kPlaneTile)
    for (int64_t c0 = 0; c0 < c; c0 += kPlaneTile)
      plane_tile(src, dst, p, c, p0, std::min(p, p0 + kPlaneTile), c0,
                 std::min(c, c0 + kPlaneTile));
}

// Geometry of a convolution's windows (input h x w, output ho x wo).
struct Windows {
  int64_t h, w, ho, wo, kh, kw, sh, sw, dh, dw;
};

// acc[(y * w + x) * cb + ch] += cols[m][(i * kw + j) * c + c0 + ch] for every window m of one
// image, tap (i, j) and channel ch < cb of the block from c0, channels innermost. Each acc
// element gets its taps in F.fold's order, (i, j) ascending: output rows and columns run
// backwards, the taps forwards (for a fixed element a larger i means a smaller window row).
// One window row at a time touches kh rows of acc, which stay in L1.
void fold_image(const float* __restrict__ cols, float* __restrict__ acc, int64_t c, int64_t c0,
                int64_t cb, const Windows g) {
  const int64_t k = g.kh * g.kw * c;
  for (int64_t yo = g.ho - 1; yo >= 0; --yo)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t xo = g.wo - 1; xo >= 0; --xo)
        for (int64_t j = 0; j < g.kw; ++j) {
          const float* __restrict__ s = cols + (yo * g.wo + xo) * k + (i * g.kw + j) * c + c0;
          float* __restrict__ a =
              acc + ((yo * g.sh + i * g.dh) * g.w + xo * g.sw + j * g.dw) * cb;
          for (int64_t ch = 0; ch < cb; ++ch) a[ch] += s[ch];
        }
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

torch::Tensor planes_from_rows(const torch::Tensor& rows) {
  TORCH_CHECK(rows.device().is_cpu() && rows.scalar_type() == torch::kInt32 && rows.dim() == 3 &&
                  rows.is_contiguous(),
              "appmult-fx: expected contiguous int32 CPU rows [N, P, C]");
  const int64_t n = rows.size(0), p = rows.size(1), c = rows.size(2);
  auto out = torch::empty({n, c, p}, rows.options().dtype(torch::kFloat32));
  const int32_t* x = rows.data_ptr<int32_t>();
  float* y = out.data_ptr<float>();
  // square tiles of kPlaneTile pixels x channels, in parallel
  const int64_t pt = (p + kPlaneTile - 1) / kPlaneTile, ct = (c + kPlaneTile - 1) / kPlaneTile;
  at::parallel_for(0, n * pt * ct, 1, [=](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (pt * ct), p0 = t / ct % pt * kPlaneTile, c0 = t % ct * kPlaneTile;
      plane_tile(x + b * p * c, y + b * p * c, p, c, p0, std::min(p, p0 + kPlaneTile), c0,
                 std::min(c, c0 + kPlaneTile));
    }
  });
  return out;
}

void fold_into_planes(const torch::Tensor& cols, torch::Tensor& out, int64_t kh, int64_t kw,
                      int64_t sh, int64_t sw, int64_t dh, int64_t dw) {
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == torch::kFloat32 && out.dim() == 4 &&
                  out.is_contiguous(),
              "appmult-fx: expected a contiguous float32 CPU output [N, C, H, W]");
  const int64_t n = out.size(0), c = out.size(1), h = out.size(2), w = out.size(3);
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1,
              "appmult-fx: expected positive kernel, stride and dilation");
  // checked before dividing: C++ division truncates a negative span toward zero
  TORCH_CHECK(h >= dh * (kh - 1) + 1 && w >= dw * (kw - 1) + 1,
              "appmult-fx: a window (", kh, " x ", kw, ", dilation ", dh, " x ", dw,
              ") is larger than the output (", h, " x ", w, ")");
  const int64_t ho = (h - dh * (kh - 1) - 1) / sh + 1, wo = (w - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(cols.device().is_cpu() && cols.scalar_type() == torch::kFloat32 &&
                  cols.is_contiguous() && cols.dim() == 2 && cols.size(0) == n * ho * wo &&
                  cols.size(1) == kh * kw * c,
              "appmult-fx: expected contiguous float32 columns [", n * ho * wo, ", ",
              kh * kw * c, "], got ", cols.sizes());
  const Windows g{h, w, ho, wo, kh, kw, sh, sw, dh, dw};
  const float* src = cols.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  // tasks of one image and a block of channels (independent sums): whole images when there
  // are enough of them for the threads, else blocks of 16k channels
  const int64_t threads = at::get_num_threads();
  const int64_t split = n >= threads ? 1 : std::min((threads + n - 1) / n, (c + 15) / 16);
  const int64_t cb = std::min(c, ((c + split - 1) / split + 15) / 16 * 16);
  const int64_t blocks = (c + cb - 1) / cb;
  at::parallel_for(0, n * blocks, 1, [=](int64_t begin, int64_t end) {
    std::vector<float> acc(h * w * cb);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / blocks, c0 = t % blocks * cb, width = std::min(cb, c - c0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      fold_image(src + b * ho * wo * kh * kw * c, acc.data(), c, c0, width, g);
      image_planes(acc.data(), dst + (b * c + c0) * h * w, h * w, width);
    }
  });
}

torch::Tensor contiguous_3d(const torch::Tensor& view) {
  check_view(view);
  auto out = torch::empty(view.sizes(), view.options());
  copy_view(view, out.data_ptr<float>(), Same{});
  return out;
}
