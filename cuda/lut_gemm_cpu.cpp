// Torch binding of the CPU LUT-GEMM kernels: argument checks, padding, orientation, ISA dispatch.
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <string>

#include "bit_limits.h"
#include "dead_runs_cpu.h"
#include "lut_gemm_cpu.h"
#include "lut_gemm_cpu_narrow.h"
#include "permute_cpu.h"
#include "quantize_cpu.h"
#include "rescale_cpu.h"

namespace {

constexpr int64_t kTile = 32;  // NT in lut_gemm_cpu_kernels.h

bool cpu_has_avx2() {
#if defined(APPMULT_CPU_HAS_AVX2_PATH)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_vbmi() {
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  return cpu_has_avx2() && appmult_cpu_vbmi::supported();
#else
  return false;
#endif
}

// The instruction set a request for `isa` runs: "avx512" (VBMI byte-permute forward, AVX-512
// gradients), "avx2" or "portable"; "auto" picks the best this CPU has.
std::string resolve_isa(const std::string& isa) {
  TORCH_CHECK(isa == "auto" || isa == "avx512" || isa == "avx2" || isa == "portable",
              "appmult-fx: expected isa 'auto', 'avx512', 'avx2' or 'portable', got '", isa, "'");
  if (isa == "portable") return isa;
  if (isa == "avx512" || isa == "auto") {
    const bool vbmi = cpu_has_vbmi();
    TORCH_CHECK(vbmi || isa == "auto",
                "appmult-fx: isa 'avx512' requested but this CPU lacks AVX-512 VBMI/VNNI");
    if (vbmi) return "avx512";
  }
  const bool avx2 = cpu_has_avx2();
  TORCH_CHECK(avx2 || isa == "auto", "appmult-fx: isa 'avx2' requested but this CPU lacks AVX2/FMA");
  return avx2 ? "avx2" : "portable";
}

// The row and column counts (na, nb) of a (2**bits_a, 2**bits_b) table, checked.
std::pair<int64_t, int64_t> table_dims(const torch::Tensor& table) {
  const auto bits = appmult::table_bits(table);
  return {int64_t{1} << bits.first, int64_t{1} << bits.second};
}

void check_indices(const torch::Tensor& a, const torch::Tensor& w) {
  TORCH_CHECK(a.device().is_cpu() && w.device().is_cpu(), "appmult-fx: CPU kernel got ",
              a.device(), " and ", w.device(), " tensors");
  TORCH_CHECK(a.dim() == 3 && w.dim() == 3 && a.size(0) == w.size(0) && a.size(2) == w.size(1),
              "appmult-fx: expected a [B,M,K] and w [B,K,N], got ", a.sizes(), " and ", w.sizes());
  TORCH_CHECK(a.scalar_type() == torch::kUInt8 && w.scalar_type() == torch::kUInt8,
              "appmult-fx: expected uint8 indices, got ", a.scalar_type(), " and ",
              w.scalar_type());
}

// g [B, M, N] float32, zero-padded to a multiple of the tile width.
torch::Tensor padded_grad(const torch::Tensor& g, int64_t ld) {
  TORCH_CHECK(g.scalar_type() == torch::kFloat32 && g.dim() == 3,
              "appmult-fx: expected a float32 [B,M,N] gradient, got ", g.scalar_type(), " ",
              g.sizes());
  if (g.size(2) == ld) return g.contiguous();
  auto gp = torch::zeros({g.size(0), g.size(1), ld}, g.options());
  gp.narrow(2, 0, g.size(2)).copy_(g);
  return gp;
}

torch::Tensor unpad(const torch::Tensor& t, int64_t n) {
  return t.size(2) == n ? t : t.narrow(2, 0, n).contiguous();
}

const uint32_t* as_words(const torch::Tensor& t) {
  return reinterpret_cast<const uint32_t*>(t.data_ptr());
}

// Bytes of derived tables each forward pass keeps cache-resident (measured on Zen 3: larger
// blocks mean fewer passes over Y, which outweighs L2 rather than L1 residency).
constexpr int64_t kBudget16 = 128 * 1024;
constexpr int64_t kBudget32 = 192 * 1024;

// Tables whose entries span at most 2**16 values run on 16-bit entries T - offset (signed), and
// Y starts from K * offset (mod 2**32), which keeps the sum exact.
struct Narrowing {
  bool fits;
  int64_t offset;
  int32_t start(int64_t K) const {
    return static_cast<int32_t>(static_cast<uint32_t>(K) * static_cast<uint32_t>(offset));
  }
};

Narrowing narrowing(const torch::Tensor& wide) {
  const int64_t lo = wide.min().item<int64_t>(), hi = wide.max().item<int64_t>();
  const bool fits = hi - lo <= 65535;
  return {fits, (!fits || (lo >= -32768 && hi <= 32767)) ? 0 : lo + 32768};
}

// Y [B, M, N] = SUM_k TBL[a, w] with the transposed table lt = TBL^T (int32 [cols, n], n = the
// row count of TBL: codes of a), table-rows kernels (16-bit entries when the table narrows).
torch::Tensor forward_oriented(const torch::Tensor& a, const torch::Tensor& w,
                               const torch::Tensor& lt, int64_t n, bool avx2) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  const int64_t ld = kTile * ((N + kTile - 1) / kTile);
  const auto wide = lt.to(torch::kInt64);
  const Narrowing nr = narrowing(wide);
  const bool narrow = nr.fits;
  const int64_t offset = nr.offset;
  auto y = torch::full({B, M, ld}, nr.start(K), a.options().dtype(torch::kInt32));
  const int threads = at::get_num_threads();
  const uint8_t* ap = a.data_ptr<uint8_t>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  int32_t* yp = y.data_ptr<int32_t>();
  if (narrow) {
    const auto lt16 = (wide - offset).to(torch::kInt16);
    const auto* l = reinterpret_cast<const uint16_t*>(lt16.data_ptr());
#if defined(APPMULT_CPU_HAS_AVX2_PATH)
    if (avx2) {
      appmult_cpu_avx2::lut_fwd16(ap, wp, l, n, B, M, K, N, yp, threads, kBudget16);
      return unpad(y, N);
    }
#endif
    appmult_cpu_portable::lut_fwd16(ap, wp, l, n, B, M, K, N, yp, threads, kBudget16);
    return unpad(y, N);
  }
#if defined(APPMULT_CPU_HAS_AVX2_PATH)
  if (avx2) {
    appmult_cpu_avx2::lut_fwd(ap, wp, as_words(lt), n, B, M, K, N, yp, threads, kBudget32);
    return unpad(y, N);
  }
#endif
  appmult_cpu_portable::lut_fwd(ap, wp, as_words(lt), n, B, M, K, N, yp, threads, kBudget32);
  return unpad(y, N);
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Flags of the lines of a table that are all zero (products through them add nothing, so the
// AVX-512 kernels skip them): rows (`rows`) or columns, 0 past the table.
struct ZeroLines {
  std::array<uint8_t, 256> flags{};
  bool any = false;
  const uint8_t* data() const { return any ? flags.data() : nullptr; }
};

ZeroLines zero_lines(const torch::Tensor& table, bool rows) {
  ZeroLines out;
  const auto zero = table.eq(0).all(rows ? 1 : 0).to(torch::kUInt8).contiguous();
  const uint8_t* z = zero.data_ptr<uint8_t>();
  for (int64_t u = 0; u < zero.numel() && u < 256; ++u) {
    out.flags[u] = z[u];
    out.any = out.any || z[u] != 0;
  }
  return out;
}

// The row-side codes a [B, M, K] of a forward: dense (`data`, [B][M][K]) or, where `win` is
// set, read through windows (B = 1); `pool` holds every code (the windows' source), `size` of
// them.
struct RowCodes {
  const uint8_t* data;
  const appmult_rows::Windows* win;
  int64_t B, M, K;
  const uint8_t* pool;
  int64_t size;
};

// The share of a's codes that `dead` flags, from at most 2**16 codes spread over its pool.
double dead_share(const RowCodes& a, const ZeroLines& dead) {
  if (!dead.any || a.size == 0) return 0.0;
  const int64_t step = std::max<int64_t>(1, a.size >> 16);
  int64_t hits = 0, seen = 0;
  for (int64_t i = 0; i < a.size; i += step, ++seen) hits += dead.flags[a.pool[i]];
  return static_cast<double>(hits) / static_cast<double>(seen);
}

// Weight of the skipped steps in the orientation choice below. Fitted on the ResNet-18 shapes
// with a 128 x 256 table (rows over N at P = 256 against rows over M at P = 128; `python
// bench/lut_gemm.py --bits 7x8 --zeros Z`): rows over N take 1.47-1.56x the time of rows over M
// with no zero codes, 1.07-1.12x at 30%, 0.93-1.01x at 40%, 0.71-0.76x at 55% and 0.51-0.58x at
// 70%; this weight puts the model's crossing at 36%.
constexpr double kSkipGain = 0.55;

// Y [B, M, N] = SUM_k TBL[a, w] with the AVX-512 VBMI kernel (int32 table whose entries fit 16
// bits after narrowing `nr`); the kernel writes Y in place through strides.
torch::Tensor forward_vbmi(const RowCodes& a, const torch::Tensor& w, const torch::Tensor& table,
                           const Narrowing& nr) {
  const int64_t B = a.B, M = a.M, K = a.K, N = w.size(2);
  auto y = torch::empty({B, M, N}, w.options().dtype(torch::kInt32));
  // Rows over N unless that pads much more: the row operand is packed by a byte transpose, the
  // column operand (a, already [B, M, K]) is read in place. The port-5 time of a lookup grows
  // with the row side's codes (vpermb at <= 64, vpermi2b at <= 128, two and a blend beyond:
  // measured 1 : 1.5 : 2.5 per 64 codes with the unpacks), which weighs an orientation in for
  // rectangular tables (8x5 .. 8x7: rows over the narrower side).
  const auto permutes = [](int64_t codes) -> int64_t {
    return codes > 128 ? 5 : codes > 64 ? 3 : 2;
  };
  const int64_t na = table.size(0), nb = table.size(1);
  const auto entries = (table.to(torch::kInt64) - nr.offset).to(torch::kInt16);
  // Over N (a's codes as the columns) the kernel skips each column's steps through codes whose
  // entries are all zero (T[0, :] = 0 for a zero operand: a ReLU's zeros and the padding), so
  // that side weighs by the share of a's codes that still take steps.
  const ZeroLines dead = zero_lines(entries, true);
  const double live = 1.0 - kSkipGain * dead_share(a, dead);
  const bool over_n = static_cast<double>(round_up(N, 64) * M * permutes(nb)) * live <=
                      static_cast<double>(4 * round_up(M, 64) * N * permutes(na)) / 3.0;
  // Rows over M: columns are codes of w, planes hold T[:, v]; over N: the roles swap (T^T).
  const auto columns = (over_n ? entries : entries.t()).contiguous();
  // planes[v] = low bytes of column v (entries over the row operand's codes), then the high
  // bytes, P each, zero-padded past the table. A permute reads only the low log2(P) bits of a
  // code, so no code reads outside the planes; codes past the table (refused by the ops' range
  // check) would read the padding or, from P on, alias another entry.
  const int64_t ncol = columns.size(0), nrow = columns.size(1);
  const int64_t P = nrow <= 64 ? 64 : nrow <= 128 ? 128 : 256;
  const auto bytes = columns.view(torch::kUInt8).view({ncol, nrow, 2});  // little-endian: lo, hi
  auto planes = torch::zeros({ncol, 2, P}, w.options());
  planes.narrow(2, 0, nrow).copy_(bytes.permute({0, 2, 1}));
  const int64_t a_str[3] = {M * K, K, 1}, w_str[3] = {K * N, 1, N};
  const int64_t y_str[3] = {M * N, N, 1}, yt_str[3] = {M * N, 1, N};
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const uint8_t* wp = w.data_ptr<uint8_t>();
  if (over_n)
    appmult_cpu_vbmi::lut_fwd(wp, w_str, a.data, a_str, planes.data_ptr<uint8_t>(), P, B, N, K, M,
                              nr.start(K), y.data_ptr<int32_t>(), yt_str, at::get_num_threads(),
                              nullptr, a.win, dead.data());
  else
    appmult_cpu_vbmi::lut_fwd(a.data, a_str, wp, w_str, planes.data_ptr<uint8_t>(), P, B, M, K, N,
                              nr.start(K), y.data_ptr<int32_t>(), y_str, at::get_num_threads(),
                              a.win, nullptr);
#endif
  return y;
}

// Cost (arbitrary units, per k) of a table-rows product with `rows` rows and `cols` vector
// columns: `per_row` per (row, column) for the vector work plus the per-(k, column) table build
// of n entries. Relative weights measured on Zen 3 (forward adds < dW FMAs < dA dot products).
double cost(int64_t rows, int64_t cols, int64_t n, double per_row) {
  const double padded = static_cast<double>(kTile * ((cols + kTile - 1) / kTile));
  return padded * (static_cast<double>(rows) * per_row + static_cast<double>(n) / 4.0);
}
constexpr double kFwdPerRow = 1.0 / 16.0, kGradWPerRow = 1.0 / 12.0, kGradAPerRow = 1.0 / 6.0;

// The gradient kernels a resolved instruction set runs.
enum class GradIsa { kPortable, kAvx2, kAvx512 };

GradIsa grad_isa(const std::string& isa) {
  const std::string resolved = resolve_isa(isa);
  return resolved == "avx512" ? GradIsa::kAvx512
                              : resolved == "avx2" ? GradIsa::kAvx2 : GradIsa::kPortable;
}

// AVX-512 gradient kernels: bytes of tables per task (dA: a group of k over a chunk of up to
// 128 columns, kept in L2; dW: up to 8 k of a 16-column tile, fewer for short sweeps) and their
// cost per k and 16 columns, rows * per_row + n * per_entry, in seconds per G-LUT-MAC (fitted to
// one-thread timings of the ResNet-18 shapes on Sapphire Rapids before the kernels packed their
// operands; rechecked after: on every ResNet-18 shape at 7 and 8 bits the cost picks the faster
// orientation or one within 10% of it, both forced and timed).
constexpr int64_t kGradABudget512 = 1 << 20, kGradWBudget512 = 128 << 10;
struct Cost512 {
  double per_row, per_entry;
};
constexpr Cost512 kGradA512 = {0.050, 0.16}, kGradW512 = {0.053, 0.075};
// A margin against the transposed orientation: dW through the dA kernel copies its operands;
// dA through the dW kernel packs G (as the direct dW does).
constexpr double kCopies512 = 1.25;

// n: the table rows' worth of work a build takes per k (rows_reached: fewer where few rows are
// reached).
double cost512(int64_t rows, int64_t cols, double n, const Cost512& c) {
  const double padded = static_cast<double>(16 * ((cols + 15) / 16));
  return padded * (static_cast<double>(rows) * c.per_row + n * c.per_entry);
}

torch::Tensor transposed(const torch::Tensor& t) { return t.transpose(-2, -1).contiguous(); }

// dA [B, M, K] = SUM_n g * GA[a, w], direct (rows over M, vector columns over N).
// reached: the AVX-512 kernel's RowsReached of a's codes (null: every table row is built).
// dead: the AVX-512 kernel's [B, M, ceil(K / 16)] flags of runs of dA left 0 (null: none).
torch::Tensor grad_a_direct(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                            const torch::Tensor& ga, GradIsa isa,
                            const uint64_t* reached = nullptr, const uint8_t* dead = nullptr) {
  const int64_t n = ga.size(0), B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  auto lt = ga.t().contiguous();
  const int threads = at::get_num_threads();
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  if (isa == GradIsa::kAvx512) {
    auto da = torch::empty({B, M, K}, g.options());
    appmult_cpu_avx512::lut_grad_a(g.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                   w.data_ptr<uint8_t>(), lt.data_ptr<float>(), n, B, M, K, N,
                                   da.data_ptr<float>(), threads, kGradABudget512, reached,
                                   dead);
    return da;
  }
#endif
  auto gp = padded_grad(g, kTile * ((N + kTile - 1) / kTile));
  auto da = torch::zeros({B, M, K}, g.options());
#if defined(APPMULT_CPU_HAS_AVX2_PATH)
  if (isa != GradIsa::kPortable) {
    appmult_cpu_avx2::lut_grad_a(gp.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                 w.data_ptr<uint8_t>(), as_words(lt), n, B, M, K, N,
                                 da.data_ptr<float>(), threads);
    return da;
  }
#endif
  appmult_cpu_portable::lut_grad_a(gp.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                   w.data_ptr<uint8_t>(), as_words(lt), n, B, M, K, N,
                                   da.data_ptr<float>(), threads);
  return da;
}

// dW [B, K, N] = SUM_m g * GW[a, w], direct (accumulators over M, vector columns over N).
torch::Tensor grad_w_direct(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& w,
                            const torch::Tensor& gw, GradIsa isa,
                            const uint64_t* reached = nullptr) {
  const int64_t n = gw.size(0), B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  auto lt = gw.t().contiguous();
  const int threads = at::get_num_threads();
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  if (isa == GradIsa::kAvx512) {
    auto dw = torch::empty({B, K, N}, g.options());
    const ZeroLines dead = zero_lines(gw, true);  // rows of GW, reached by a's codes
    appmult_cpu_avx512::lut_grad_w(g.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                   w.data_ptr<uint8_t>(), lt.data_ptr<float>(), n, B, M, K, N,
                                   dw.data_ptr<float>(), threads, kGradWBudget512, reached,
                                   dead.data());
    return dw;
  }
#endif
  const int64_t ld = kTile * ((N + kTile - 1) / kTile);
  auto gp = padded_grad(g, ld);
  auto dw = torch::zeros({B, K, ld}, g.options());
#if defined(APPMULT_CPU_HAS_AVX2_PATH)
  if (isa != GradIsa::kPortable) {
    appmult_cpu_avx2::lut_grad_w(gp.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                 w.data_ptr<uint8_t>(), as_words(lt), n, B, M, K, N,
                                 dw.data_ptr<float>(), threads);
    return unpad(dw, N);
  }
#endif
  appmult_cpu_portable::lut_grad_w(gp.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                   w.data_ptr<uint8_t>(), as_words(lt), n, B, M, K, N,
                                   dw.data_ptr<float>(), threads);
  return unpad(dw, N);
}

// dA [B, M, K] through the AVX-512 dW kernel on the transposed product (rows over N), G, codes
// and result read and written in place.
torch::Tensor grad_a_transposed512(const torch::Tensor& g, const torch::Tensor& a,
                                   const torch::Tensor& w, const torch::Tensor& ga,
                                   const uint64_t* reached) {
  // The kernel's table is GA itself, read as the transposed table of GA^T (rows: codes of w).
  const int64_t n = ga.size(1), B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  auto da = torch::empty({B, M, K}, g.options());
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  const ZeroLines dead = zero_lines(ga, false);  // columns of GA, reached by w's codes
  appmult_cpu_avx512::lut_grad_a_t(g.data_ptr<float>(), a.data_ptr<uint8_t>(),
                                   w.data_ptr<uint8_t>(), ga.data_ptr<float>(), n, B, M, K, N,
                                   da.data_ptr<float>(), at::get_num_threads(), kGradWBudget512,
                                   reached, dead.data());
#endif
  return da;
}

// Whether dA (grad_a) or dW is cheaper through the other product's kernel on the transposed
// operands (rows over N, tables of nb rows) than through its own kernel (rows over M, na rows),
// for the table-rows kernels (AVX2, portable).
bool grad_transposed(int64_t M, int64_t N, int64_t na, int64_t nb, bool grad_a) {
  const double own = grad_a ? kGradAPerRow : kGradWPerRow;
  const double other = grad_a ? kGradWPerRow : kGradAPerRow;
  return cost(N, M, nb, other) < cost(M, N, na, own);
}

#if defined(APPMULT_CPU_HAS_VBMI_PATH)
// The table rows the AVX-512 gradient kernels build for either orientation of a product: the
// codes of a (rows over M, swept in the direct orientation) and of w (rows over N, swept in the
// transposed one), each scanned only when few rows meet a wide table (rows_reached).
struct BothSides {
  appmult_cpu_avx512::RowsReached a, w;
};

BothSides rows_reached_both(const torch::Tensor& a, const torch::Tensor& w, int64_t na,
                            int64_t nb) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  const int threads = at::get_num_threads();
  return {appmult_cpu_avx512::rows_reached(a.data_ptr<uint8_t>(), M * K, K, 1, B, M, K, na,
                                           threads),
          appmult_cpu_avx512::rows_reached(w.data_ptr<uint8_t>(), K * N, 1, N, B, N, K, nb,
                                           threads)};
}

// As grad_transposed, for the AVX-512 kernels, with the rows their table builds take; `sweep`
// scales the direct orientation's per-row work (dA with dead runs: the share it computes).
bool grad_transposed512(int64_t M, int64_t N, const BothSides& rows, bool grad_a,
                        double sweep = 1.0) {
  const Cost512& own = grad_a ? kGradA512 : kGradW512;
  const Cost512& other = grad_a ? kGradW512 : kGradA512;
  const Cost512 direct = {own.per_row * sweep, own.per_entry};
  return kCopies512 * cost512(N, M, rows.w.built, other) < cost512(M, N, rows.a.built, direct);
}
#endif

// The transpose of every operand of a product: the codes swap roles (a' = w^T, w' = a^T) and so
// do the table's rows and columns.
torch::Tensor t3(const torch::Tensor& t) { return t.transpose(1, 2); }

}  // namespace

