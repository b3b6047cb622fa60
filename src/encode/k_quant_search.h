#pragma once
// The K-quant sub-block searches written once for any lane count (4, 8 or 16 floats), with GCC/Clang vector
// types that every target lowers to its own SIMD. Included only by k_quant_kernels*.cpp, each compiled for one
// instruction set: everything here has internal linkage and uses compiler builtins rather than inline library
// functions, so code compiled for one instruction set never ends up called on a CPU that lacks it.
//
// Layout: L·kGroups sub-blocks of N elements are transposed so that element i of sub-block L·g + k is lane k of
// x[i][g]. Every lane then runs one sub-block's scalar search with ggml's float operations in ggml's order.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "encode/k_quant_kernels.h"

namespace mlx2gguf {

// One instruction set's versions of the searches of k_quant_kernels.h (without the instruction set argument).
struct KQuantSearchFunctions {
  void (*fit_scales_and_mins)(const float* x, const float* w, int64_t n, int sub_block, bool absolute_error,
                              const AsymmetricSearch& search, float* code_inverse, float* code_shift, float* scale,
                              float* negated_min);
  void (*fit_symmetric_scales)(const float* x, const float* w, int64_t n, int nmax, uint8_t* codes, float* scale);
  void (*fit_symmetric_scales_by_descent)(const float* x, int64_t n, int nmax, uint8_t* codes, float* scale);
};

// Defined in k_quant_kernels_avx2.cpp and k_quant_kernels_avx512.cpp (x86-64 builds only).
KQuantSearchFunctions k_quant_searches_avx2();
KQuantSearchFunctions k_quant_searches_avx512();

namespace {

template <int kLanes>
struct LaneTypes;
template <>
struct LaneTypes<4> {
  typedef float F __attribute__((vector_size(16)));
};
template <>
struct LaneTypes<8> {
  typedef float F __attribute__((vector_size(32)));
};
template <>
struct LaneTypes<16> {
  typedef float F __attribute__((vector_size(64)));
};

template <class F>
constexpr int kLaneCount = static_cast<int>(sizeof(F) / sizeof(float));
// Comparisons of float lanes give all-ones / all-zero int32 lanes of this type.
template <class F>
using MaskOf = decltype(F{} < F{});

// A sub-block whose largest magnitude is below this counts as all zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

template <class V>
using LaneOf = std::remove_cvref_t<decltype(V{}[0])>;

template <class V>
inline V splat(LaneOf<V> v) {
  // Integers broadcast through vector + scalar, which compilers turn into one broadcast instruction. Floats are
  // set lane by lane: 0 + v would turn -0 into +0.
  if constexpr (std::is_integral_v<LaneOf<V>>) {
    return V{} + v;
  } else {
    V r = {};
    for (int k = 0; k < static_cast<int>(sizeof(V) / sizeof(v)); ++k) r[k] = v;
    return r;
  }
}

// Lanes of `if_true` where `mask` is all ones, of `if_false` elsewhere (for float and int lanes).
template <class V>
inline V select(MaskOf<V> mask, V if_true, V if_false) {
  using M = MaskOf<V>;
  return __builtin_bit_cast(V, (mask & __builtin_bit_cast(M, if_true)) | (~mask & __builtin_bit_cast(M, if_false)));
}

// Round half to even through the float adder (ggml's nearest_int: the integer lands in the low mantissa bits),
// then clamp. Meaningless beyond ±2^22, as in ggml; the same meaningless value in every version.
inline int32_t clamped_nearest(float v, int32_t lo, int32_t hi) {
  const int32_t code = static_cast<int32_t>(__builtin_bit_cast(uint32_t, v + 12582912.0f) & 0x007fffffu) - 0x00400000;
  return code < lo ? lo : code > hi ? hi : code;
}

template <class F>
inline MaskOf<F> clamped_nearest(F v, int32_t lo, int32_t hi) {
  using M = MaskOf<F>;
  M code = (__builtin_bit_cast(M, v + splat<F>(12582912.0f)) & splat<M>(0x007fffff)) - splat<M>(0x00400000);
  code = select(code < splat<M>(lo), splat<M>(lo), code);
  return select(code > splat<M>(hi), splat<M>(hi), code);
}

// The searches multiply codes with floats, so they keep them as floats.
template <class F>
inline F clamped_code(F v, int32_t lo, int32_t hi) {
  return __builtin_convertvector(clamped_nearest(v, lo, hi), F);
}

template <class F>
inline F absolute(F v) {
  using M = MaskOf<F>;
  return __builtin_bit_cast(F, __builtin_bit_cast(M, v) & splat<M>(0x7fffffff));
}

template <class F, int kGroups, int N>
struct SubBlockLanes {
  F x[N][kGroups];
  F w[N][kGroups];
};

// w == nullptr: weights x².
template <class F, int kGroups, int N>
void load_lanes(const float* x, const float* w, SubBlockLanes<F, kGroups, N>& lanes) {
  constexpr int L = kLaneCount<F>;
  for (int j = 0; j < L * kGroups; ++j) {
    for (int i = 0; i < N; ++i) {
      const float v = x[N * j + i];
      lanes.x[i][j / L][j % L] = v;
      lanes.w[i][j / L][j % L] = w ? w[N * j + i] : v * v;
    }
  }
}

// The element of largest magnitude in each lane, sign kept (the first one on ties).
template <class F, int kGroups, int N>
void signed_absmax(const SubBlockLanes<F, kGroups, N>& lanes, F (&max)[kGroups]) {
  for (int g = 0; g < kGroups; ++g) {
    F amax = splat<F>(0.0f);
    max[g] = splat<F>(0.0f);
    for (int i = 0; i < N; ++i) {
      const MaskOf<F> larger = absolute(lanes.x[i][g]) > amax;
      amax = select(larger, absolute(lanes.x[i][g]), amax);
      max[g] = select(larger, lanes.x[i][g], max[g]);
    }
  }
}

// Codes of each lane's elements, from rounding inverse·(x - shift) (scalar code, kept for ties to ggml's
// expressions): written as codes[N·j + i] + offset, or 0 for lanes in `zero`.
template <class F, int kGroups, int N>
void write_codes(const SubBlockLanes<F, kGroups, N>& lanes, const F (&inverse)[kGroups], const F (&shift)[kGroups],
                 const MaskOf<F> (&zero)[kGroups], int lo, int hi, int offset, uint8_t* codes) {
  constexpr int L = kLaneCount<F>;
  for (int g = 0; g < kGroups; ++g) {
    for (int i = 0; i < N; ++i) {
      MaskOf<F> l = clamped_nearest(inverse[g] * (lanes.x[i][g] - shift[g]), lo, hi) + splat<MaskOf<F>>(offset);
      l = select(zero[g], splat<MaskOf<F>>(0), l);
      for (int k = 0; k < L; ++k) codes[N * (L * g + k) + i] = static_cast<uint8_t>(l[k]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Symmetric search (make_qx_quants). Σw·x·l is computed as (w·x)·l, so w·x is formed once per element.

template <class F, int kGroups, int N>
void symmetric_sums(const F (&wx)[N][kGroups], const SubBlockLanes<F, kGroups, N>& lanes, int nmax,
                    const F (&inverse)[kGroups], F (&sum_wxl)[kGroups], F (&sum_wll)[kGroups]) {
  for (int g = 0; g < kGroups; ++g) sum_wxl[g] = sum_wll[g] = splat<F>(0.0f);
  for (int i = 0; i < N; ++i) {
    for (int g = 0; g < kGroups; ++g) {
      const F l = clamped_code(inverse[g] * lanes.x[i][g], -nmax, nmax - 1);
      sum_wxl[g] += wx[i][g] * l;
      sum_wll[g] += lanes.w[i][g] * l * l;
    }
  }
}

template <class F, int kGroups, int N>
void fit_symmetric_group(const float* x, const float* w, int nmax, uint8_t* codes, float* scale_out) {
  constexpr int L = kLaneCount<F>;
  using M = MaskOf<F>;
  SubBlockLanes<F, kGroups, N> lanes;
  load_lanes(x, w, lanes);
  F wx[N][kGroups];
  for (int i = 0; i < N; ++i)
    for (int g = 0; g < kGroups; ++g) wx[i][g] = lanes.w[i][g] * lanes.x[i][g];
  F max[kGroups];
  signed_absmax(lanes, max);
  auto inverse_scales = [&](int k, F(&inverse)[kGroups]) {
    const float stretched = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k));
    for (int g = 0; g < kGroups; ++g) inverse[g] = splat<F>(stretched) / max[g];
  };
  F best_inverse[kGroups], sum_wxl[kGroups], sum_wll[kGroups], scale[kGroups], best[kGroups];
  inverse_scales(0, best_inverse);
  symmetric_sums(wx, lanes, nmax, best_inverse, sum_wxl, sum_wll);
  for (int g = 0; g < kGroups; ++g) {
    scale[g] = select(sum_wll[g] != splat<F>(0.0f), sum_wxl[g] / sum_wll[g], splat<F>(0.0f));
    best[g] = scale[g] * sum_wxl[g];
  }
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    F inverse[kGroups];
    inverse_scales(k, inverse);
    symmetric_sums(wx, lanes, nmax, inverse, sum_wxl, sum_wll);
    for (int g = 0; g < kGroups; ++g) {
      const M better = (sum_wll[g] > splat<F>(0.0f)) & (sum_wxl[g] * sum_wxl[g] > best[g] * sum_wll[g]);
      const F candidate = sum_wxl[g] / sum_wll[g];
      scale[g] = select(better, candidate, scale[g]);
      best[g] = select(better, candidate * sum_wxl[g], best[g]);
      best_inverse[g] = select(better, inverse[g], best_inverse[g]);
    }
  }
  M zero[kGroups];
  F no_shift[kGroups];
  for (int g = 0; g < kGroups; ++g) {
    zero[g] = absolute(max[g]) < splat<F>(kGroupMaxEps);
    no_shift[g] = splat<F>(0.0f);
    const F s = select(zero[g], splat<F>(0.0f), scale[g]);
    for (int k = 0; k < L; ++k) scale_out[L * g + k] = s[k];
  }
  write_codes(lanes, best_inverse, no_shift, zero, -nmax, nmax - 1, nmax, codes);
}

// ---------------------------------------------------------------------------------------------------------------
// Q3_K search (make_q3_quants): plain rounding with -nmax/max, then coordinate descent on x² weights: each code in
// turn moves to its best value given all the others when that improves the fit; a sub-block stops after a sweep
// without change.

template <class F, int kGroups, int N>
void fit_symmetric_by_descent_group(const float* x, int nmax, uint8_t* codes, float* scale_out) {
  constexpr int L = kLaneCount<F>;
  using M = MaskOf<F>;
  SubBlockLanes<F, kGroups, N> lanes;
  load_lanes(x, nullptr, lanes);
  F max[kGroups];
  signed_absmax(lanes, max);
  F l[N][kGroups];
  F sum_wxl[kGroups], sum_wll[kGroups];
  M searching[kGroups];  // lanes still sweeping
  for (int g = 0; g < kGroups; ++g) {
    const F inverse = splat<F>(static_cast<float>(-nmax)) / max[g];
    sum_wxl[g] = sum_wll[g] = splat<F>(0.0f);
    for (int i = 0; i < N; ++i) {
      l[i][g] = clamped_code(inverse * lanes.x[i][g], -nmax, nmax - 1);
      sum_wxl[g] += lanes.w[i][g] * lanes.x[i][g] * l[i][g];
      sum_wll[g] += lanes.w[i][g] * l[i][g] * l[i][g];
    }
    searching[g] = absolute(max[g]) >= splat<F>(kGroupMaxEps);
  }
  constexpr int kMaxSweeps = 5;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    M changed[kGroups] = {};
    for (int i = 0; i < N; ++i) {
      for (int g = 0; g < kGroups; ++g) {
        const F wi = lanes.w[i][g];
        const F xi = lanes.x[i][g];
        // The sums without element i; its best code is then x·Σwll/Σwxl (meaningful only while Σwxl > 0).
        const F others_wxl = sum_wxl[g] - wi * xi * l[i][g];
        const F others_wll = sum_wll[g] - wi * l[i][g] * l[i][g];
        const F moved_l = clamped_code(xi * others_wll / others_wxl, -nmax, nmax - 1);
        const F moved_wxl = others_wxl + wi * xi * moved_l;
        const F moved_wll = others_wll + wi * moved_l * moved_l;
        const M accept = searching[g] & (others_wxl > splat<F>(0.0f)) & (moved_l != l[i][g]) &
                         (moved_wll > splat<F>(0.0f)) &
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
      for (int k = 0; k < L; ++k) any_searching |= searching[g][k] != 0;
    }
    if (!any_searching) break;
  }
  for (int g = 0; g < kGroups; ++g) {
    const M zero = absolute(max[g]) < splat<F>(kGroupMaxEps);
    const F s = select(zero | ~(sum_wll[g] > splat<F>(0.0f)), splat<F>(0.0f), sum_wxl[g] / sum_wll[g]);
    for (int k = 0; k < L; ++k) scale_out[L * g + k] = s[k];
    for (int i = 0; i < N; ++i) {
      const M code = select(zero, splat<M>(0), __builtin_convertvector(l[i][g], M) + splat<M>(nmax));
      for (int k = 0; k < L; ++k) codes[N * (L * g + k) + i] = static_cast<uint8_t>(code[k]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Asymmetric search (make_qkx2_quants). Keeping a candidate also moves `min`, which shifts every later candidate.
// A candidate's codes are kept in lanes for its error sum instead of being rounded a second time.

template <class F, int kGroups, int N, bool kAbsoluteError>
void fit_scales_and_mins_group(const float* x, const float* w, const AsymmetricSearch& search, float* inverse_out,
                               float* shift_out, float* scale_out, float* negated_min_out) {
  constexpr int L = kLaneCount<F>;
  using M = MaskOf<F>;
  const int nmax = search.nmax;
  SubBlockLanes<F, kGroups, N> lanes;
  load_lanes(x, w, lanes);
  F min[kGroups], max[kGroups], total_w[kGroups], total_wx[kGroups];
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
  auto error_term = [&](F diff, F weight) { return weight * (kAbsoluteError ? absolute(diff) : diff * diff); };
  // The winning candidate so far, starting with the plain min/max mapping: codes from rounding
  // best_inverse·(x - best_shift), decoded as best_scale·l + min.
  F best_inverse[kGroups], best_shift[kGroups], best_scale[kGroups], best_error[kGroups];
  M flat[kGroups];  // all elements equal (once min is capped at 0): nothing to search
  for (int g = 0; g < kGroups; ++g) {
    min[g] = select(min[g] > splat<F>(0.0f), splat<F>(0.0f), min[g]);
    flat[g] = max[g] == min[g];
    best_inverse[g] = splat<F>(static_cast<float>(nmax)) / (max[g] - min[g]);
    best_shift[g] = min[g];
    best_scale[g] = splat<F>(1.0f) / best_inverse[g];
    best_error[g] = splat<F>(0.0f);
  }
  for (int i = 0; i < N; ++i) {
    for (int g = 0; g < kGroups; ++g) {
      const F l = clamped_code(best_inverse[g] * (lanes.x[i][g] - min[g]), 0, nmax);
      best_error[g] += error_term(best_scale[g] * l + min[g] - lanes.x[i][g], lanes.w[i][g]);
    }
  }
  F l[N][kGroups];
  for (int step = 0; step <= search.nstep; ++step) {
    const float stretch = search.rmin + search.rdelta * static_cast<float>(step);
    F inverse[kGroups];
    F sum_wl[kGroups], sum_wll[kGroups], sum_wlx[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      inverse[g] = splat<F>(stretch + static_cast<float>(nmax)) / (max[g] - min[g]);
      sum_wl[g] = sum_wll[g] = sum_wlx[g] = splat<F>(0.0f);
    }
    for (int i = 0; i < N; ++i) {
      for (int g = 0; g < kGroups; ++g) {
        l[i][g] = clamped_code(inverse[g] * (lanes.x[i][g] - min[g]), 0, nmax);
        const F wl = lanes.w[i][g] * l[i][g];
        sum_wl[g] += wl;
        sum_wll[g] += wl * l[i][g];
        sum_wlx[g] += wl * lanes.x[i][g];
      }
    }
    // Weighted least-squares scale and min for these codes; a positive min is not representable, so there the
    // scale is refitted alone with min = 0.
    M fitted[kGroups];
    F scale[kGroups], fit_min[kGroups], error[kGroups];
    bool any_fitted = false;
    for (int g = 0; g < kGroups; ++g) {
      const F det = total_w[g] * sum_wll[g] - sum_wl[g] * sum_wl[g];
      fitted[g] = (det > splat<F>(0.0f)) & ~flat[g];
      const F joint_scale = (total_w[g] * sum_wlx[g] - total_wx[g] * sum_wl[g]) / det;
      const F joint_min = (sum_wll[g] * total_wx[g] - sum_wl[g] * sum_wlx[g]) / det;
      const M positive = joint_min > splat<F>(0.0f);
      scale[g] = select(positive, sum_wlx[g] / sum_wll[g], joint_scale);
      fit_min[g] = select(positive, splat<F>(0.0f), joint_min);
      error[g] = splat<F>(0.0f);
      for (int k = 0; k < L; ++k) any_fitted |= fitted[g][k] != 0;
    }
    if (!any_fitted) continue;
    for (int i = 0; i < N; ++i) {
      for (int g = 0; g < kGroups; ++g) {
        error[g] += error_term(scale[g] * l[i][g] + fit_min[g] - lanes.x[i][g], lanes.w[i][g]);
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      const M better = fitted[g] & (error[g] < best_error[g]);
      best_error[g] = select(better, error[g], best_error[g]);
      best_inverse[g] = select(better, inverse[g], best_inverse[g]);
      best_shift[g] = select(better, min[g], best_shift[g]);
      best_scale[g] = select(better, scale[g], best_scale[g]);
      min[g] = select(better, fit_min[g], min[g]);
    }
  }
  for (int g = 0; g < kGroups; ++g) {
    const F s = select(flat[g], splat<F>(0.0f), best_scale[g]);
    const F inverse = select(flat[g], splat<F>(-1.0f), best_inverse[g]);
    for (int k = 0; k < L; ++k) {
      scale_out[L * g + k] = s[k];
      negated_min_out[L * g + k] = -min[g][k];
      inverse_out[L * g + k] = inverse[k];
      shift_out[L * g + k] = best_shift[g][k];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Whole runs of super-blocks: groups of as many sub-blocks as the lanes hold; a last, partial group is searched
// in a zero-padded copy (zero sub-blocks search nothing) and only its real sub-blocks are kept.

template <class F, int kGroups, int N, class Search>
void for_each_group(const float* x, const float* w, int64_t n, uint8_t* codes, float* const (&per_sub_block)[4],
                    Search&& search) {
  constexpr int64_t kSpan = static_cast<int64_t>(kLaneCount<F>) * kGroups * N;  // elements per group
  constexpr int64_t kSubBlocks = kSpan / N;
  auto at = [&](int o, int64_t first) { return per_sub_block[o] ? per_sub_block[o] + first / N : nullptr; };
  int64_t done = 0;
  for (; done + kSpan <= n; done += kSpan) {
    float* const outs[4] = {at(0, done), at(1, done), at(2, done), at(3, done)};
    search(x + done, w ? w + done : nullptr, codes ? codes + done : nullptr, outs);
  }
  if (done == n) return;
  const int64_t rest = n - done;
  float padded_x[kSpan] = {};
  float padded_w[kSpan] = {};
  uint8_t padded_codes[kSpan];
  float padded_outs[4][kSubBlocks];
  std::memcpy(padded_x, x + done, static_cast<size_t>(rest) * sizeof(float));
  if (w) std::memcpy(padded_w, w + done, static_cast<size_t>(rest) * sizeof(float));
  float* const outs[4] = {padded_outs[0], padded_outs[1], padded_outs[2], padded_outs[3]};
  search(padded_x, w ? padded_w : nullptr, padded_codes, outs);
  if (codes) std::memcpy(codes + done, padded_codes, static_cast<size_t>(rest));
  for (int o = 0; o < 4; ++o)
    if (per_sub_block[o]) std::memcpy(at(o, done), padded_outs[o], static_cast<size_t>(rest / N) * sizeof(float));
}

// kLanes-wide versions of the three searches.
template <int kLanes>
struct KQuantSearches {
  using F = typename LaneTypes<kLanes>::F;
  // Lane groups searched together, each group a vector: whole super-blocks (16 sub-blocks of 16, or 8 of 32),
  // and at least two groups so that their dependency chains interleave; more groups measured slower (the
  // registers run out).
  static constexpr int kGroups16 = kLanes == 4 ? 4 : 2;
  static constexpr int kGroups32 = 2;

  template <int kGroups, int N, bool kAbsoluteError>
  static void fit_asymmetric(const float* x, const float* w, int64_t n, const AsymmetricSearch& s,
                             float* const (&outs)[4]) {
    for_each_group<F, kGroups, N>(x, w, n, nullptr, outs,
                                  [&](const float* xg, const float* wg, uint8_t*, float* const(&o)[4]) {
                                    fit_scales_and_mins_group<F, kGroups, N, kAbsoluteError>(xg, wg, s, o[0], o[1],
                                                                                             o[2], o[3]);
                                  });
  }

  static void fit_scales_and_mins(const float* x, const float* w, int64_t n, int sub_block, bool absolute_error,
                                  const AsymmetricSearch& s, float* code_inverse, float* code_shift, float* scale,
                                  float* negated_min) {
    float* const outs[4] = {code_inverse, code_shift, scale, negated_min};
    if (sub_block == 16 && absolute_error) fit_asymmetric<kGroups16, 16, true>(x, w, n, s, outs);
    else if (sub_block == 16) fit_asymmetric<kGroups16, 16, false>(x, w, n, s, outs);
    else if (absolute_error) fit_asymmetric<kGroups32, 32, true>(x, w, n, s, outs);
    else fit_asymmetric<kGroups32, 32, false>(x, w, n, s, outs);
  }

  static void fit_symmetric_scales(const float* x, const float* w, int64_t n, int nmax, uint8_t* codes,
                                   float* scale) {
    float* const outs[4] = {scale, nullptr, nullptr, nullptr};
    for_each_group<F, kGroups16, 16>(x, w, n, codes, outs,
                                     [&](const float* xg, const float* wg, uint8_t* c, float* const(&o)[4]) {
                                       fit_symmetric_group<F, kGroups16, 16>(xg, wg, nmax, c, o[0]);
                                     });
  }

  static void fit_symmetric_scales_by_descent(const float* x, int64_t n, int nmax, uint8_t* codes, float* scale) {
    float* const outs[4] = {scale, nullptr, nullptr, nullptr};
    for_each_group<F, kGroups16, 16>(x, nullptr, n, codes, outs,
                                     [&](const float* xg, const float*, uint8_t* c, float* const(&o)[4]) {
                                       fit_symmetric_by_descent_group<F, kGroups16, 16>(xg, nmax, c, o[0]);
                                     });
  }

  static KQuantSearchFunctions functions() {
    return {fit_scales_and_mins, fit_symmetric_scales, fit_symmetric_scales_by_descent};
  }
};

}  // namespace
}  // namespace mlx2gguf
