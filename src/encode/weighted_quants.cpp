#include "encode/weighted_quants.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "encode/k_quant_kernels.h"
#include "encode/row_encoder.h"
#include "util/half.h"

// The searches below repeat the float operations of ggml's weighted quantizers in the same order, one scalar
// operation at a time (the build forbids fused multiply-add): the bytes only match if every rounding matches.
// Where an expression looks roundabout (an int code converted to float in the middle of a product, a sum started
// at a particular element), that is the order that gives the same bits.

namespace mlx2gguf {
namespace {

constexpr int kSuper = 256;           // elements of a K-type super-block
constexpr int kBlock = 32;            // elements of a Q4_0 .. Q5_1 block
constexpr float kAllZero = 1e-15f;    // a group whose largest magnitude is below this is stored as zero

// Round half to even through the float adder (the integer lands in the low mantissa bits).
inline int nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  return static_cast<int>(std::bit_cast<uint32_t>(shifted) & 0x007fffffu) - 0x00400000;
}

inline void store_half(uint8_t* at, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(at, &h, 2);
}

inline float stored_half(const uint8_t* at) {
  uint16_t h;
  std::memcpy(&h, at, 2);
  return f16_to_f32(h);
}

// Symmetric codes l in [-nmax, nmax-1] (value = scale·l) for n values under weights w. Starting from the inverse
// scale -nmax/max (max: the value of largest magnitude), it tries -(nmax + k/10)/max for k = ±1..±9 and keeps the
// candidate explaining the most weighted energy (Σw·x·l)²/Σw·l². Codes are written offset by nmax.
float fit_symmetric(int n, int nmax, const float* x, const float* w, int8_t* codes) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      max = x[i];
    }
  }
  if (amax < kAllZero) {
    std::fill(codes, codes + n, int8_t{0});
    return 0.0f;
  }
  const auto sums = [&](float inverse, float& sum_wxl, float& sum_wll) {
    sum_wxl = sum_wll = 0;
    for (int i = 0; i < n; ++i) {
      const float l = static_cast<float>(std::clamp(nearest_int(inverse * x[i]), -nmax, nmax - 1));
      sum_wxl += w[i] * x[i] * l;
      sum_wll += w[i] * l * l;
    }
  };
  const auto write_codes = [&](float inverse) {
    for (int i = 0; i < n; ++i)
      codes[i] = static_cast<int8_t>(std::clamp(nearest_int(inverse * x[i]), -nmax, nmax - 1) + nmax);
  };
  float inverse = static_cast<float>(-nmax) / max;
  float sum_wxl, sum_wll;
  sums(inverse, sum_wxl, sum_wll);
  write_codes(inverse);
  float scale = sum_wll != 0.0f ? sum_wxl / sum_wll : 0.0f;
  float best = scale * sum_wxl;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    inverse = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / max;
    sums(inverse, sum_wxl, sum_wll);
    if (sum_wll > 0 && sum_wxl * sum_wxl > best * sum_wll) {
      write_codes(inverse);
      scale = sum_wxl / sum_wll;
      best = scale * sum_wxl;
    }
  }
  return scale;
}

// The searches of every sub-block of a row, done by the kernels the plain K-quant encoders use
// (k_quant_kernels.h): the weighted quantizers run the same loops, only with other weights and parameters.
struct SubBlockFits {
  std::vector<float> scale, negated_min, inverse, shift;
  std::vector<uint8_t> codes;  // the symmetric search's codes, offset by nmax
};

// Asymmetric codes l in [0, nmax] (value = scale·l - offset, offset ≥ 0) under weights w, per sub-block: from the
// range [min(0, min x), max x], inverse scales (nmax - 0.9 + k/20)/range for k = 0..36, each fitted by weighted
// least squares, the least weighted squared error kept.
SubBlockFits fit_row_with_offset(const float* x, const float* w, int64_t n, int sub_block, int nmax) {
  SubBlockFits f;
  const size_t count = static_cast<size_t>(n / sub_block);
  f.scale.resize(count);
  f.negated_min.resize(count);
  f.inverse.resize(count);
  f.shift.resize(count);
  fit_scales_and_mins(best_isa(), x, w, n, sub_block, false, {nmax, -0.9f, 0.05f, 36}, f.inverse.data(),
                      f.shift.data(), f.scale.data(), f.negated_min.data());
  return f;
}