std::string best_isa() { return resolve_isa("auto"); }

torch::Tensor lut_bmm(torch::Tensor a, torch::Tensor w, torch::Tensor table, std::string isa) {
  check_indices(a, w);
  TORCH_CHECK(table.scalar_type() == torch::kInt32, "appmult-fx: expected an int32 table, got ",
              table.scalar_type());
  const auto [na, nb] = table_dims(table);
  const int64_t M = a.size(1), N = w.size(2);
  const std::string resolved = resolve_isa(isa);
  const bool avx2 = resolved != "portable";
  a = a.contiguous();
  w = w.contiguous();
  if (a.numel() == 0 || w.numel() == 0)
    return torch::zeros({a.size(0), M, N}, a.options().dtype(torch::kInt32));
  if (resolved == "avx512") {
    const Narrowing nr = narrowing(table.to(torch::kInt64));
    // A narrow side (<= 16 codes) as the column operand: register-permute fast path.
    const int32_t start = nr.start(a.size(2));
    if (nr.fits && appmult_narrow::serves(nb))
      return appmult_narrow::forward(a, w, table, nr.offset, start);
    if (nr.fits && appmult_narrow::serves(na))
      return t3(appmult_narrow::forward(t3(w), t3(a), table.t(), nr.offset, start)).contiguous();
    if (nr.fits)
      return forward_vbmi({a.data_ptr<uint8_t>(), nullptr, a.size(0), M, a.size(2),
                           a.data_ptr<uint8_t>(), a.numel()},
                          w, table, nr);
  }
  if (cost(N, M, nb, kFwdPerRow) < cost(M, N, na, kFwdPerRow)) {
    // Y^T = SUM_k TBL^T[w^T, a^T]: rows over N (codes of w: nb table rows), columns over M.
    auto yt = forward_oriented(w.transpose(1, 2).contiguous(), a.transpose(1, 2).contiguous(),
                               table.contiguous(), nb, avx2);
    return yt.transpose(1, 2).contiguous();
  }
  return forward_oriented(a, w, table.t().contiguous(), na, avx2);
}

