// A row operand read in place: the im2col rows of a convolution taken straight from its
// channels-last codes, so that no [N*Ho*Wo, kh*kw*C] matrix is built (9x the input at 3x3).
#pragma once

#include <cstdint>

namespace appmult_rows {

// Code k of row i sits at base[rows[i] + cols[k]]. For a convolution over channels-last codes
// [N, H, W, C] (row i = image n, output pixel (yo, xo); k = tap (ki, kj), channel c):
// rows[i] = ((n * H + yo * sh) * W + xo * sw) * C and cols[k] = (ki * dh * W + kj * dw) * C + c.
// cols is strictly increasing (a window fits its input), so cols[k + L - 1] - cols[k] == L - 1
// means codes k .. k + L - 1 are contiguous.
struct Windows {
  const uint8_t* base;
  const int64_t* rows;  // [M]
  const int64_t* cols;  // [K]
};

}  // namespace appmult_rows
