#include "encode/k_quants.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "util/half.h"

// How to read this file. Each super-block of 256 floats is cut into sub-blocks (16 of 16 elements, or 8 of 32).
// A search routine first gives every sub-block its own float scale (and, for the asymmetric types, a float
// minimum); the super-block then stores those values as small integer codes times one fp16 factor, and finally
// every element is re-rounded against the scale that was actually stored.
//
// The arithmetic deliberately repeats the reference quantizer's float operations in the same order (the build
// uses -ffp-contract=off for the same reason): this is what makes our bytes identical to ggml's. The searches
// are where the time goes; they run all sub-blocks of a super-block side by side, one sub-block per SIMD lane,
// and since every lane performs exactly the scalar IEEE operations of that sub-block, the results stay the same.

namespace mlx2gguf {
namespace {

constexpr int kSuperBlock = static_cast<int>(kKQuantSuperBlock);

// A sub-block whose largest magnitude is below this counts as all zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round half to even. Adding 1.5·2^23 pushes the fraction out of the mantissa, so the FPU's own rounding does
// the work and the integer sits in the low mantissa bits. Meaningless beyond ±2^22, where callers clamp anyway.
inline int32_t nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  return static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) & 0x007fffffu) - 0x00400000;
}

inline int clamped_nearest(float v, int lo, int hi) { return std::clamp(nearest_int(v), lo, hi); }

inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ---------------------------------------------------------------------------------------------------------------
// Lane arithmetic: GCC/Clang vector types, which every target lowers to its own SIMD (SSE2, NEON, ...).

using Vec4 = float __attribute__((vector_size(16)));
using Int4 = int32_t __attribute__((vector_size(16)));  // comparisons of Vec4 give all-ones / all-zero lanes

inline Vec4 splat(float v) { return Vec4{v, v, v, v}; }
inline Int4 splat(int32_t v) { return Int4{v, v, v, v}; }

// Lanes of `if_true` where `mask` is all ones, of `if_false` elsewhere.
inline Vec4 select(Int4 mask, Vec4 if_true, Vec4 if_false) {
  return std::bit_cast<Vec4>((mask & std::bit_cast<Int4>(if_true)) | (~mask & std::bit_cast<Int4>(if_false)));
}
inline Int4 select(Int4 mask, Int4 if_true, Int4 if_false) { return (mask & if_true) | (~mask & if_false); }

inline Int4 clamped_nearest(Vec4 v, int32_t lo, int32_t hi) {
  Int4 code = (std::bit_cast<Int4>(v + splat(12582912.0f)) & splat(0x007fffff)) - splat(0x00400000);
  code = select(code < splat(lo), splat(lo), code);
  return select(code > splat(hi), splat(hi), code);
}

// The searches multiply codes with floats, so they keep them as floats.
inline Vec4 clamped_code(Vec4 v, int32_t lo, int32_t hi) {
  return __builtin_convertvector(clamped_nearest(v, lo, hi), Vec4);
}

inline Vec4 absolute(Vec4 v) { return std::bit_cast<Vec4>(std::bit_cast<Int4>(v) & splat(0x7fffffff)); }

// 4·kGroups sub-blocks of N elements, transposed: element i of sub-block 4g + k is lane k of x[i][g]. `w` holds
// the search's weight of each element (x² when load_lanes gets no weights).
template <int kGroups, int N>
struct SubBlockLanes {
  Vec4 x[N][kGroups];
  Vec4 w[N][kGroups];
};

template <int kGroups, int N>
void load_lanes(const float* x, const float* w, SubBlockLanes<kGroups, N>& lanes) {
  for (int j = 0; j < 4 * kGroups; ++j) {
    for (int i = 0; i < N; ++i) {
      lanes.x[i][j / 4][j % 4] = x[N * j + i];
      lanes.w[i][j / 4][j % 4] = w ? w[N * j + i] : x[N * j + i] * x[N * j + i];
    }
  }
}