namespace {

// The windows of a convolution over channels-last indices x [N, H, W, C] with a (kh, kw)
// kernel: rows[i] for the output pixels in order, cols[k] for K ordered (kh, kw, C).
struct ConvWindows {
  torch::Tensor rows, cols;
  appmult_rows::Windows view;
  int64_t M, K;
};

ConvWindows conv_windows(const torch::Tensor& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t dh, int64_t dw) {
  const int64_t n = x.size(0), h = x.size(1), wd = x.size(2), c = x.size(3);
  TORCH_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1,
              "appmult-fx: expected kernel, stride and dilation >= 1");
  TORCH_CHECK(h >= dh * (kh - 1) + 1 && wd >= dw * (kw - 1) + 1, "appmult-fx: a ", kh, "x", kw,
              " kernel with dilation (", dh, ", ", dw, ") is larger than the input ", h, "x", wd);
  const int64_t ho = (h - dh * (kh - 1) - 1) / sh + 1, wo = (wd - dw * (kw - 1) - 1) / sw + 1;
  ConvWindows cw{torch::empty({n * ho * wo}, x.options().dtype(torch::kInt64)),
                 torch::empty({kh * kw * c}, x.options().dtype(torch::kInt64)),
                 {},
                 n * ho * wo,
                 kh * kw * c};
  int64_t* rows = cw.rows.data_ptr<int64_t>();
  int64_t* cols = cw.cols.data_ptr<int64_t>();
  at::parallel_for(0, cw.M, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (ho * wo), yo = i / wo % ho, xo = i % wo;
      rows[i] = ((b * h + yo * sh) * wd + xo * sw) * c;
    }
  });
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      for (int64_t ch = 0; ch < c; ++ch)
        cols[(i * kw + j) * c + ch] = (i * dh * wd + j * dw) * c + ch;
  cw.view = {x.data_ptr<uint8_t>(), rows, cols};
  return cw;
}

}  // namespace

