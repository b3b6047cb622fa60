#include "encode/block_quants.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "encode/block_kernels.h"
#include "util/half.h"

namespace mlx2gguf {

namespace {

void store_f16(uint8_t* at, uint16_t h) { std::memcpy(at, &h, 2); }
float load_f16(const uint8_t* at) {
  uint16_t h;
  std::memcpy(&h, at, 2);
  return f16_to_f32(h);
}

// The 4-bit layouts put element j in the low nibble and element j + half in the high nibble of byte j.
void pack_nibbles(const uint8_t* codes, int count, uint8_t* out) {
  const int half = count / 2;
  for (int j = 0; j < half; ++j) out[j] = static_cast<uint8_t>((codes[j] & 0x0f) | ((codes[j + half] & 0x0f) << 4));
}

void unpack_nibbles(const uint8_t* in, int count, uint8_t* codes) {
  const int half = count / 2;
  for (int j = 0; j < half; ++j) {
    codes[j] = in[j] & 0x0f;
    codes[j + half] = in[j] >> 4;
  }
}

// Q5 types keep the fifth bit of element j as bit j of a little-endian 32-bit word.
void pack_fifth_bits(const uint8_t* codes, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; ++j) bits |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
  std::memcpy(qh, &bits, 4);
}

void add_fifth_bits(const uint8_t* qh, uint8_t* codes) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  for (int j = 0; j < 32; ++j) codes[j] |= static_cast<uint8_t>(((bits >> j) & 1) << 4);
}

// A block the vector kernels may take: all finite (NaN and infinity go through the scalar loops, which treat them
// exactly as the reference does).
Isa block_isa(Isa isa, const float* x) { return isa == Isa::Scalar || block_finite(x) ? isa : Isa::Scalar; }

// A scale so small that its inverse overflows makes the codes infinite or NaN before their conversion to integers,
// whose result the C++ standard leaves undefined: those blocks also take the scalar loops, whose conversion is the
// reference's.
Isa codes_isa(Isa isa, float d, float inverse) { return std::isfinite(d) && std::isfinite(inverse) ? isa : Isa::Scalar; }

// The element of largest magnitude, with its sign; the first one wins ties (0 when all are zero).
float signed_absmax(Isa isa, const float* x) {
  const float amax = block_absmax(isa, x);
  if (amax == 0.0f) return 0.0f;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) == amax) return x[j];
  return 0.0f;  // only NaN elements: the reference keeps its initial 0
}

// The reference keeps the first of equal minima (maxima), which matters only for the sign of a zero.
float first_equal(const float* x, float value) {
  if (value != 0.0f) return value;
  for (int j = 0; j < 32; ++j)
    if (x[j] == 0.0f) return x[j];
  return value;
}

// Symmetric block: scale d = max / -levels, codes truncate(x / d + levels + 0.5) capped at 2·levels - 1.
// The element of largest magnitude lands exactly on code 0.
uint16_t quantize_symmetric_block(Isa isa, const float* x, int levels, uint8_t* codes) {
  isa = block_isa(isa, x);
  const float d = signed_absmax(isa, x) / static_cast<float>(-levels);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  const float offset = static_cast<float>(levels) + 0.5f;
  // (x - 0) * inverse is x * inverse for every finite x; truncation through int (the value is positive) matches
  // the reference's cast.
  block_trunc_codes(codes_isa(isa, d, inverse), x, 0.0f, inverse, offset, 2 * levels - 1, codes);
  return f32_to_f16(d);
}

// Asymmetric block: m = min, d = (max - min) / top, codes truncate((x - min) / d + 0.5).
void quantize_asymmetric_block(Isa isa, const float* x, int top, uint16_t& d16, uint16_t& m16, uint8_t* codes) {
  isa = block_isa(isa, x);
  float min, max;
  block_min_max(isa, x, min, max);
  min = first_equal(x, min);
  max = first_equal(x, max);
  const float d = (max - min) / static_cast<float>(top);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  block_trunc_codes(codes_isa(isa, d, inverse), x, min, inverse, 0.5f, top, codes);
  d16 = f32_to_f16(d);
  m16 = f32_to_f16(min);
}

// Index of the FP4 value nearest to x at scale d (the first of equally near values).
uint8_t nearest_fp4(float x, float d) {
  uint8_t best = 0;
  float best_error = std::fabs(kFp4DoubledValues[0] * d - x);
  for (uint8_t i = 1; i < 16; ++i) {
    const float error = std::fabs(kFp4DoubledValues[i] * d - x);
    if (error < best_error) {
      best = i;
      best_error = error;
    }
  }
  return best;
}

