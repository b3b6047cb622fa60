#include "encode/mlx_aware_k_quants.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "encode/k_quants.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

namespace {

constexpr int kSuperBlock = static_cast<int>(kKQuantSuperBlock);
constexpr int kSubBlocks = 8;
constexpr int kSubBlock = kSuperBlock / kSubBlocks;
constexpr int kMaxScaleCode = 63;  // 6-bit sc and m

// Round to nearest, ties to even, for |v| < 2^22 (the magic constant 1.5·2^23 leaves no fraction bits); written
// without a rounding instruction so that loops over it vectorise on any x86-64 or arm64 baseline. NaN stays NaN.
inline float rounded(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

float rounded_to_f16(float v) { return f16_to_f32(f32_to_f16(v)); }

// The same as rounded_to_f16 for finite |v| < 65520 (what fp16 holds without overflowing), written without
// branches so that loops over it vectorise: normal results round the float's mantissa to 10 bits (ties to even,
// a carry moves into the exponent); subnormal ones round to a multiple of 2^-24.
inline float rounded_to_f16_in_range(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const uint32_t sign = bits & 0x80000000u, magnitude = bits & 0x7fffffffu;
  const uint32_t normal = (magnitude + 0xfffu + ((magnitude >> 13) & 1u)) & ~0x1fffu;
  const float subnormal = rounded(std::fabs(v) * 0x1p24f) * 0x1p-24f;
  const uint32_t result = magnitude >= 0x38800000u ? normal : std::bit_cast<uint32_t>(subnormal);
  return std::bit_cast<float>(result | sign);
}

// rounded_to_f16 of n values: the branch-free form for all, then the exact one where it does not apply.
void round_to_f16(const float* in, float* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = rounded_to_f16_in_range(in[i]);
  for (int i = 0; i < n; ++i)
    if (!(std::fabs(in[i]) < 65504.0f)) out[i] = rounded_to_f16(in[i]);  // 65504 and above, inf, NaN
}

// round(v) (halves away from zero) clamped to 0..hi; NaN and negative values give 0.
int nearest_code(float v, int hi) {
  const float positive = v > 0 ? v : 0.0f;
  const float limited = positive < static_cast<float>(hi) ? positive : static_cast<float>(hi);
  const int whole = static_cast<int>(limited);
  return whole + (limited - static_cast<float>(whole) >= 0.5f ? 1 : 0);
}

// An MLX group's values as offset + step·code with integer codes 0..span.
struct Lattice {
  float offset = 0, step = 0;
  int span = 0;
  bool exact = false;
};

// The coarsest lattice with at most `levels` steps that holds every value of the group (up to float rounding of
// the dequantization), found by trying spans from `levels` down: a group whose codes cover 0..levels has span
// levels; one that uses fewer codes is still held exactly by a finer lattice through its minimum.
Lattice infer_lattice(const float* x, int n, int levels) {
  const auto [lo, hi] = std::minmax_element(x, x + n);
  Lattice lattice{*lo, 0.0f, 0, false};
  if (*hi == *lo) {
    lattice.exact = true;
    return lattice;
  }
  const float tolerance = 1e-3f;
  for (int span = levels; span >= 1; --span) {
    const float step = (*hi - *lo) / static_cast<float>(span);
    int off_lattice = 0;  // counted over the whole group (no early exit) so that the loop vectorises
    for (int i = 0; i < n; ++i) {
      const float r = (x[i] - *lo) / step;
      off_lattice += std::fabs(r - rounded(r)) > tolerance ? 1 : 0;
    }
    if (off_lattice == 0) return {*lo, step, span, true};
  }
  return lattice;
}

// What the search aims at for one sub-block: value = step·code - min over its codes (min >= 0 as the format
// requires), and the codes' sums that give the squared error of any stored step and min in closed form.
struct SubBlockTarget {
  float step = 0, min = 0;
  double sum_codes = 0, sum_codes2 = 0;
};

void set_codes(SubBlockTarget& target, const float* x, int nmax) {
  target.sum_codes = target.sum_codes2 = 0;
  for (int i = 0; i < kSubBlock; ++i) {
    const int code = target.step > 0 ? nearest_code((x[i] + target.min) / target.step, nmax) : 0;
    target.sum_codes += code;
    target.sum_codes2 += static_cast<double>(code) * code;
  }
}

// A sub-block whose values are not one MLX lattice (or whose lattice cannot be placed in 0..nmax): the plain
// min/max mapping.
SubBlockTarget plain_target(const float* x, int nmax) {
  const auto [lo, hi] = std::minmax_element(x, x + kSubBlock);
  SubBlockTarget target;
  target.min = -std::min(0.0f, *lo);
  target.step = (*hi + target.min) / static_cast<float>(nmax);
  set_codes(target, x, nmax);
  return target;
}

// The sub-block on its group's lattice, refined by the largest factor k that keeps codes k·q (shifted up when the
// lattice starts above zero, which the format's min >= 0 cannot express) within 0..nmax.
SubBlockTarget lattice_target(const float* x, const Lattice& lattice, int nmax) {
  if (!lattice.exact || lattice.step == 0) return plain_target(x, nmax);
  for (int k = nmax / lattice.span; k >= 1; --k) {
    const float step = lattice.step / static_cast<float>(k);
    const int shift = lattice.offset > 0 ? static_cast<int>(std::ceil(lattice.offset / step)) : 0;
    if (k * lattice.span + shift > nmax) continue;
    SubBlockTarget target;
    target.step = step;
    target.min = shift * step - lattice.offset;
    set_codes(target, x, nmax);
    return target;
  }
  return plain_target(x, nmax);
}

// rounded(v) clamped to [lo, hi] first; NaN becomes lo.
inline float clamped_rounded(float v, float lo, float hi) {
  const float raised = lo < v ? v : lo;
  return rounded(raised < hi ? raised : hi);
}

// The same as an integer code; NaN gives code 0.
int clamped_code(float v, int lo, int hi) {
  if (std::isnan(v)) return 0;
  return static_cast<int>(clamped_rounded(v, static_cast<float>(lo), static_cast<float>(hi)));
}

// Weighted squared errors, and least-squares refits Σw·t·c / Σw·c², of `Count` targets coded with each of
// `kLanes` factors: code = round(target / factor) clamped to [lo, hi]. Lanes are independent (one factor each),
// so the loops vectorise without reordering any sum.
constexpr int kLanes = 56;  // the 49 candidates below, rounded up to a multiple of 8 lanes

template <int Count>
void evaluate_factors(const float* targets, const float* weights, float lo, float hi, const float* factors,
                      float* errors, float* refits) {
  // Local copies: the compiler can keep them in registers without checking the caller's arrays for overlap.
  float factor[kLanes], inverse[kLanes], error[kLanes] = {}, sum_tc[kLanes] = {}, sum_cc[kLanes] = {};
  for (int i = 0; i < kLanes; ++i) {
    factor[i] = factors[i];
    inverse[i] = 1.0f / factors[i];
  }
  for (int j = 0; j < Count; ++j) {
    const float t = targets[j], w = weights[j];
    for (int i = 0; i < kLanes; ++i) {
      const float code = clamped_rounded(t * inverse[i], lo, hi);
      const float diff = factor[i] * code - t;
      error[i] += w * diff * diff;
      sum_tc[i] += w * t * code;
      sum_cc[i] += w * code * code;
    }
  }
  for (int i = 0; i < kLanes; ++i) {
    errors[i] = error[i];
    refits[i] = sum_cc[i] > 0 ? sum_tc[i] / sum_cc[i] : 0.0f;
  }
}

bool usable_factor(float factor) { return factor > 0 && std::isfinite(factor); }

// One fp16 factor and integer codes in [lo, hi] for `Count` targets: the factor f minimising
// Σ weight·(f·code - target)² with code = round(target / f), over factors that give the target of largest
// magnitude a code of (top - 12)..top in quarter steps, each also refitted by least squares (candidates in that
// order, the first of equal errors kept). Returns the factor (as stored).
template <int Count>
float fit_factor(const float* targets, const float* weights, int lo, int hi, int* codes) {
  float largest = 0;
  for (int j = 0; j < Count; ++j) largest = std::max(largest, std::fabs(targets[j]));
  std::fill(codes, codes + Count, 0);
  if (!(largest > 0) || !std::isfinite(largest)) return 0;
  const float top = static_cast<float>(std::max(hi, -lo));
  const float lo_code = static_cast<float>(lo), hi_code = static_cast<float>(hi);
  constexpr int kCandidates = 49;
  float unrounded[kLanes], factors[kLanes], refits[kLanes], errors[kLanes], refit_errors[kLanes], unused[kLanes];
  for (int i = 0; i < kLanes; ++i)
    unrounded[i] = i < kCandidates ? largest / (top - 0.25f * static_cast<float>(i)) : 1.0f;
  round_to_f16(unrounded, factors, kLanes);
  evaluate_factors<Count>(targets, weights, lo_code, hi_code, factors, errors, refits);
  std::copy(refits, refits + kLanes, unrounded);
  round_to_f16(unrounded, refits, kLanes);
  evaluate_factors<Count>(targets, weights, lo_code, hi_code, refits, refit_errors, unused);
  float best_error = INFINITY, best = 0;
  for (int i = 0; i < kCandidates; ++i) {
    if (!usable_factor(factors[i])) continue;
    if (errors[i] < best_error) best_error = errors[i], best = factors[i];
    if (usable_factor(refits[i]) && refit_errors[i] < best_error) best_error = refit_errors[i], best = refits[i];
  }
  if (best == 0) return 0;
  const float inverse = 1.0f / best;
  for (int j = 0; j < Count; ++j) codes[j] = static_cast<int>(clamped_rounded(targets[j] * inverse, lo_code, hi_code));
  return best;
}

struct Header {
  float d = 0, dmin = 0;
  uint8_t scale_codes[kSubBlocks] = {}, min_codes[kSubBlocks] = {};
};

// d, dmin and the 6-bit codes for the targets: the step factor first (the min assumed exact), then the min
// factor given the steps' errors, then both again given each other.
Header fit_header(const SubBlockTarget* targets) {
  Header h;
  float steps[kSubBlocks], mins[kSubBlocks];
  float step_weights[kSubBlocks], min_weights[kSubBlocks];
  for (int j = 0; j < kSubBlocks; ++j) {
    steps[j] = targets[j].step;
    step_weights[j] = static_cast<float>(std::max(targets[j].sum_codes2, 1e-6));
    min_weights[j] = kSubBlock;
  }
  int codes[kSubBlocks];
  for (int round = 0; round < 3; ++round) {
    float round_steps[kSubBlocks];
    std::copy(steps, steps + kSubBlocks, round_steps);
    h.d = fit_factor<kSubBlocks>(steps, step_weights, 0, kMaxScaleCode, codes);
    std::copy(codes, codes + kSubBlocks, h.scale_codes);
    // Given the stored step's error e, the sub-block's error is least with min' = min + e·mean(code).
    for (int j = 0; j < kSubBlocks; ++j) {
      const double step_error = static_cast<double>(h.d) * h.scale_codes[j] - targets[j].step;
      mins[j] = std::max(0.0f, static_cast<float>(targets[j].min + step_error * targets[j].sum_codes / kSubBlock));
    }
    h.dmin = fit_factor<kSubBlocks>(mins, min_weights, 0, kMaxScaleCode, codes);
    std::copy(codes, codes + kSubBlocks, h.min_codes);
    // Given the stored min's error, the best step is step + error·Σcode / Σcode².
    for (int j = 0; j < kSubBlocks; ++j) {
      const double min_error = static_cast<double>(h.dmin) * h.min_codes[j] - targets[j].min;
      steps[j] = targets[j].sum_codes2 > 0
                     ? std::max(0.0f, static_cast<float>(targets[j].step + min_error * targets[j].sum_codes / targets[j].sum_codes2))
                     : targets[j].step;
    }
    // The same steps again would give the same header.
    if (std::equal(steps, steps + kSubBlocks, round_steps)) break;
  }
  return h;
}

// Packs a Q4_K/Q5_K header: fp16 d, fp16 dmin, then 8 six-bit scale codes and 8 six-bit min codes in 12 bytes
// (sub-blocks 0..3 in the low 6 bits of bytes 0..3 and 4..7; sub-blocks 4..7 as nibbles in bytes 8..11 with their
// high two bits in the top bits of bytes 0..7).
void write_header(const Header& h, uint8_t* out) {
  const uint16_t d = f32_to_f16(h.d), dmin = f32_to_f16(h.dmin);
  std::memcpy(out, &d, 2);
  std::memcpy(out + 2, &dmin, 2);
  uint8_t* scales = out + 4;
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(h.scale_codes[j] | (h.scale_codes[j + 4] >> 4) << 6);
    scales[j + 4] = static_cast<uint8_t>(h.min_codes[j] | (h.min_codes[j + 4] >> 4) << 6);
    scales[j + 8] = static_cast<uint8_t>((h.scale_codes[j + 4] & 0xF) | (h.min_codes[j + 4] & 0xF) << 4);
  }
}

// Codes nearest to x for the stored header; returns the squared error of the decoded block.
double final_codes(const float* x, const Header& h, int nmax, uint8_t* codes, float* decoded) {
  double error = 0;
  for (int j = 0; j < kSubBlocks; ++j) {
    const float step = h.d * static_cast<float>(h.scale_codes[j]);
    const float offset = h.dmin * static_cast<float>(h.min_codes[j]);
    for (int i = 0; i < kSubBlock; ++i) {
      const int e = kSubBlock * j + i;
      codes[e] = static_cast<uint8_t>(step > 0 ? nearest_code((x[e] + offset) / step, nmax) : 0);
      decoded[e] = step * static_cast<float>(codes[e]) - offset;
      const double diff = static_cast<double>(decoded[e]) - x[e];
      error += diff * diff;
    }
  }
  return error;
}

void pack_q4_k(const Header& h, const uint8_t* codes, uint8_t* out) {
  write_header(h, out);
  uint8_t* qs = out + 16;
  for (int pair = 0; pair < 4; ++pair)
    for (int i = 0; i < 32; ++i) qs[32 * pair + i] = static_cast<uint8_t>(codes[64 * pair + i] | codes[64 * pair + 32 + i] << 4);
}

void pack_q5_k(const Header& h, const uint8_t* codes, uint8_t* out) {
  write_header(h, out);
  uint8_t* qh = out + 16;
  uint8_t* qs = out + 48;
  std::memset(qh, 0, 32);
  for (int j = 0; j < kSubBlocks; ++j)
    for (int i = 0; i < 32; ++i) qh[i] |= static_cast<uint8_t>((codes[32 * j + i] >> 4) << j);
  for (int pair = 0; pair < 4; ++pair)
    for (int i = 0; i < 32; ++i)
      qs[32 * pair + i] = static_cast<uint8_t>((codes[64 * pair + i] & 0xF) | (codes[64 * pair + 32 + i] & 0xF) << 4);
}

struct KFormat {
  int nmax;
  int64_t block_bytes;
  void (*pack)(const Header&, const uint8_t*, uint8_t*);
  void (*reference_encode)(const float*, int64_t, uint8_t*);
  void (*reference_decode)(const uint8_t*, int64_t, float*);
};

KFormat format_of(GgmlType type) {
  if (type == GgmlType::Q4_K) return {15, kQ4KBlockBytes, pack_q4_k, quantize_row_q4_k, dequantize_row_q4_k};
  if (type == GgmlType::Q5_K) return {31, kQ5KBlockBytes, pack_q5_k, quantize_row_q5_k, dequantize_row_q5_k};
  fail("internal error: no MLX-aware encoding for {}", ggml_type_info(type).name);
}

double squared_error(const float* a, const float* b, int n) {
  double error = 0;
  for (int i = 0; i < n; ++i) error += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return error;
}

void encode_super_block(const KFormat& format, const QuantSpec& spec, const float* x, uint8_t* out) {
  const int group = static_cast<int>(spec.group_size);
  const int levels = (1 << spec.bits) - 1;
  SubBlockTarget targets[kSubBlocks];
  for (int g = 0; g < kSuperBlock / group; ++g) {
    const Lattice lattice = infer_lattice(x + g * group, group, levels);
    for (int j = g * group / kSubBlock; j < (g + 1) * group / kSubBlock; ++j)
      targets[j] = lattice_target(x + kSubBlock * j, lattice, format.nmax);
  }
  const Header header = fit_header(targets);
  uint8_t codes[kSuperBlock];
  float ours[kSuperBlock];
  const double our_error = final_codes(x, header, format.nmax, codes, ours);

  // `out` holds ggml's encoding of the same values, kept when it decodes closer (e.g. values off any MLX lattice).
  float theirs[kSuperBlock];
  format.reference_decode(out, kSuperBlock, theirs);
  if (our_error < squared_error(theirs, x, kSuperBlock)) format.pack(header, codes, out);
}

// ---------------------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, codes -4..3, value = d·sc·code with a signed 6-bit sc (-32..31) and no minimum.
// MLX's affine quantizer maps the group's edge to an integer code, so zero lies on every MLX lattice: a sub-block
// whose codes counted from the zero code lie in -4..3 (or in -3..4, with a negative scale) is exact with d·sc = ±s.
// Stored scale and bias are each rounded to bf16/f16, so zero sits up to about 1% of a step off the lattice; up to
// 5% is accepted (an error far below any re-rounding).
// Other sub-blocks aim at the step of least squared error (ggml's starting point, the largest magnitude at code
// -4, among the candidates).

constexpr int kQ3SubBlocks = 16;
constexpr int kQ3SubBlock = kSuperBlock / kQ3SubBlocks;

// Squared error of a Q3_K sub-block coded with `step` (codes -4..3), and the least-squares step for those codes.
double q3_k_error(const float* x, float step, float* refit) {
  double error = 0, sum_xc = 0, sum_cc = 0;
  for (int i = 0; i < kQ3SubBlock; ++i) {
    const int code = step != 0 ? clamped_code(x[i] / step, -4, 3) : 0;
    const double diff = static_cast<double>(step) * code - x[i];
    error += diff * diff;
    sum_xc += static_cast<double>(x[i]) * code;
    sum_cc += static_cast<double>(code) * code;
  }
  *refit = sum_cc > 0 ? static_cast<float>(sum_xc / sum_cc) : 0.0f;
  return error;
}

// A sub-block that is not exact on its group's lattice (its codes around zero need more than 8 values): the step
// of least squared error among steps that give the largest magnitude a code of ±1..±4.5 in eighths (clipping
// the extreme code when that costs less), the lattice step and twice it, each also refitted by least squares.
// ggml's choice (the largest magnitude at code -4) is the first candidate.
float q3_k_least_error_step(const float* x, const Lattice& lattice) {
  float largest = 0;
  for (int i = 0; i < kQ3SubBlock; ++i)
    if (std::fabs(x[i]) > std::fabs(largest)) largest = x[i];
  if (largest == 0 || !std::isfinite(largest)) return largest / -4.0f;
  float best_step = largest / -4.0f, refit = 0;
  double best_error = q3_k_error(x, best_step, &refit);
  auto consider = [&](float step) {
    for (int attempt = 0; attempt < 2 && step != 0 && std::isfinite(step); ++attempt) {
      const double error = q3_k_error(x, step, &refit);
      if (error < best_error) best_error = error, best_step = step;
      step = refit;
    }
  };
  const float magnitude = std::fabs(largest);
  for (int i = 0; i <= 28; ++i) {
    const float step = magnitude / (4.5f - 0.125f * static_cast<float>(i));
    consider(step);
    consider(-step);
  }
  if (lattice.exact)
    for (float step : {lattice.step, 2 * lattice.step}) {
      consider(step);
      consider(-step);
    }
  return best_step;
}

float q3_k_target_step(const float* x, const Lattice& lattice) {
  if (lattice.exact && lattice.step > 0) {
    const float zero = -lattice.offset / lattice.step;
    if (std::fabs(zero - std::nearbyint(zero)) <= 0.05f) {
      int lo = 1 << 30, hi = -(1 << 30);
      for (int i = 0; i < kQ3SubBlock; ++i) {
        const int code = static_cast<int>(std::nearbyint((x[i] - lattice.offset) / lattice.step - std::nearbyint(zero)));
        lo = std::min(lo, code);
        hi = std::max(hi, code);
      }
      if (lo >= -4 && hi <= 3) return lattice.step;
      if (lo >= -3 && hi <= 4) return -lattice.step;
    }
  }
  return q3_k_least_error_step(x, lattice);
}

void pack_q3_k(float d, const int* scale_codes, const uint8_t* codes, uint8_t* out) {
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  uint8_t* scales = out + 96;
  std::memset(scales, 0, 12);
  for (int j = 0; j < kQ3SubBlocks; ++j) {
    const int biased = scale_codes[j] + 32;
    scales[j % 8] |= static_cast<uint8_t>((biased & 0xF) << (j < 8 ? 0 : 4));
    scales[8 + j % 4] |= static_cast<uint8_t>((biased >> 4) << (2 * (j / 4)));
  }
  for (int l = 0; l < 32; ++l) {
    int bits = 0;
    for (int k = 0; k < 8; ++k) bits |= (codes[32 * k + l] >> 2) << k;
    hmask[l] = static_cast<uint8_t>(bits);
  }
  for (int half = 0; half < 2; ++half) {
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; ++l)
      qs[32 * half + l] =
          static_cast<uint8_t>((c[l] & 3) | (c[l + 32] & 3) << 2 | (c[l + 64] & 3) << 4 | (c[l + 96] & 3) << 6);
  }
  const uint16_t stored = f32_to_f16(d);
  std::memcpy(out + 108, &stored, 2);
}