// Y [1, N*Ho*Wo, O] = SUM_k TBL[im2col(x), w] (int32, mod 2**32) for channels-last indices
// x [N, H, W, C] and w [1, kh*kw*C, O] (K ordered kh, kw, C), with the AVX-512 kernels reading
// the windows where they lie (no im2col matrix where x is their row operand; the VBMI column
// packing copies them once); None where those kernels do not serve (another instruction set, a
// narrow activation side, a table that does not narrow to 16 bits): the caller then gathers
// the im2col matrix for lut_bmm.
std::optional<torch::Tensor> lut_conv_sum(torch::Tensor x, torch::Tensor w, torch::Tensor table,
                                          int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                          int64_t dh, int64_t dw, std::string isa) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.scalar_type() == torch::kUInt8 &&
                  x.is_contiguous(),
              "appmult-fx: expected contiguous uint8 channels-last indices [N, H, W, C] on the "
              "CPU, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(table.scalar_type() == torch::kInt32, "appmult-fx: expected an int32 table, got ",
              table.scalar_type());
  const ConvWindows cw = conv_windows(x, kh, kw, sh, sw, dh, dw);
  TORCH_CHECK(w.device().is_cpu() && w.dim() == 3 && w.size(0) == 1 && w.size(1) == cw.K &&
                  w.scalar_type() == torch::kUInt8,
              "appmult-fx: expected uint8 indices w [1, ", cw.K, ", O] on the CPU, got ",
              w.scalar_type(), " ", w.sizes());
  const auto [na, nb] = table_dims(table);
  const int64_t N = w.size(2);
  if (resolve_isa(isa) != "avx512") return std::nullopt;
  const Narrowing nr = narrowing(table.to(torch::kInt64));
  if (!nr.fits || (!appmult_narrow::serves(nb) && appmult_narrow::serves(na))) return std::nullopt;
  if (cw.M == 0 || cw.K == 0 || N == 0)
    return torch::zeros({1, cw.M, N}, x.options().dtype(torch::kInt32));
  w = w.contiguous();
  const int32_t start = nr.start(cw.K);
  if (appmult_narrow::serves(nb))
    return appmult_narrow::forward_windows(cw.view, cw.M, cw.K, w, table, nr.offset, start);
  return forward_vbmi({nullptr, &cw.view, 1, cw.M, cw.K, x.data_ptr<uint8_t>(), x.numel()}, w,
                      table, nr);
}