// fit_symmetric for every 16-element sub-block of a row.
SubBlockFits fit_row_symmetric(const float* x, const float* w, int64_t n, int nmax) {
  SubBlockFits f;
  f.scale.resize(static_cast<size_t>(n / 16));
  f.codes.resize(static_cast<size_t>(n));
  fit_symmetric_scales(best_isa(), x, w, n, nmax, f.codes.data(), f.scale.data());
  return f;
}

// Codes in [0, nmax] for n non-negative values (sub-block scales or offsets) under weights w: the best of nine
// inverse scales (nmax + k/10)/max, k = -4..4, then up to five sweeps of coordinate descent, each code moving to
// its best value given the others when that explains more weighted energy. Returns the least-squares scale.
// The codes are bytes: a negative rounding wraps around exactly as in ggml.
float fit_positive(int n, int nmax, const float* x, uint8_t* codes, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kAllZero) {
    std::fill(codes, codes + n, uint8_t{0});
    return 0.0f;
  }
  float inverse = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(nearest_int(inverse * x[i]));
  const float scale = 1 / inverse;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(codes[i]);
    best_error += w[i] * diff * diff;
  }
  for (int k = -4; k <= 4; ++k) {
    if (k == 0) continue;
    const float trial_inverse = (0.1f * static_cast<float>(k) + static_cast<float>(nmax)) / max;
    const float trial_scale = 1 / trial_inverse;
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(trial_inverse * x[i]));
      const float diff = x[i] - trial_scale * static_cast<float>(l);
      error += w[i] * diff * diff;
    }
    if (error < best_error) {
      best_error = error;
      inverse = trial_inverse;
    }
  }
  float sum_wxl = 0, sum_wll = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(inverse * x[i]));
    codes[i] = static_cast<uint8_t>(l);
    const float fl = static_cast<float>(l);
    sum_wxl += w[i] * x[i] * fl;
    sum_wll += w[i] * fl * fl;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float current = static_cast<float>(codes[i]);
      float wxl = sum_wxl - w[i] * x[i] * current;
      float wll = sum_wll - w[i] * current * current;
      if (!(wxl > 0 && wll > 0)) continue;
      const int l = std::min(nmax, nearest_int(x[i] * wll / wxl));
      if (l == codes[i]) continue;
      const float fl = static_cast<float>(l);
      wxl += w[i] * x[i] * fl;
      wll += w[i] * fl * fl;
      if (wxl * wxl * sum_wll > sum_wxl * sum_wxl * wll) {
        codes[i] = static_cast<uint8_t>(l);
        sum_wxl = wxl;
        sum_wll = wll;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  return sum_wll > 0.0f ? sum_wxl / sum_wll : 0.0f;
}

float sum_of_squares(const float* x, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// The per-element weight of the 32-block types and Q2_K .. Q5_K: the column's importance times the element's
// magnitude softened by the spread of its row or super-block, sqrt(σ² + x²).
void element_weights(const float* importance, const float* x, int n, float sigma2, float* weights) {
  for (int i = 0; i < n; ++i) weights[i] = importance[i] * std::sqrt(sigma2 + x[i] * x[i]);
}

float sum(const float* v, int n) {
  float total = 0;
  for (int i = 0; i < n; ++i) total += v[i];
  return total;
}

// Nibbles of 32 codes: element j in the low half of byte j, element j + 16 in the high half.
void pack_nibbles_32(const uint8_t* codes, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4));
}

// The fifth bits of 32 codes as one little-endian 32-bit mask.
void pack_fifth_bits_32(const uint8_t* codes, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; ++j) bits |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
  for (int b = 0; b < 4; ++b) qh[b] = static_cast<uint8_t>(bits >> (8 * b));
}