void encode_q3_k_super_block(const QuantSpec& spec, const float* x, uint8_t* out) {
  const int group = static_cast<int>(spec.group_size);
  float steps[kQ3SubBlocks];
  float weights[kQ3SubBlocks];
  for (int g = 0; g < kSuperBlock / group; ++g) {
    const Lattice lattice = infer_lattice(x + g * group, group, (1 << spec.bits) - 1);
    for (int j = g * group / kQ3SubBlock; j < (g + 1) * group / kQ3SubBlock; ++j) {
      const float* xs = x + kQ3SubBlock * j;
      steps[j] = q3_k_target_step(xs, lattice);
      double sum = 0;
      for (int i = 0; i < kQ3SubBlock && steps[j] != 0; ++i) {
        const int code = clamped_code(xs[i] / steps[j], -4, 3);
        sum += code * code;
      }
      weights[j] = static_cast<float>(std::max(sum, 1e-6));
    }
  }
  int scale_codes[kQ3SubBlocks];
  const float d = fit_factor<kQ3SubBlocks>(steps, weights, -32, 31, scale_codes);
  uint8_t codes[kSuperBlock];
  double our_error = 0;
  for (int j = 0; j < kQ3SubBlocks; ++j) {
    const float step = d * static_cast<float>(scale_codes[j]);
    for (int i = 0; i < kQ3SubBlock; ++i) {
      const int e = kQ3SubBlock * j + i;
      const int code = step != 0 ? clamped_code(x[e] / step, -4, 3) : 0;
      codes[e] = static_cast<uint8_t>(code + 4);
      const double diff = static_cast<double>(step * static_cast<float>(code)) - x[e];
      our_error += diff * diff;
    }
  }
  // `out` holds ggml's encoding, kept when it decodes closer.
  float theirs[kSuperBlock];
  dequantize_row_q3_k(out, kSuperBlock, theirs);
  if (our_error < squared_error(theirs, x, kSuperBlock)) pack_q3_k(d, scale_codes, codes, out);
}

}  // namespace

