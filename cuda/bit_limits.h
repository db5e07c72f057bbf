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

// Whether a table dimension is 2**bits with bits in [kMinBits, kMaxBits]; *bits receives it.
inline bool table_dim_bits(int64_t n, int* bits) {
  *bits = 0;
  while ((int64_t{1} << *bits) < n) ++*bits;
  return (int64_t{1} << *bits) == n && *bits >= kMinBits && *bits <= kMaxBits;
}

// The operand widths (bits_a, bits_b) of a (2**bits_a, 2**bits_b) table: rows are indexed by
// the activation (row) operand a, columns by the weight (column) operand w; refuses any other
// shape or width.
inline std::pair<int, int> table_bits(const torch::Tensor& table) {
  int bits_a = 0, bits_b = 0;
  const bool ok = table.dim() == 2 && table_dim_bits(table.size(0), &bits_a) &&
                  table_dim_bits(table.size(1), &bits_b);
  TORCH_CHECK(ok, "appmult-fx: expected a (2**bits_a, 2**bits_b) table with both bits in [",
              kMinBits, ", ", kMaxBits, "], got ", table.sizes());
  return {bits_a, bits_b};
}

}  // namespace appmult