// Two bits per code, four codes 32 apart in one byte, for each half of a 256-element super-block.
void pack_crumbs_256(const uint8_t* codes, uint8_t* qs) {
  for (int half = 0; half < kSuper; half += 128)
    for (int l = 0; l < 32; ++l)
      qs[half / 4 + l] = static_cast<uint8_t>(codes[half + l] | (codes[half + l + 32] << 2) |
                                              (codes[half + l + 64] << 4) | (codes[half + l + 96] << 6));
}

// The 12 bytes holding eight 6-bit scales and eight 6-bit offsets of Q4_K and Q5_K.
void pack_scales_k4(const uint8_t* scale_codes, const uint8_t* offset_codes, uint8_t* packed) {
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = scale_codes[j], lm = offset_codes[j];
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
}

void unpack_scale_k4(int j, const uint8_t* packed, int& scale, int& offset) {
  if (j < 4) {
    scale = packed[j] & 63;
    offset = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
    offset = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Q4_0 / Q5_0: symmetric 32-blocks with codes from the weighted search as they are (no re-rounding).
template <int kBits>
void quantize_symmetric_blocks(const float* x, int64_t n, const float* importance, uint8_t* out) {
  constexpr int64_t kBytes = kBits == 4 ? 18 : 22;
  const float sigma2 = sum_of_squares(x, n) / static_cast<float>(n);
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float weights[kBlock];
    element_weights(importance + b * kBlock, xb, kBlock, sigma2, weights);
    int8_t signed_codes[kBlock];
    const float d = fit_symmetric(kBlock, 1 << (kBits - 1), xb, weights, signed_codes);
    uint8_t codes[kBlock];
    for (int i = 0; i < kBlock; ++i) codes[i] = static_cast<uint8_t>(signed_codes[i]);
    uint8_t* block = out + b * kBytes;
    store_half(block, d);
    if constexpr (kBits == 4) {
      pack_nibbles_32(codes, block + 2);
    } else {
      pack_fifth_bits_32(codes, block + 2);
      pack_nibbles_32(codes, block + 6);
    }
  }
}

// Q4_1 / Q5_1: scale and offset per 32-block from the weighted search.
template <int kBits>
void quantize_offset_blocks(const float* x, int64_t n, const float* importance, uint8_t* out) {
  constexpr int64_t kBytes = kBits == 4 ? 20 : 24;
  const float sigma2 = sum_of_squares(x, n) / static_cast<float>(n);
  std::vector<float> weights(static_cast<size_t>(n));
  element_weights(importance, x, static_cast<int>(n), sigma2, weights.data());
  const SubBlockFits fits = fit_row_with_offset(x, weights.data(), n, kBlock, (1 << kBits) - 1);
  for (int64_t b = 0; b < n / kBlock; ++b) {
    uint8_t codes[kBlock];
    asymmetric_codes(x + b * kBlock, kBlock, fits.inverse[b], fits.shift[b], (1 << kBits) - 1, codes);
    const float d = fits.scale[b], offset = fits.negated_min[b];
    uint8_t* block = out + b * kBytes;
    store_half(block, d);
    store_half(block + 2, -offset);
    if constexpr (kBits == 4) {
      pack_nibbles_32(codes, block + 4);
    } else {
      pack_fifth_bits_32(codes, block + 4);
      pack_nibbles_32(codes, block + 8);
    }
  }
}

// Q4_K / Q5_K super-block: eight 32-element sub-blocks, 6-bit scale and offset codes.
// Each super-block's weights: importance · sqrt(σ² + x²) with σ² from the super-block (times `spread`).
std::vector<float> super_block_weights(const float* x, int64_t n, const float* importance, float spread) {
  std::vector<float> weights(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / kSuper; ++b) {
    const float sigma2 = spread * sum_of_squares(x + b * kSuper, kSuper) / kSuper;
    element_weights(importance + b * kSuper, x + b * kSuper, kSuper, sigma2, weights.data() + b * kSuper);
  }
  return weights;
}

// Super-block b of a row whose sub-blocks were searched into `fits`, with the weights of that search.
template <int kBits>
void quantize_k4_superblock(const float* x, const float* weights, const SubBlockFits& fits, int64_t b,
                            uint8_t* block) {
  constexpr int nmax = (1 << kBits) - 1;
  uint8_t codes[kSuper];
  float scales[8], offsets[8], sub_weights[8];
  for (int j = 0; j < 8; ++j) {
    sub_weights[j] = sum(weights + 32 * j, 32);
    scales[j] = fits.scale[8 * b + j];
    offsets[j] = fits.negated_min[8 * b + j];
    asymmetric_codes(x + 32 * j, 32, fits.inverse[8 * b + j], fits.shift[8 * b + j], nmax, codes + 32 * j);
  }
  uint8_t scale_codes[8], offset_codes[8];
  const float d = fit_positive(8, 63, scales, scale_codes, sub_weights);
  const float dmin = fit_positive(8, 63, offsets, offset_codes, sub_weights);
  if constexpr (kBits == 5) {
    for (int j = 0; j < 8; ++j) {
      scale_codes[j] = std::min<uint8_t>(63, scale_codes[j]);
      offset_codes[j] = std::min<uint8_t>(63, offset_codes[j]);
    }
  }
  uint8_t* packed = block + 4;
  std::memset(packed, 0, 12);
  pack_scales_k4(scale_codes, offset_codes, packed);
  store_half(block, d);
  store_half(block + 2, dmin);
  const float stored_d = stored_half(block), stored_dmin = stored_half(block + 2);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    unpack_scale_k4(j, packed, sc, m);
    const float step = stored_d * static_cast<float>(sc);
    if (step == 0.0f) continue;
    const float shift = stored_dmin * static_cast<float>(m);
    for (int i = 0; i < 32; ++i)
      codes[32 * j + i] = static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + i] + shift) / step), 0, nmax));
  }
  if constexpr (kBits == 4) {
    uint8_t* qs = block + 16;
    for (int j = 0; j < kSuper; j += 64)
      for (int l = 0; l < 32; ++l) qs[j / 2 + l] = static_cast<uint8_t>(codes[j + l] | (codes[j + l + 32] << 4));
  } else {
    uint8_t* qh = block + 16;
    uint8_t* qs = block + 48;
    std::memset(qh, 0, 32);
    uint8_t low_mask = 1, high_mask = 2;
    for (int j = 0; j < kSuper; j += 64) {
      for (int l = 0; l < 32; ++l) {
        int low = codes[j + l], high = codes[j + l + 32];
        if (low > 15) {
          low -= 16;
          qh[l] |= low_mask;
        }
        if (high > 15) {
          high -= 16;
          qh[l] |= high_mask;
        }
        qs[j / 2 + l] = static_cast<uint8_t>(low | (high << 4));
      }
      low_mask = static_cast<uint8_t>(low_mask << 2);
      high_mask = static_cast<uint8_t>(high_mask << 2);
    }
  }
}