// The two gradient products are each other's transpose: with G' = G^T, a' = w^T, w' = a^T,
// dA = (grad_w(G', a', w', GA^T))^T and dW = (grad_a(G', a', w', GW^T))^T; the binding runs the
// orientation whose table builds are amortised over more rows.
namespace {

constexpr int64_t kRun = appmult::kDeadRun;

// Share of the set flags among at most 65536 of `dead`.
double flag_share(const torch::Tensor& dead) {
  const int64_t size = dead.numel();
  if (size == 0) return 0.0;
  const uint8_t* flags = dead.data_ptr<uint8_t>();
  const int64_t step = std::max<int64_t>(1, size >> 16);
  int64_t hits = 0, seen = 0;
  for (int64_t i = 0; i < size; i += step, ++seen) hits += flags[i] != 0;
  return static_cast<double>(hits) / static_cast<double>(seen);
}

// da [B, M, K] with the runs `dead` [B, M, ceil(K / 16)] flags set to 0.
torch::Tensor zero_runs(torch::Tensor da, const torch::Tensor& dead) {
  const int64_t K = da.size(2), R = dead.size(2);
  float* out = da.data_ptr<float>();
  const uint8_t* flags = dead.data_ptr<uint8_t>();
  at::parallel_for(0, da.size(0) * da.size(1), 1024, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      for (int64_t r = 0; r < R; ++r)
        if (flags[row * R + r] != 0)
          std::fill(out + row * K + r * kRun, out + row * K + std::min(K, (r + 1) * kRun), 0.0f);
  });
  return da;
}