// The element of largest magnitude in each lane, sign kept (the first one on ties).
template <int kGroups, int N>
void signed_absmax(const SubBlockLanes<kGroups, N>& lanes, Vec4 (&max)[kGroups]) {
  for (int g = 0; g < kGroups; ++g) {
    Vec4 amax = splat(0.0f);
    max[g] = splat(0.0f);
    for (int i = 0; i < N; ++i) {
      const Int4 larger = absolute(lanes.x[i][g]) > amax;
      amax = select(larger, absolute(lanes.x[i][g]), amax);
      max[g] = select(larger, lanes.x[i][g], max[g]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Search 1 (Q6_K): symmetric codes l in [-nmax, nmax-1], value = scale·l, weights x² (big values matter most).
// The inverse scale -nmax/max is tried first, then its neighbours -(nmax + 0.1·k)/max for k = -9..9 (k != 0);
// each gets the least-squares scale Σw·x·l / Σw·l², and a candidate replaces the best so far only if it
// explains strictly more energy (Σw·x·l)² / Σw·l².
// Writes each sub-block's scale (negative when its max is positive) and codes offset by nmax (0..2·nmax-1).

// Σw·x·l and Σw·l² for the codes that `inverse` gives.
template <int kGroups, int N>
void symmetric_sums(const SubBlockLanes<kGroups, N>& lanes, int nmax, const Vec4 (&inverse)[kGroups],
                    Vec4 (&sum_wxl)[kGroups], Vec4 (&sum_wll)[kGroups]) {
  for (int g = 0; g < kGroups; ++g) sum_wxl[g] = sum_wll[g] = splat(0.0f);
  for (int i = 0; i < N; ++i) {
    for (int g = 0; g < kGroups; ++g) {
      const Vec4 l = clamped_code(inverse[g] * lanes.x[i][g], -nmax, nmax - 1);
      sum_wxl[g] += lanes.w[i][g] * lanes.x[i][g] * l;
      sum_wll[g] += lanes.w[i][g] * l * l;
    }
  }
}

template <int kGroups, int N>
void fit_symmetric_scales(const float* x, int nmax, uint8_t* codes, float* scale_out) {
  SubBlockLanes<kGroups, N> lanes;
  load_lanes(x, nullptr, lanes);
  Vec4 max[kGroups];
  signed_absmax(lanes, max);
  auto inverse_scales = [&](int k, Vec4(&inverse)[kGroups]) {
    const float stretched = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k));
    for (int g = 0; g < kGroups; ++g) inverse[g] = splat(stretched) / max[g];
  };
  Vec4 best_inverse[kGroups], sum_wxl[kGroups], sum_wll[kGroups], scale[kGroups], best[kGroups];
  inverse_scales(0, best_inverse);
  symmetric_sums(lanes, nmax, best_inverse, sum_wxl, sum_wll);
  for (int g = 0; g < kGroups; ++g) {
    scale[g] = select(sum_wll[g] != splat(0.0f), sum_wxl[g] / sum_wll[g], splat(0.0f));
    best[g] = scale[g] * sum_wxl[g];
  }
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    Vec4 inverse[kGroups];
    inverse_scales(k, inverse);
    symmetric_sums(lanes, nmax, inverse, sum_wxl, sum_wll);
    for (int g = 0; g < kGroups; ++g) {
      const Int4 better = (sum_wll[g] > splat(0.0f)) & (sum_wxl[g] * sum_wxl[g] > best[g] * sum_wll[g]);
      const Vec4 candidate = sum_wxl[g] / sum_wll[g];
      scale[g] = select(better, candidate, scale[g]);
      best[g] = select(better, candidate * sum_wxl[g], best[g]);
      best_inverse[g] = select(better, inverse[g], best_inverse[g]);
    }
  }
  for (int j = 0; j < 4 * kGroups; ++j) {
    const int g = j / 4;
    const int k = j % 4;
    const bool zero = std::fabs(max[g][k]) < kGroupMaxEps;
    scale_out[j] = zero ? 0.0f : scale[g][k];
    for (int i = 0; i < N; ++i) {
      const int l = clamped_nearest(best_inverse[g][k] * x[N * j + i], -nmax, nmax - 1);
      codes[N * j + i] = zero ? 0 : static_cast<uint8_t>(l + nmax);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Search 2 (Q3_K): the same symmetric code range and x² weights, but refined by coordinate descent instead of
// trying scales: starting from plain rounding with -nmax/max, each code in turn moves to its best value given all
// the others when that improves the fit; at most 5 sweeps, and a sub-block stops after a sweep without change.
// Writes each sub-block's least-squares scale and codes offset by nmax.

template <int kGroups, int N>
void fit_symmetric_scales_by_descent(const float* x, int nmax, uint8_t* codes, float* scale_out) {
  SubBlockLanes<kGroups, N> lanes;
  load_lanes(x, nullptr, lanes);
  Vec4 max[kGroups];
  signed_absmax(lanes, max);
  Vec4 l[N][kGroups];
  Vec4 sum_wxl[kGroups], sum_wll[kGroups];
  Int4 searching[kGroups];  // lanes still sweeping
  for (int g = 0; g < kGroups; ++g) {
    const Vec4 inverse = splat(static_cast<float>(-nmax)) / max[g];
    sum_wxl[g] = sum_wll[g] = splat(0.0f);
    for (int i = 0; i < N; ++i) {
      l[i][g] = clamped_code(inverse * lanes.x[i][g], -nmax, nmax - 1);
      sum_wxl[g] += lanes.w[i][g] * lanes.x[i][g] * l[i][g];
      sum_wll[g] += lanes.w[i][g] * l[i][g] * l[i][g];
    }
    searching[g] = absolute(max[g]) >= splat(kGroupMaxEps);
  }
  constexpr int kMaxSweeps = 5;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    Int4 changed[kGroups] = {};
    for (int i = 0; i < N; ++i) {
      for (int g = 0; g < kGroups; ++g) {
        const Vec4 w = lanes.w[i][g];
        const Vec4 xi = lanes.x[i][g];
        // The sums without element i; its best code is then x·Σwll/Σwxl (meaningful only while Σwxl > 0).
        const Vec4 others_wxl = sum_wxl[g] - w * xi * l[i][g];
        const Vec4 others_wll = sum_wll[g] - w * l[i][g] * l[i][g];
        const Vec4 moved_l = clamped_code(xi * others_wll / others_wxl, -nmax, nmax - 1);
        const Vec4 moved_wxl = others_wxl + w * xi * moved_l;
        const Vec4 moved_wll = others_wll + w * moved_l * moved_l;
        const Int4 accept = searching[g] & (others_wxl > splat(0.0f)) & (moved_l != l[i][g]) &
                            (moved_wll > splat(0.0f)) &
                            (moved_wxl * moved_wxl * sum_wll[g] > sum_wxl[g] * sum_wxl[g] * moved_wll);
        l[i][g] = select(accept, moved_l, l[i][g]);
        sum_wxl[g] = select(accept, moved_wxl, sum_wxl[g]);
        sum_wll[g] = select(accept, moved_wll, sum_wll[g]);
        changed[g] |= accept;
      }
    }
    bool any_searching = false;
    for (int g = 0; g < kGroups; ++g) {
      searching[g] &= changed[g];
      for (int k = 0; k < 4; ++k) any_searching |= searching[g][k] != 0;
    }
    if (!any_searching) break;
  }
  for (int j = 0; j < 4 * kGroups; ++j) {
    const int g = j / 4;
    const int k = j % 4;
    const bool zero = std::fabs(max[g][k]) < kGroupMaxEps;
    scale_out[j] = zero || !(sum_wll[g][k] > 0.0f) ? 0.0f : sum_wxl[g][k] / sum_wll[g][k];
    for (int i = 0; i < N; ++i) {
      codes[N * j + i] = zero ? 0 : static_cast<uint8_t>(static_cast<int>(l[i][g][k]) + nmax);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Search 3 (Q2_K, Q4_K, Q5_K): asymmetric codes l in [0, nmax], value = scale·l + min with min <= 0.
// Starts from the plain min/max mapping, then tries inverse scales (nmax + rmin + rdelta·step)/(max - min) for
// step = 0..nstep; for each, codes are rounded, scale and min are refitted by weighted least squares (min forced
// to 0 if it comes out positive), and the candidate is kept if its weighted error (squared, or absolute with
// kAbsoluteError) is strictly lower. Keeping a candidate also moves `min`, which shifts every later candidate.
// Codes are not stored per candidate: the inverse scale and min of the winner are enough to recompute them.

struct AsymmetricSearch {
  int nmax;
  float rmin;
  float rdelta;
  int nstep;
};

// One candidate per lane: codes from rounding inverse·(x - shift), decoded as scale·l + min.
template <int kGroups>
struct Candidate {
  Vec4 inverse[kGroups];
  Vec4 shift[kGroups];
  Vec4 scale[kGroups];
  Vec4 min[kGroups];
};

template <int kGroups, int N, bool kAbsoluteError>
void weighted_errors(const SubBlockLanes<kGroups, N>& lanes, int nmax, const Candidate<kGroups>& c,
                     Vec4 (&error)[kGroups]) {
  Vec4 sum[kGroups] = {};
  for (int i = 0; i < N; ++i) {
    for (int g = 0; g < kGroups; ++g) {
      const Vec4 l = clamped_code(c.inverse[g] * (lanes.x[i][g] - c.shift[g]), 0, nmax);
      Vec4 diff = c.scale[g] * l + c.min[g] - lanes.x[i][g];
      diff = kAbsoluteError ? absolute(diff) : diff * diff;
      sum[g] += lanes.w[i][g] * diff;
    }
  }
  for (int g = 0; g < kGroups; ++g) error[g] = sum[g];
}

// x and w hold 4·kGroups consecutive sub-blocks of N elements. Writes codes (0..nmax) for every element, and the
// scale and -min (>= 0) of every sub-block.
template <int kGroups, int N, bool kAbsoluteError>
void fit_scales_and_mins(const float* x, const float* w, const AsymmetricSearch& search, uint8_t* codes,
                         float* scale_out, float* negated_min_out) {
  SubBlockLanes<kGroups, N> lanes;
  load_lanes(x, w, lanes);
  Vec4 min[kGroups], max[kGroups], total_w[kGroups], total_wx[kGroups];
  for (int g = 0; g < kGroups; ++g) {
    min[g] = max[g] = lanes.x[0][g];
    total_w[g] = lanes.w[0][g];
    total_wx[g] = total_w[g] * lanes.x[0][g];
  }
  for (int i = 1; i < N; ++i) {
    for (int g = 0; g < kGroups; ++g) {
      min[g] = select(lanes.x[i][g] < min[g], lanes.x[i][g], min[g]);
      max[g] = select(lanes.x[i][g] > max[g], lanes.x[i][g], max[g]);
      total_w[g] += lanes.w[i][g];
      total_wx[g] += lanes.w[i][g] * lanes.x[i][g];
    }
  }
  // The winning candidate so far, starting with the plain min/max mapping.
  Candidate<kGroups> best;
  Vec4 best_error[kGroups];
  Int4 flat[kGroups];  // all elements equal (once min is capped at 0): nothing to search
  for (int g = 0; g < kGroups; ++g) {
    min[g] = select(min[g] > splat(0.0f), splat(0.0f), min[g]);
    flat[g] = max[g] == min[g];
    best.inverse[g] = splat(static_cast<float>(search.nmax)) / (max[g] - min[g]);
    best.shift[g] = min[g];
    best.scale[g] = splat(1.0f) / best.inverse[g];
    best.min[g] = min[g];
  }
  weighted_errors<kGroups, N, kAbsoluteError>(lanes, search.nmax, best, best_error);

  for (int step = 0; step <= search.nstep; ++step) {
    const float stretch = search.rmin + search.rdelta * static_cast<float>(step);
    Candidate<kGroups> next;
    Vec4 sum_wl[kGroups] = {}, sum_wll[kGroups] = {}, sum_wlx[kGroups] = {};
    for (int g = 0; g < kGroups; ++g) {
      next.inverse[g] = splat(stretch + static_cast<float>(search.nmax)) / (max[g] - min[g]);
      next.shift[g] = min[g];
    }
    for (int i = 0; i < N; ++i) {
      for (int g = 0; g < kGroups; ++g) {
        const Vec4 l = clamped_code(next.inverse[g] * (lanes.x[i][g] - min[g]), 0, search.nmax);
        const Vec4 wl = lanes.w[i][g] * l;
        sum_wl[g] += wl;
        sum_wll[g] += wl * l;
        sum_wlx[g] += wl * lanes.x[i][g];
      }
    }
    // Weighted least-squares scale and min for these codes; a positive min is not representable, so there the
    // scale is refitted alone with min = 0.
    Int4 fitted[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      const Vec4 det = total_w[g] * sum_wll[g] - sum_wl[g] * sum_wl[g];
      fitted[g] = det > splat(0.0f);
      const Vec4 scale = (total_w[g] * sum_wlx[g] - total_wx[g] * sum_wl[g]) / det;
      const Vec4 fit_min = (sum_wll[g] * total_wx[g] - sum_wl[g] * sum_wlx[g]) / det;
      const Int4 positive = fit_min > splat(0.0f);
      next.scale[g] = select(positive, sum_wlx[g] / sum_wll[g], scale);
      next.min[g] = select(positive, splat(0.0f), fit_min);
    }
    Vec4 error[kGroups];
    weighted_errors<kGroups, N, kAbsoluteError>(lanes, search.nmax, next, error);
    for (int g = 0; g < kGroups; ++g) {
      const Int4 better = ~flat[g] & fitted[g] & (error[g] < best_error[g]);
      best_error[g] = select(better, error[g], best_error[g]);
      best.inverse[g] = select(better, next.inverse[g], best.inverse[g]);
      best.shift[g] = select(better, next.shift[g], best.shift[g]);
      best.scale[g] = select(better, next.scale[g], best.scale[g]);
      min[g] = select(better, next.min[g], min[g]);
    }
  }
  for (int j = 0; j < 4 * kGroups; ++j) {
    const int g = j / 4;
    const int k = j % 4;
    const bool is_flat = flat[g][k] != 0;
    negated_min_out[j] = -min[g][k];
    scale_out[j] = is_flat ? 0.0f : best.scale[g][k];
    for (int i = 0; i < N; ++i) {
      const int l = clamped_nearest(best.inverse[g][k] * (x[N * j + i] - best.shift[g][k]), 0, search.nmax);
      codes[N * j + i] = is_flat ? 0 : static_cast<uint8_t>(l);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bit packing shared by several types.

// Q2_K and Q3_K low bits: each 128-element half uses 32 bytes; byte l holds elements l, l+32, l+64, l+96 of
// that half at bit offsets 0, 2, 4, 6.
void pack_2bit(const uint8_t* codes, uint8_t* qs) {
  for (int half = 0; half < kSuperBlock / 128; ++half) {
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; ++l) {
      qs[32 * half + l] =
          static_cast<uint8_t>((c[l] & 3) | (c[l + 32] & 3) << 2 | (c[l + 64] & 3) << 4 | (c[l + 96] & 3) << 6);
    }
  }
}

inline int unpack_2bit(const uint8_t* qs, int e) {
  const int r = e % 128;
  return (qs[32 * (e / 128) + r % 32] >> (2 * (r / 32))) & 3;
}

// Q3_K sub-block scales: 16 six-bit codes (scale + 32); low nibbles in bytes 0..7 (sub-blocks 8..15 in the high
// nibble), the two high bits of sub-block j in byte 8 + j%4 at bit offset 2·(j/4).
void pack_q3_k_scales(const int* biased_codes, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int code = biased_codes[j];
    scales[j % 8] |= static_cast<uint8_t>((code & 0xF) << (j < 8 ? 0 : 4));
    scales[8 + j % 4] |= static_cast<uint8_t>((code >> 4) << (2 * (j / 4)));
  }
}

inline int q3_k_scale(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

// Q4_K/Q5_K: 8 six-bit scale codes and 8 six-bit min codes in 12 bytes. Sub-blocks 0..3 use the low 6 bits of
// bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep their low nibbles in bytes 8..11 and park their two
// high bits in the spare top bits of bytes 0..3 (scale) and 4..7 (min).
void pack_q4_k_scales(const uint8_t* scale_codes, const uint8_t* min_codes, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = scale_codes[j];
    scales[j + 4] = min_codes[j];
  }
  for (int j = 4; j < 8; ++j) {
    scales[j + 4] = static_cast<uint8_t>((scale_codes[j] & 0xF) | (min_codes[j] & 0xF) << 4);
    scales[j - 4] |= static_cast<uint8_t>((scale_codes[j] >> 4) << 6);
    scales[j] |= static_cast<uint8_t>((min_codes[j] >> 4) << 6);
  }
}

struct ScaleAndMinCodes {
  int scale;
  int min;
};

inline ScaleAndMinCodes q4_k_scale_and_min(const uint8_t* scales, int j) {
  if (j < 4) return {scales[j] & 63, scales[j + 4] & 63};
  return {(scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4, (scales[j + 4] >> 4) | (scales[j] >> 6) << 4};
}

// ---------------------------------------------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16, codes 0..3, y = d·sc·q - dmin·m with 4-bit sc and m.
// Layout: scales[16] (sc | m << 4), qs[64], fp16 d, fp16 dmin.

void quantize_q2_k_block(const float* x, uint8_t* out) {
  uint8_t* scales = out;
  uint8_t* qs = out + 16;
  uint8_t codes[kSuperBlock];
  float sub_scale[16];
  float sub_min[16];
  float max_scale = 0.0f;
  float max_min = 0.0f;
  float weight[kSuperBlock];  // |x|: with the absolute-error search, large elements weigh most
  for (int e = 0; e < kSuperBlock; ++e) weight[e] = std::fabs(x[e]);
  fit_scales_and_mins<4, 16, true>(x, weight, {3, -0.5f, 0.1f, 15}, codes, sub_scale, sub_min);
  for (int j = 0; j < 16; ++j) {
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  std::memset(scales, 0, 16);
  float d = 0.0f;
  float dmin = 0.0f;
  if (max_scale > 0) {
    const float to_code = 15.0f / max_scale;
    for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(nearest_int(to_code * sub_scale[j]));
    d = max_scale / 15.0f;
  }
  if (max_min > 0) {
    const float to_code = 15.0f / max_min;
    for (int j = 0; j < 16; ++j) scales[j] |= static_cast<uint8_t>(nearest_int(to_code * sub_min[j]) << 4);
    dmin = max_min / 15.0f;
  }
  store_f16(out + 80, d);
  store_f16(out + 82, dmin);
  const float stored_d = load_f16(out + 80);
  const float stored_dmin = load_f16(out + 82);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(scales[j] & 0xF);
    if (step == 0) continue;  // nothing to re-round against: keep the search's codes
    const float offset = stored_dmin * static_cast<float>(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest((x[16 * j + i] + offset) / step, 0, 3));
    }
  }
  pack_2bit(codes, qs);
}

void dequantize_q2_k_block(const uint8_t* in, float* y) {
  const uint8_t* scales = in;
  const uint8_t* qs = in + 16;
  const float d = load_f16(in + 80);
  const float dmin = load_f16(in + 82);
  for (int j = 0; j < 16; ++j) {
    const float step = d * static_cast<float>(scales[j] & 0xF);
    const float offset = dmin * static_cast<float>(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) y[16 * j + i] = step * static_cast<float>(unpack_2bit(qs, 16 * j + i)) - offset;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, codes -4..3, y = d·sc·q with signed 6-bit sc.
// Layout: hmask[32] (bit e/32 of byte e%32 = third bit of code+4), qs[64] (low two bits), scales[12], fp16 d.

void quantize_q3_k_block(const float* x, uint8_t* out) {
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  uint8_t* scales = out + 96;
  uint8_t codes[kSuperBlock];  // code + 4, 0..7
  float sub_scale[16];
  float max_scale = 0.0f;  // the signed sub-block scale of largest magnitude
  fit_symmetric_scales_by_descent<4, 16>(x, 4, codes, sub_scale);
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(sub_scale[j]) > std::fabs(max_scale)) max_scale = sub_scale[j];
  }
  int biased_codes[16] = {};
  float d = 0.0f;
  if (max_scale != 0.0f) {
    // Negative factor: the largest scale maps to code -32, which uses the full signed range.
    const float to_code = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int8_t code = static_cast<int8_t>(nearest_int(to_code * sub_scale[j]));
      biased_codes[j] = std::clamp<int>(code, -32, 31) + 32;
    }
    d = 1 / to_code;
  }
  pack_q3_k_scales(biased_codes, scales);
  store_f16(out + 108, d);
  const float stored_d = load_f16(out + 108);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(q3_k_scale(scales, j));
    if (step == 0) continue;
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest(x[16 * j + i] / step, -4, 3) + 4);
    }
  }
  // The third bit of code+4 goes to hmask; pack_2bit keeps the low two.
  for (int l = 0; l < 32; ++l) {
    int bits = 0;
    for (int k = 0; k < 8; ++k) bits |= (codes[32 * k + l] >> 2) << k;
    hmask[l] = static_cast<uint8_t>(bits);
  }
  pack_2bit(codes, qs);
}

void dequantize_q3_k_block(const uint8_t* in, float* y) {
  const uint8_t* hmask = in;
  const uint8_t* qs = in + 32;
  const uint8_t* scales = in + 96;
  const float d = load_f16(in + 108);
  for (int j = 0; j < 16; ++j) {
    const float step = d * static_cast<float>(q3_k_scale(scales, j));
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * j + i;
      const int high = (hmask[e % 32] >> (e / 32)) & 1;
      y[e] = step * static_cast<float>(unpack_2bit(qs, e) - (high ? 0 : 4));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q4_K and Q5_K: 8 sub-blocks of 32, codes 0..nmax, y = d·sc·q - dmin·m with 6-bit sc and m.
// Shared header: fp16 d, fp16 dmin, scales[12]; fills `codes` with the final per-element codes.

void quantize_q4_k_header(const float* x, const AsymmetricSearch& search, uint8_t* header, uint8_t* codes) {
  float sub_scale[8];
  float sub_min[8];
  float max_scale = 0.0f;
  float max_min = 0.0f;
  float weight[kSuperBlock];
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int i = 0; i < 32; ++i) sum_x2 += xs[i] * xs[i];
    // The sub-block's RMS plus |x|: large elements count more, without small ones being ignored.
    const float rms = std::sqrt(sum_x2 / 32);
    for (int i = 0; i < 32; ++i) weight[32 * j + i] = rms + std::fabs(xs[i]);
  }
  fit_scales_and_mins<2, 32, false>(x, weight, search, codes, sub_scale, sub_min);
  for (int j = 0; j < 8; ++j) {
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  const float scale_to_code = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float min_to_code = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t scale_codes[8];
  uint8_t min_codes[8];
  for (int j = 0; j < 8; ++j) {
    // Truncated to a byte before the clamp, as the reference does.
    scale_codes[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(scale_to_code * sub_scale[j])));
    min_codes[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(min_to_code * sub_min[j])));
  }
  pack_q4_k_scales(scale_codes, min_codes, header + 4);
  store_f16(header, max_scale / 63.0f);
  store_f16(header + 2, max_min / 63.0f);
  const float stored_d = load_f16(header);
  const float stored_dmin = load_f16(header + 2);
  for (int j = 0; j < 8; ++j) {
    const float step = stored_d * static_cast<float>(scale_codes[j]);
    if (step == 0) continue;  // nothing to re-round against: keep the search's codes
    const float offset = stored_dmin * static_cast<float>(min_codes[j]);
    for (int i = 0; i < 32; ++i) {
      codes[32 * j + i] =
          static_cast<uint8_t>(clamped_nearest((x[32 * j + i] + offset) / step, 0, search.nmax));
    }
  }
}

// Scale (d·sc) and offset (dmin·m) of every sub-block, rounded exactly as ggml's decoder rounds them.
void q4_k_steps(const uint8_t* header, float* step, float* offset) {
  const float d = load_f16(header);
  const float dmin = load_f16(header + 2);
  for (int j = 0; j < 8; ++j) {
    const ScaleAndMinCodes c = q4_k_scale_and_min(header + 4, j);
    step[j] = d * static_cast<float>(c.scale);
    offset[j] = dmin * static_cast<float>(c.min);
  }
}

// Q4_K layout: header (16 bytes), qs[128]: sub-blocks 2k and 2k+1 share bytes 32k..32k+31 (low/high nibble).
void quantize_q4_k_block(const float* x, uint8_t* out) {
  uint8_t codes[kSuperBlock];
  quantize_q4_k_header(x, {15, -1.0f, 0.1f, 20}, out, codes);
  uint8_t* qs = out + 16;
  for (int pair = 0; pair < 4; ++pair) {
    for (int i = 0; i < 32; ++i) {
      qs[32 * pair + i] = static_cast<uint8_t>(codes[64 * pair + i] | codes[64 * pair + 32 + i] << 4);
    }
  }
}

void dequantize_q4_k_block(const uint8_t* in, float* y) {
  float step[8];
  float offset[8];
  q4_k_steps(in, step, offset);
  const uint8_t* qs = in + 16;
  for (int j = 0; j < 8; ++j) {
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; ++i) {
      y[32 * j + i] = step[j] * static_cast<float>((qs[32 * (j / 2) + i] >> shift) & 0xF) - offset[j];
    }
  }
}

// Q5_K layout: header (16 bytes), qh[32] (bit j of byte i = fifth bit of element i of sub-block j), qs[128] as
// Q4_K.
void quantize_q5_k_block(const float* x, uint8_t* out) {
  uint8_t codes[kSuperBlock];
  quantize_q4_k_header(x, {31, -0.5f, 0.1f, 15}, out, codes);
  uint8_t* qh = out + 16;
  uint8_t* qs = out + 48;
  std::memset(qh, 0, 32);
  for (int j = 0; j < 8; ++j) {
    for (int i = 0; i < 32; ++i) qh[i] |= static_cast<uint8_t>((codes[32 * j + i] >> 4) << j);
  }
  for (int pair = 0; pair < 4; ++pair) {
    for (int i = 0; i < 32; ++i) {
      qs[32 * pair + i] = static_cast<uint8_t>((codes[64 * pair + i] & 0xF) | (codes[64 * pair + 32 + i] & 0xF) << 4);
    }
  }
}

void dequantize_q5_k_block(const uint8_t* in, float* y) {
  float step[8];
  float offset[8];
  q4_k_steps(in, step, offset);
  const uint8_t* qh = in + 16;
  const uint8_t* qs = in + 48;
  for (int j = 0; j < 8; ++j) {
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; ++i) {
      const int q = ((qs[32 * (j / 2) + i] >> shift) & 0xF) | ((qh[i] >> j) & 1) << 4;
      y[32 * j + i] = step[j] * static_cast<float>(q) - offset[j];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, codes -32..31, y = d·sc·q with int8 sc.
// Layout: ql[128], qh[64], int8 scales[16], fp16 d. Element e (half c = e/128, r = e%128, quarter k = r/32,
// l = r%32): low 4 bits in ql[64c + l + 32·(k&1)] (low nibble for k < 2, high for k >= 2), high 2 bits at bit
// 2k of qh[32c + l].

void pack_q6_k_codes(const uint8_t* codes, uint8_t* ql, uint8_t* qh) {
  for (int half = 0; half < 2; ++half) {
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; ++l) {
      ql[64 * half + l] = static_cast<uint8_t>((c[l] & 0xF) | (c[l + 64] & 0xF) << 4);
      ql[64 * half + l + 32] = static_cast<uint8_t>((c[l + 32] & 0xF) | (c[l + 96] & 0xF) << 4);
      qh[32 * half + l] =
          static_cast<uint8_t>(c[l] >> 4 | (c[l + 32] >> 4) << 2 | (c[l + 64] >> 4) << 4 | (c[l + 96] >> 4) << 6);
    }
  }
}

void quantize_q6_k_block(const float* x, uint8_t* out) {
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  int8_t* scales = reinterpret_cast<int8_t*>(out + 192);
  uint8_t codes[kSuperBlock];  // code + 32, 0..63
  float sub_scale[16];
  float max_scale = 0.0f;  // the signed sub-block scale of largest magnitude
  fit_symmetric_scales<4, 16>(x, 32, codes, sub_scale);
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(sub_scale[j]) > std::fabs(max_scale)) max_scale = sub_scale[j];
  }
  if (std::fabs(max_scale) < kGroupMaxEps) {
    std::memset(out, 0, kQ6KBlockBytes);
    return;
  }
  // Negative factor: the largest scale maps to code -128, which uses the full int8 range.
  const float to_code = -128.0f / max_scale;
  store_f16(out + 208, 1 / to_code);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<int8_t>(std::min(127, nearest_int(to_code * sub_scale[j])));
  const float stored_d = load_f16(out + 208);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(scales[j]);
    if (step == 0) continue;
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest(x[16 * j + i] / step, -32, 31) + 32);
    }
  }
  pack_q6_k_codes(codes, ql, qh);
}