void quantize_q2_k_superblock(const float* x, const float* weights, const SubBlockFits& fits, int64_t b,
                              uint8_t* block) {
  uint8_t codes[kSuper];
  float scales[16], offsets[16], sub_weights[16];
  for (int j = 0; j < 16; ++j) {
    sub_weights[j] = sum(weights + 16 * j, 16);
    scales[j] = fits.scale[16 * b + j];
    offsets[j] = fits.negated_min[16 * b + j];
    asymmetric_codes(x + 16 * j, 16, fits.inverse[16 * b + j], fits.shift[16 * b + j], 3, codes + 16 * j);
  }
  uint8_t scale_codes[16], offset_codes[16];
  const float d = fit_positive(16, 15, scales, scale_codes, sub_weights);
  const float dmin = fit_positive(16, 15, offsets, offset_codes, sub_weights);
  uint8_t* packed = block;  // 16 bytes: scale code low, offset code high
  uint8_t* qs = block + 16;
  store_half(block + 80, d);
  store_half(block + 82, dmin);
  const float stored_d = stored_half(block + 80), stored_dmin = stored_half(block + 82);
  for (int j = 0; j < 16; ++j) packed[j] = static_cast<uint8_t>(scale_codes[j] | (offset_codes[j] << 4));
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(packed[j] & 0xF);
    if (step == 0.0f) continue;
    const float shift = stored_dmin * static_cast<float>(packed[j] >> 4);
    for (int i = 0; i < 16; ++i)
      codes[16 * j + i] = static_cast<uint8_t>(std::clamp(nearest_int((x[16 * j + i] + shift) / step), 0, 3));
  }
  pack_crumbs_256(codes, qs);
}