// nearest_fp4 for a block of 32 at a scale d that is a power of two with d and 1/d normal. y = x/d is then exact,
// |v·d - x| = d·|v - y| exactly, and between two neighbouring grid values both differences are exact (Sterbenz),
// so the index nearest to x, the first of equally near ones, is the number of midpoints of the doubled grid
// {0, 1, 2, 3, 4, 6, 8, 12} strictly below |y| (a tie goes to the smaller magnitude, which comes first), plus 8
// for a negative y (a zero magnitude is index 0, which precedes -0). Branch-free, so the loop vectorises.
void nearest_fp4_codes_at_power_of_two(const float* x, float inverse_d, uint8_t* codes) {
  for (int j = 0; j < 32; ++j) {
    const float y = x[j] * inverse_d;
    const float a = std::fabs(y);
    const int magnitude = (a > 0.5f) + (a > 1.5f) + (a > 2.5f) + (a > 3.5f) + (a > 5.0f) + (a > 7.0f) + (a > 10.0f);
    codes[j] = static_cast<uint8_t>(magnitude + (y < 0.0f && magnitude > 0 ? 8 : 0));
  }
}

float absmax(const float* x, int count) {
  float amax = 0.0f;
  for (int j = 0; j < count; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

}  // namespace

const int8_t kFp4DoubledValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float e8m0_half_to_f32(uint8_t e) { return std::ldexp(1.0f, static_cast<int>(e) - 128); }

float ue4m3_half_to_f32(uint8_t code) {
  if (code == 0 || code == 0x7f) return 0.0f;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  const float value = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                    : std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
  return value * 0.5f;
}

uint8_t f32_to_ue4m3(float x) {
  if (!(x > 0.0f)) return 0;
  x = std::min(x, 448.0f);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 7;
  if (exponent <= 0) {  // subnormal: steps of 2^-9
    const int mantissa = std::min(7, static_cast<int>(x * 512.0f + 0.5f));
    return mantissa < 1 ? 0 : static_cast<uint8_t>(mantissa);
  }
  if (exponent >= 15) return 0x7e;
  // Three mantissa bits, rounded half up on the fourth.
  int mantissa = static_cast<int>((bits >> 20) & 7) + static_cast<int>((bits >> 19) & 1);
  if (mantissa > 7) {
    mantissa = 0;
    if (++exponent >= 15) return 0x7e;
  }
  return static_cast<uint8_t>((exponent << 3) | mantissa);
}

void pack_q4_1_block(uint16_t d, uint16_t m, const uint8_t* codes, uint8_t* block) {
  store_f16(block, d);
  store_f16(block + 2, m);
  pack_nibbles(codes, 32, block + 4);
}

void pack_q5_1_block(uint16_t d, uint16_t m, const uint8_t* codes, uint8_t* block) {
  store_f16(block, d);
  store_f16(block + 2, m);
  pack_fifth_bits(codes, block + 4);
  pack_nibbles(codes, 32, block + 8);
}

void pack_mxfp4_block(uint8_t e8m0, const uint8_t* codes, uint8_t* block) {
  block[0] = e8m0;
  pack_nibbles(codes, 32, block + 1);
}

void pack_nvfp4_block(const uint8_t* ue4m3, const uint8_t* codes, uint8_t* block) {
  std::memcpy(block, ue4m3, 4);
  for (int s = 0; s < 4; ++s) pack_nibbles(codes + 16 * s, 16, block + 4 + 8 * s);
}

void quantize_row_q4_0(const float* x, int64_t n, uint8_t* out, Isa isa) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 18) {
    store_f16(out, quantize_symmetric_block(isa, x, 8, codes));
    pack_nibbles(codes, 32, out + 2);
  }
}

void quantize_row_q5_0(const float* x, int64_t n, uint8_t* out, Isa isa) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 22) {
    store_f16(out, quantize_symmetric_block(isa, x, 16, codes));
    pack_fifth_bits(codes, out + 2);
    pack_nibbles(codes, 32, out + 6);
  }
}

void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out, Isa isa) {
  uint8_t codes[32];
  uint16_t d, m;
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 20) {
    quantize_asymmetric_block(isa, x, 15, d, m, codes);
    pack_q4_1_block(d, m, codes, out);
  }
}

void quantize_row_q5_1(const float* x, int64_t n, uint8_t* out, Isa isa) {
  uint8_t codes[32];
  uint16_t d, m;
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 24) {
    quantize_asymmetric_block(isa, x, 31, d, m, codes);
    pack_q5_1_block(d, m, codes, out);
  }
}