void dequantize_q6_k_block(const uint8_t* in, float* y) {
  const uint8_t* ql = in;
  const uint8_t* qh = in + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(in + 192);
  const float d = load_f16(in + 208);
  for (int e = 0; e < kSuperBlock; ++e) {
    const int half = e / 128;
    const int quarter = (e % 128) / 32;
    const int l = e % 32;
    const int low = (ql[64 * half + l + 32 * (quarter & 1)] >> (quarter < 2 ? 0 : 4)) & 0xF;
    const int high = (qh[32 * half + l] >> (2 * quarter)) & 3;
    y[e] = d * static_cast<float>(scales[e / 16]) * static_cast<float>((low | high << 4) - 32);
  }
}

// ---------------------------------------------------------------------------------------------------------------

template <void (*kEncodeBlock)(const float*, uint8_t*), int64_t kBlockBytes>
void quantize_row(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kSuperBlock; ++b) kEncodeBlock(x + b * kSuperBlock, out + b * kBlockBytes);
}

template <void (*kDecodeBlock)(const uint8_t*, float*), int64_t kBlockBytes>
void dequantize_row(const uint8_t* in, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kSuperBlock; ++b) kDecodeBlock(in + b * kBlockBytes, out + b * kSuperBlock);
}

}  // namespace