std::atomic<int64_t> g_dead_run_calls{0};  // skip_counts(): dA calls that skipped dead runs

}  // namespace

torch::Tensor lut_bmm_grad_a(torch::Tensor g, torch::Tensor a, torch::Tensor w, torch::Tensor ga,
                             std::string isa, std::optional<torch::Tensor> dead) {
  check_indices(a, w);
  TORCH_CHECK(ga.scalar_type() == torch::kFloat32, "appmult-fx: expected a float32 ga, got ",
              ga.scalar_type());
  const auto [na, nb] = table_dims(ga);
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  TORCH_CHECK(g.dim() == 3 && g.size(0) == B && g.size(1) == M && g.size(2) == N,
              "appmult-fx: expected g of shape [", B, ",", M, ",", N, "], got ", g.sizes());
  const int64_t R = (K + kRun - 1) / kRun;
  TORCH_CHECK(!dead.has_value() ||
                  (dead->device().is_cpu() && dead->scalar_type() == torch::kUInt8 &&
                   dead->dim() == 3 && dead->size(0) == B && dead->size(1) == M &&
                   dead->size(2) == R && dead->is_contiguous()),
              "appmult-fx: expected contiguous uint8 dead-run flags [", B, ", ", M, ", ", R,
              "] on the CPU");
  const GradIsa gi = grad_isa(isa);
  if (B * M * K == 0 || N == 0) return torch::zeros({B, M, K}, g.options());
  const auto zeroed = [&](torch::Tensor da) {
    return dead.has_value() ? zero_runs(da.contiguous(), *dead) : da;
  };
  if (gi == GradIsa::kAvx512 && appmult_narrow::serves(nb))
    return zeroed(appmult_narrow::grad_a(g, a, w, ga));
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  if (gi == GradIsa::kAvx512) {
    a = a.contiguous(), w = w.contiguous();
    const BothSides rows = rows_reached_both(a, w, na, nb);
    const double sweep = dead.has_value() ? 1.0 - flag_share(*dead) : 1.0;
    if (grad_transposed512(M, N, rows, true, sweep))
      return zeroed(grad_a_transposed512(g.contiguous(), a, w, ga.contiguous(), rows.w.data()));
    if (dead.has_value()) g_dead_run_calls.fetch_add(1, std::memory_order_relaxed);
    return grad_a_direct(g.contiguous(), a, w, ga.contiguous(), gi, rows.a.data(),
                         dead.has_value() ? dead->data_ptr<uint8_t>() : nullptr);
  }
#endif
  if (grad_transposed(M, N, na, nb, true))
    return zeroed(transposed(grad_w_direct(transposed(g), transposed(w), transposed(a),
                                           ga.t().contiguous(), gi)));
  return zeroed(
      grad_a_direct(g.contiguous(), a.contiguous(), w.contiguous(), ga.contiguous(), gi));
}