// Q8_0 rounds half away from zero (C roundf) from the unrounded scale, unlike the 4/5-bit types.
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out, Isa isa) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 34) {
    const Isa block = block_isa(isa, x);
    const float d = block_absmax(block, x) / 127.0f;
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, f32_to_f16(d));
    block_round_codes(codes_isa(block, d, inverse), x, inverse, reinterpret_cast<int8_t*>(out + 2));
  }
}

void quantize_row_q4_0(const float* x, int64_t n, uint8_t* out) { quantize_row_q4_0(x, n, out, best_isa()); }
void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out) { quantize_row_q4_1(x, n, out, best_isa()); }
void quantize_row_q5_0(const float* x, int64_t n, uint8_t* out) { quantize_row_q5_0(x, n, out, best_isa()); }
void quantize_row_q5_1(const float* x, int64_t n, uint8_t* out) { quantize_row_q5_1(x, n, out, best_isa()); }
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out) { quantize_row_q8_0(x, n, out, best_isa()); }

// MXFP4: one power-of-two scale per 32 elements, chosen so the largest magnitude falls in the top binade of
// the FP4 grid (values up to 6), then each element takes its nearest grid value.
void quantize_row_mxfp4(const float* x, int64_t n, uint8_t* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 17) {
    const float amax = absmax(x, 32);
    const uint8_t e = amax > 0.0f ? static_cast<uint8_t>(std::floor(std::log2(amax)) - 2 + 127) : 0;
    const float d = e8m0_half_to_f32(e);
    if (e >= 2 && e <= 254)  // d and 1/d are normal floats
      nearest_fp4_codes_at_power_of_two(x, 1.0f / d, codes);
    else
      for (int j = 0; j < 32; ++j) codes[j] = nearest_fp4(x[j], d);
    pack_mxfp4_block(e, codes, out);
  }
}

// NVFP4: four sub-blocks of 16, each with an unsigned E4M3 scale of amax / 6.
void quantize_row_nvfp4(const float* x, int64_t n, uint8_t* out) {
  uint8_t codes[64], scales[4];
  for (int64_t b = 0; b < n / 64; ++b, x += 64, out += 36) {
    for (int s = 0; s < 4; ++s) {
      scales[s] = f32_to_ue4m3(absmax(x + 16 * s, 16) / 6.0f);
      const float d = ue4m3_half_to_f32(scales[s]);
      for (int j = 0; j < 16; ++j) codes[16 * s + j] = nearest_fp4(x[16 * s + j], d);
    }
    pack_nvfp4_block(scales, codes, out);
  }
}

void dequantize_row_q4_0(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, in += 18, out += 32) {
    const float d = load_f16(in);
    unpack_nibbles(in + 2, 32, codes);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(codes[j] - 8) * d;
  }
}

void dequantize_row_q5_0(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, in += 22, out += 32) {
    const float d = load_f16(in);
    unpack_nibbles(in + 6, 32, codes);
    add_fifth_bits(in + 2, codes);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(codes[j] - 16) * d;
  }
}

void dequantize_row_q4_1(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, in += 20, out += 32) {
    const float d = load_f16(in), m = load_f16(in + 2);
    unpack_nibbles(in + 4, 32, codes);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(codes[j]) * d + m;
  }
}

void dequantize_row_q5_1(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, in += 24, out += 32) {
    const float d = load_f16(in), m = load_f16(in + 2);
    unpack_nibbles(in + 8, 32, codes);
    add_fifth_bits(in + 4, codes);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(codes[j]) * d + m;
  }
}

void dequantize_row_q8_0(const uint8_t* in, int64_t n, float* out) {
  for (int64_t b = 0; b < n / 32; ++b, in += 34, out += 32) {
    const float d = load_f16(in);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
  }
}

void dequantize_row_mxfp4(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[32];
  for (int64_t b = 0; b < n / 32; ++b, in += 17, out += 32) {
    const float d = e8m0_half_to_f32(in[0]);
    unpack_nibbles(in + 1, 32, codes);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(kFp4DoubledValues[codes[j]]) * d;
  }
}

void dequantize_row_nvfp4(const uint8_t* in, int64_t n, float* out) {
  uint8_t codes[16];
  for (int64_t b = 0; b < n / 64; ++b, in += 36) {
    for (int s = 0; s < 4; ++s, out += 16) {
      const float d = ue4m3_half_to_f32(in[s]);
      unpack_nibbles(in + 4 + 8 * s, 16, codes);
      for (int j = 0; j < 16; ++j) out[j] = static_cast<float>(kFp4DoubledValues[codes[j]]) * d;
    }
  }
}

}  // namespace mlx2gguf