void quantize_row_q2_k(const float* x, int64_t n, uint8_t* out) {
  quantize_row<quantize_q2_k_block, kQ2KBlockBytes>(x, n, out);
}
void quantize_row_q3_k(const float* x, int64_t n, uint8_t* out) {
  quantize_row<quantize_q3_k_block, kQ3KBlockBytes>(x, n, out);
}
void quantize_row_q4_k(const float* x, int64_t n, uint8_t* out) {
  quantize_row<quantize_q4_k_block, kQ4KBlockBytes>(x, n, out);
}
void quantize_row_q5_k(const float* x, int64_t n, uint8_t* out) {
  quantize_row<quantize_q5_k_block, kQ5KBlockBytes>(x, n, out);
}
void quantize_row_q6_k(const float* x, int64_t n, uint8_t* out) {
  quantize_row<quantize_q6_k_block, kQ6KBlockBytes>(x, n, out);
}

void dequantize_row_q2_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q2_k_block, kQ2KBlockBytes>(in, n, out);
}
void dequantize_row_q3_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q3_k_block, kQ3KBlockBytes>(in, n, out);
}
void dequantize_row_q4_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q4_k_block, kQ4KBlockBytes>(in, n, out);
}
void dequantize_row_q5_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q5_k_block, kQ5KBlockBytes>(in, n, out);
}
void dequantize_row_q6_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q6_k_block, kQ6KBlockBytes>(in, n, out);
}

}  // namespace mlx2gguf