void quantize_q3_k_superblock(const float* x, const float* weights, const SubBlockFits& fits, int64_t b,
                              uint8_t* block) {
  int8_t signed_codes[kSuper];
  float scales[16], sub_weights[16];
  for (int j = 0; j < 16; ++j) {
    sub_weights[j] = sum(weights + 16 * j, 16);
    scales[j] = fits.scale[16 * b + j];
  }
  for (int e = 0; e < kSuper; ++e) signed_codes[e] = static_cast<int8_t>(fits.codes[kSuper * b + e]);
  int8_t scale_codes[16];
  const float d = fit_symmetric(16, 32, scales, sub_weights, scale_codes);
  uint8_t* hmask = block;
  uint8_t* qs = block + 32;
  uint8_t* packed = block + 96;  // 12 bytes of 6-bit scale codes
  std::memset(packed, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int l = scale_codes[j];
    if (j < 8)
      packed[j] = static_cast<uint8_t>(l & 0xF);
    else
      packed[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    l >>= 4;
    packed[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
  store_half(block + 108, d);
  const float stored_d = stored_half(block + 108);
  for (int j = 0; j < 16; ++j) {
    int sc = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
    sc = static_cast<int8_t>((sc | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    const float step = stored_d * static_cast<float>(sc);
    if (step == 0.0f) continue;
    for (int i = 0; i < 16; ++i)
      signed_codes[16 * j + i] = static_cast<int8_t>(std::clamp(nearest_int(x[16 * j + i] / step), -4, 3) + 4);
  }
  // The third bit of element j goes to bit j / 32 of hmask byte j % 32; the low two bits are packed as Q2_K's.
  std::memset(hmask, 0, 32);
  uint8_t codes[kSuper];
  for (int j = 0; j < kSuper; ++j) {
    int code = signed_codes[j];
    if (code > 3) {
      hmask[j % 32] |= static_cast<uint8_t>(1 << (j / 32));
      code -= 4;
    }
    codes[j] = static_cast<uint8_t>(code);
  }
  pack_crumbs_256(codes, qs);
}

void quantize_q6_k_superblock(const float* x, const float*, const SubBlockFits& fits, int64_t b, uint8_t* block) {
  int8_t signed_codes[kSuper];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int e = 0; e < kSuper; ++e) signed_codes[e] = static_cast<int8_t>(fits.codes[kSuper * b + e]);
  for (int j = 0; j < 16; ++j) {
    scales[j] = fits.scale[16 * b + j];
    if (std::fabs(scales[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  uint8_t* ql = block;
  uint8_t* qh = block + 128;
  int8_t* scale_codes = reinterpret_cast<int8_t*>(block + 192);
  if (max_abs_scale < kAllZero) {
    std::memset(block, 0, 210);
    return;
  }
  const float inverse = -128.0f / max_scale;
  store_half(block + 208, 1 / inverse);
  const float stored_d = stored_half(block + 208);
  for (int j = 0; j < 16; ++j) scale_codes[j] = static_cast<int8_t>(std::min(127, nearest_int(inverse * scales[j])));
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(scale_codes[j]);
    if (step == 0.0f) continue;
    for (int i = 0; i < 16; ++i)
      signed_codes[16 * j + i] = static_cast<int8_t>(std::clamp(nearest_int(x[16 * j + i] / step), -32, 31) + 32);
  }
  for (int half = 0; half < kSuper; half += 128) {
    const int8_t* c = signed_codes + half;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((c[l] & 0xF) | ((c[l + 64] & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((c[l + 32] & 0xF) | ((c[l + 96] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((c[l] >> 4) | ((c[l + 32] >> 4) << 2) | ((c[l + 64] >> 4) << 4) |
                                   ((c[l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

using FinishSuperBlock = void (*)(const float*, const float*, const SubBlockFits&, int64_t, uint8_t*);

// The sub-blocks of the whole row are searched at once (so the kernels can fill their lanes), then each
// super-block is finished.
template <FinishSuperBlock kFinish, int64_t kBytes>
void finish_super_blocks(const float* x, int64_t n, const float* weights, const SubBlockFits& fits, uint8_t* out) {
  for (int64_t b = 0; b < n / kSuper; ++b) kFinish(x + b * kSuper, weights + b * kSuper, fits, b, out + b * kBytes);
}

using WeightedRow = void (*)(const float*, int64_t, const float*, uint8_t*);

WeightedRow weighted_encoder(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return quantize_row_q4_0_weighted;
    case GgmlType::Q4_1: return quantize_row_q4_1_weighted;
    case GgmlType::Q5_0: return quantize_row_q5_0_weighted;
    case GgmlType::Q5_1: return quantize_row_q5_1_weighted;
    case GgmlType::Q2_K: return quantize_row_q2_k_weighted;
    case GgmlType::Q3_K: return quantize_row_q3_k_weighted;
    case GgmlType::Q4_K: return quantize_row_q4_k_weighted;
    case GgmlType::Q5_K: return quantize_row_q5_k_weighted;
    case GgmlType::Q6_K: return quantize_row_q6_k_weighted;
    default: return nullptr;
  }
}

}  // namespace

void quantize_row_q4_0_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  quantize_symmetric_blocks<4>(x, n, importance, out);
}
void quantize_row_q5_0_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  quantize_symmetric_blocks<5>(x, n, importance, out);
}
void quantize_row_q4_1_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  quantize_offset_blocks<4>(x, n, importance, out);
}
void quantize_row_q5_1_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  quantize_offset_blocks<5>(x, n, importance, out);
}
void quantize_row_q2_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  const std::vector<float> weights = super_block_weights(x, n, importance, 1.0f);
  finish_super_blocks<quantize_q2_k_superblock, 84>(x, n, weights.data(),
                                                    fit_row_with_offset(x, weights.data(), n, 16, 3), out);
}
void quantize_row_q3_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  const std::vector<float> weights = super_block_weights(x, n, importance, 2.0f);
  finish_super_blocks<quantize_q3_k_superblock, 110>(x, n, weights.data(), fit_row_symmetric(x, weights.data(), n, 4),
                                                     out);
}
void quantize_row_q4_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  const std::vector<float> weights = super_block_weights(x, n, importance, 2.0f);
  finish_super_blocks<quantize_k4_superblock<4>, 144>(x, n, weights.data(),
                                                      fit_row_with_offset(x, weights.data(), n, 32, 15), out);
}
void quantize_row_q5_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  const std::vector<float> weights = super_block_weights(x, n, importance, 2.0f);
  finish_super_blocks<quantize_k4_superblock<5>, 176>(x, n, weights.data(),
                                                      fit_row_with_offset(x, weights.data(), n, 32, 31), out);
}
void quantize_row_q6_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out) {
  // Q6_K weighs by importance alone, without the element magnitude.
  finish_super_blocks<quantize_q6_k_superblock, 210>(x, n, importance, fit_row_symmetric(x, importance, n, 32), out);
}

bool uses_importance(GgmlType type) { return weighted_encoder(type) != nullptr; }

void encode_rows_weighted(GgmlType type, const float* in, int64_t rows, int64_t row_length, const float* importance,
                          uint8_t* out) {
  const WeightedRow encode = weighted_encoder(type);
  if (encode == nullptr || importance == nullptr) {
    encode_rows(type, in, rows, row_length, out);
    return;
  }
  const int64_t row_bytes = ggml_row_bytes(type, row_length);
  for (int64_t r = 0; r < rows; ++r) encode(in + r * row_length, row_length, importance, out + r * row_bytes);
}

}  // namespace mlx2gguf
