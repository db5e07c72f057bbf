// The operand-width rule of the kernels' tables. Defined once, in Python
// (appmult_fx.luts.indexing.MIN_BITS / MAX_BITS), and passed by the one extension builder
// (appmult_fx.ops.kernels.compile_extension) as -DAPPMULT_MIN_BITS / -DAPPMULT_MAX_BITS.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <utility>

#if !defined(APPMULT_MIN_BITS) || !defined(APPMULT_MAX_BITS)
#error "APPMULT_MIN_BITS and APPMULT_MAX_BITS come from appmult_fx.ops.kernels.compile_extension"
#endif
static_assert(1 <= APPMULT_MIN_BITS && APPMULT_MIN_BITS <= APPMULT_MAX_BITS,
              "appmult-fx: expected 1 <= MIN_BITS <= MAX_BITS");
static_assert(APPMULT_MAX_BITS <= 8, "appmult-fx: the kernels index tables with uint8 operands");

namespace appmult {

constexpr int kMinBits = APPMULT_MIN_BITS;
constexpr int kMaxBits = APPMULT_MAX_BITS;

// (MIN_BITS, MAX_BITS) as compiled in, for the Python side to verify.
inline std::pair<int64_t, int64_t> bit_limits() { return {kMinBits, kMaxBits}; }

// The operand width of a square (2**bits, 2**bits) table; refuses any other shape or width.
inline int table_bits(const torch::Tensor& table) {
  const int64_t n = table.dim() == 2 ? table.size(0) : -1;
  TORCH_CHECK(table.dim() == 2 && table.size(1) == n && n >= (int64_t{1} << kMinBits) &&
                  n <= (int64_t{1} << kMaxBits) && (n & (n - 1)) == 0,
              "appmult-fx: expected a (2**bits, 2**bits) table with bits in [", kMinBits, ", ",
              kMaxBits, "], got ", table.sizes());
  int bits = 0;
  while ((int64_t{1} << bits) < n) ++bits;
  return bits;
}

}  // namespace appmult