torch::Tensor lut_bmm_grad_w(torch::Tensor g, torch::Tensor a, torch::Tensor w, torch::Tensor gw,
                             std::string isa) {
  check_indices(a, w);
  TORCH_CHECK(gw.scalar_type() == torch::kFloat32, "appmult-fx: expected a float32 gw, got ",
              gw.scalar_type());
  const auto [na, nb] = table_dims(gw);
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = w.size(2);
  TORCH_CHECK(g.dim() == 3 && g.size(0) == B && g.size(1) == M && g.size(2) == N,
              "appmult-fx: expected g of shape [", B, ",", M, ",", N, "], got ", g.sizes());
  const GradIsa gi = grad_isa(isa);
  if (B * K * N == 0 || M == 0) return torch::zeros({B, K, N}, g.options());
  if (gi == GradIsa::kAvx512 && appmult_narrow::serves(nb))
    return appmult_narrow::grad_w(g, a, w, gw);
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  if (gi == GradIsa::kAvx512) {
    a = a.contiguous(), w = w.contiguous();
    const BothSides rows = rows_reached_both(a, w, na, nb);
    if (grad_transposed512(M, N, rows, false))  // the dA kernel sweeps w^T's codes
      return transposed(grad_a_direct(transposed(g), transposed(w), transposed(a),
                                      gw.t().contiguous(), gi, rows.w.data()));
    return grad_w_direct(g.contiguous(), a, w, gw.contiguous(), gi, rows.a.data());
  }
#endif
  if (grad_transposed(M, N, na, nb, false))
    return transposed(grad_a_direct(transposed(g), transposed(w), transposed(a),
                                    gw.t().contiguous(), gi));
  return grad_w_direct(g.contiguous(), a.contiguous(), w.contiguous(), gw.contiguous(), gi);
}