bool has_mlx_aware_encoding(GgmlType type, const QuantSpec& spec) {
  if (spec.mode != QuantMode::Affine) return false;
  if (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128) return false;
  if (type == GgmlType::Q3_K) return spec.bits >= 2 && spec.bits <= 3;
  if (type == GgmlType::Q4_K) return spec.bits >= 2 && spec.bits <= 4;
  if (type == GgmlType::Q5_K) return spec.bits >= 2 && spec.bits <= 5;
  return false;
}

void encode_rows_mlx_aware(GgmlType type, const QuantSpec& spec, const float* in, int64_t rows, int64_t row_length,
                           uint8_t* out) {
  if (!has_mlx_aware_encoding(type, spec) || row_length % kSuperBlock != 0)
    fail("internal error: no MLX-aware {} encoding for rows of {}", ggml_type_info(type).name, row_length);
  const int64_t blocks = rows * (row_length / kSuperBlock);
  // ggml's encoding of every super-block first (its search kernels are fastest over many blocks); each super-block
  // then keeps it or takes the MLX-aware encoding, whichever decodes closer to the input.
  if (type == GgmlType::Q3_K) {
    quantize_row_q3_k(in, blocks * kSuperBlock, out);
    for (int64_t b = 0; b < blocks; ++b) encode_q3_k_super_block(spec, in + b * kSuperBlock, out + b * kQ3KBlockBytes);
    return;
  }
  const KFormat format = format_of(type);
  format.reference_encode(in, blocks * kSuperBlock, out);
  for (int64_t b = 0; b < blocks; ++b) encode_super_block(format, spec, in + b * kSuperBlock, out + b * format.block_bytes);
}

}  // namespace mlx2gguf
