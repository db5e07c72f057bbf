// AVX-512 helpers shared by the translation units compiled under an AVX-512 (F, BW, VBMI) target
// pragma (lut_gemm_cpu_avx512_grad.cpp, lut_gemm_cpu_narrow.cpp, lut_gemm_cpu_vbmi.cpp); include
// after that pragma.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace appmult_avx512 {

// Lane i of the result is the horizontal sum of acc[p(i)], where slot s of acc holds the dot
// that lands in lane 4 (s % 4) + s / 4 (the order the last two in-lane stages produce).
inline __m512 reduce16(const __m512* acc) {
  __m512 h[8];
  for (int i = 0; i < 8; ++i)  // 256-bit halves: acc[2i] in the low, acc[2i + 1] in the high
    h[i] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], 0xEE));
  __m512 q[4];
  for (int i = 0; i < 4; ++i)  // quarters: acc[4i + 0..3] in quarters 0..3
    q[i] = _mm512_add_ps(_mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0xDD));
  const __m512 e0 = _mm512_add_ps(_mm512_unpacklo_ps(q[0], q[1]), _mm512_unpackhi_ps(q[0], q[1]));
  const __m512 e1 = _mm512_add_ps(_mm512_unpacklo_ps(q[2], q[3]), _mm512_unpackhi_ps(q[2], q[3]));
  return _mm512_add_ps(_mm512_shuffle_ps(e0, e1, 0x44), _mm512_shuffle_ps(e0, e1, 0xEE));
}

// Slot of acc (see reduce16) whose sum lands in lane i.
constexpr int slot_of(int i) { return 4 * (i % 4) + i / 4; }

// Which table rows are not all zero, as 4 registers of 64 byte flags for lookups by live_bytes
// (`dead`: 256 flags of the all-zero rows, or nullptr: none).
struct LiveTable {
  __m512i t[4];
  explicit LiveTable(const uint8_t* dead) {
    alignas(64) uint8_t live[256];
    for (int u = 0; u < 256; ++u) live[u] = dead == nullptr || dead[u] == 0 ? 1 : 0;
    for (int i = 0; i < 4; ++i) t[i] = _mm512_load_si512(live + 64 * i);
  }
  // Byte i: the flag of code v[i].
  __m512i live_bytes(__m512i v) const {
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), _mm512_permutex2var_epi8(t[0], v, t[1]),
                                  _mm512_permutex2var_epi8(t[2], v, t[3]));
  }
};

}  // namespace appmult_avx512
