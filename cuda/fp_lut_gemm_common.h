// FP LUT product on float32 bit patterns of operands already cast to (1, 8, m).
// Shared by the CPU and CUDA FP LUT-GEMM kernels; the bit-level twin of
// appmult_fx.luts.fp_format.product_bits (see docs/fp.md for the semantics).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define FP_LUT_HD __host__ __device__ __forceinline__
#else
#define FP_LUT_HD inline
#endif

namespace appmult_fp {

constexpr uint32_t kSign = 0x80000000u;
constexpr uint32_t kMag = 0x7fffffffu;
constexpr uint32_t kInf = 0x7f800000u;
constexpr uint32_t kNaN = 0x7fc00000u;

// float32 bit pattern cast to (1, 8, m): truncate or round to nearest even; denormals flush to
// a signed zero, inf stays, NaN becomes the canonical quiet NaN (twin of fp_format.cast_bits)
FP_LUT_HD uint32_t fp_cast(uint32_t x, int m, bool nearest) {
  const uint32_t sign = x & kSign;
  uint32_t mag = x & kMag;
  if (mag > kInf) return kNaN;
  if (mag == kInf) return x;
  if (mag < (1u << 23)) return sign;
  const int shift = 23 - m;
  if (nearest) mag += ((1u << (shift - 1)) - 1u) + ((mag >> shift) & 1u);
  return sign | (mag & ~((1u << shift) - 1u));
}

// entry = table[ma << m | mb] = carry << m | mantissa
FP_LUT_HD uint32_t fp_lut_product(uint32_t a, uint32_t b, const int32_t* table, int m) {
  const uint32_t sign = (a ^ b) & kSign;
  const uint32_t mag_a = a & kMag, mag_b = b & kMag;
  if (mag_a > kInf || mag_b > kInf) return kNaN;
  const int ea = int(mag_a >> 23), eb = int(mag_b >> 23);
  if (ea == 255 || eb == 255) return (ea == 0 || eb == 0) ? kNaN : (sign | kInf);
  if (ea == 0 || eb == 0) return sign;
  const int shift = 23 - m;
  const uint32_t mask = (1u << m) - 1u;
  const uint32_t idx = (((mag_a >> shift) & mask) << m) | ((mag_b >> shift) & mask);
  const int32_t entry = table[idx];
  const int e = ea + eb - 127 + (entry >> m);
  if (e >= 255) return sign | kInf;
  if (e <= 0) return sign;
  return sign | (uint32_t(e) << 23) | (uint32_t(entry & int32_t(mask)) << shift);
}

}  // namespace appmult_fp
