#pragma once
// IEEE half and bfloat16 conversions with the rounding ggml uses (round to nearest even).
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mlx2gguf {

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    if (mantissa == 0) return std::bit_cast<float>(sign);
    // subnormal: value = mantissa * 2^-24 (exact in float)
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -value : value;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000 | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs_bits = bits & 0x7fffffff;
  if (abs_bits > 0x7f800000) return sign | 0x7e00;           // NaN
  if (abs_bits >= 0x477ff000) return sign | 0x7c00;          // overflow (incl. values rounding up to inf) → inf
  if (abs_bits < 0x38800000) {                               // result is subnormal or zero
    if (abs_bits < 0x33000000) return sign;                  // below half of the smallest subnormal → 0
    const uint32_t shift = 126 - (abs_bits >> 23);  // half subnormal unit is 2^-24
    const uint32_t mant = (abs_bits & 0x7fffff) | 0x800000;
    uint32_t half_mant = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half_mant & 1))) ++half_mant;
    return sign | static_cast<uint16_t>(half_mant);
  }
  uint32_t value = abs_bits - 0x38000000;  // rebias exponent 127 → 15
  const uint32_t rest = value & 0x1fff;
  value >>= 13;
  if (rest > 0x1000 || (rest == 0x1000 && (value & 1))) ++value;
  return sign | static_cast<uint16_t>(value);
}

}  // namespace mlx2gguf
