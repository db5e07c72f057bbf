// An operand read through windows: the im2col rows of a convolution taken straight from its
// channels-last codes. As a row operand (packed by k blocks anyway) no [N*Ho*Wo, kh*kw*C]
// matrix (9x the input at 3x3) is built; as a column operand its packing copies each window's
// runs once, which is that matrix.
#pragma once

#include <cstdint>
#include <vector>

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

// The first k of each run of contiguous codes (off(k) == off(k - 1) + 1 continues a run), then
// K: copies of a row's codes move whole runs.
template <class Offset>
std::vector<int64_t> contiguous_runs(Offset off, int64_t K) {
  std::vector<int64_t> runs;
  for (int64_t k = 0; k < K; ++k)
    if (k == 0 || off(k) != off(k - 1) + 1) runs.push_back(k);
  runs.push_back(K);
  return runs;
}

}  // namespace appmult_rows