// Counters of the skips since the extension loaded: (VBMI forward calls that skipped all-zero
// rows, dW row blocks that left rows out, dA calls whose direct kernel skipped dead runs); the
// first two 0 on builds without the AVX-512 kernels.
std::tuple<int64_t, int64_t, int64_t> skip_counts() {
#if defined(APPMULT_CPU_HAS_VBMI_PATH)
  return {appmult_cpu_vbmi::skipping_calls(), appmult_cpu_avx512::compacted_blocks(),
          g_dead_run_calls.load()};
#else
  return {0, 0, g_dead_run_calls.load()};
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "appmult-fx CPU LUT-GEMM kernels";
  m.def("best_isa", &best_isa, "instruction set 'auto' selects on this CPU");
  m.def("resolve_isa", &resolve_isa, "instruction set a request for `isa` runs on this CPU");
  m.def("bit_limits", &appmult::bit_limits, "(MIN_BITS, MAX_BITS) the table checks use");
  m.def("lut_bmm", &lut_bmm, "Y = SUM_k T[a, w] (int32, mod 2**32)");
  m.def("lut_conv_sum", &lut_conv_sum, "Y = SUM_k T[im2col(x), w] by the AVX-512 kernels, or None");
  m.def("lut_bmm_grad_a", &lut_bmm_grad_a,
        "dA = SUM_n G * GA[a, w], 0 in the runs of 16 k flagged dead", pybind11::arg("g"),
        pybind11::arg("a"), pybind11::arg("w"), pybind11::arg("ga"), pybind11::arg("isa"),
        pybind11::arg("dead") = pybind11::none());
  m.def("lut_bmm_grad_w", &lut_bmm_grad_w, "dW = SUM_m G * GW[a, w]");
  m.def("skip_counts", &skip_counts,
        "(forward calls that skipped all-zero rows, dW row blocks that left rows out, dA calls "
        "that skipped dead runs) so far");
  m.def("quantize_forward", &quantize_forward,
        "(round(clamp(x / s - zp)), clamp mask, any NaN or inf in x)");
  m.def("quantize_backward", &quantize_backward, "g / s, 0 where clamped");
  m.def("codes_to_indices_3d", &codes_to_indices_3d, "uint8 indices of a 3-D view of codes");
  m.def("contiguous_3d", &contiguous_3d, "a contiguous copy of a 3-D float32 view");
  m.def("planes_from_rows", &planes_from_rows, "float32 [N, C, P] of int32 rows [N, P, C]");
  m.def("fold_into_planes", &fold_into_planes, "col2im of one group's columns into out");
  m.def("dead_runs", &dead_runs, "flags of the runs of 16 im2col entries of a conv that are 0");
  m.def("zero_where_zero", &zero_where_zero, "grad = 0 where x is 0, in place");
  m.def("dead_run", [] { return appmult::kDeadRun; }, "k per run a dead-run flag covers");
  m.def("rescale_forward", &rescale_forward, "float32(double(acc) * scale)");
  m.def("rescale_backward", &rescale_backward, "double(g) * scale, as acc's dtype");
}
