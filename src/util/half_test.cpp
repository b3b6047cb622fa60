#include "util/half.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace mlx2gguf {
namespace {

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

// IEEE binary16 decoded straight from its definition, in double.
double f16_reference(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  double magnitude;
  if (exponent == 0x1f) magnitude = mantissa ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exponent == 0) magnitude = std::ldexp(mantissa, -24);
  else magnitude = std::ldexp(1024 + mantissa, exponent - 25);
  return sign ? -magnitude : magnitude;
}

bool is_f16_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST(HalfF16ToF32, DecodesHandPickedCodes) {
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_to_f32(0x0000)), 0x00000000u);
  EXPECT_EQ(std::bit_cast<uint32_t>(f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x3C01), 1.0009765625f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7C01)));
  EXPECT_TRUE(std::signbit(f16_to_f32(0xFE00)));
}

TEST(HalfF16ToF32, EveryCodeMatchesTheDefinitionAndRoundTrips) {
  for (uint32_t code = 0; code <= 0xffff; ++code) {
    const auto h = static_cast<uint16_t>(code);
    const float f = f16_to_f32(h);
    const double expected = f16_reference(h);
    if (is_f16_nan(h)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << code;
      const uint16_t back = f32_to_f16(f);
      ASSERT_TRUE(is_f16_nan(back)) << std::hex << code << " -> " << back;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << code;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), expected) << std::hex << code;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << code;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << code;
  }
}

TEST(HalfF32ToF16, RoundsTiesToEven) {
  // Between 1 (0x3C00) and 1 + 2^-10 (0x3C01): the midpoint goes to the even 0x3C00.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  // Between 0x3C01 and 0x3C02: the midpoint goes to the even 0x3C02.
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  // Just off the midpoint in either direction.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -22)), 0x3C01);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11) - std::ldexp(1.0f, -23)), 0x3C00);
  EXPECT_EQ(f32_to_f16(-(1.0f + 3 * std::ldexp(1.0f, -11))), 0xBC02);
  // Rounding that carries into the exponent: just below 2 rounds to 2.
  EXPECT_EQ(f32_to_f16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
  EXPECT_EQ(f32_to_f16(0.1f), 0x2E66);
  EXPECT_EQ(f32_to_f16(-3.14159265f), 0xC248);
}

TEST(HalfF32ToF16, OverflowsToInfinityOnlyPastTheRoundingBoundary) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7BFF);  // below the midpoint 65520
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);    // the midpoint: 0x7BFF is odd, so it rounds up to infinity
  EXPECT_EQ(f32_to_f16(-65520.0f), 0xFC00);
  EXPECT_EQ(f32_to_f16(1.0e6f), 0x7C00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::max()), 0x7C00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xFC00);
}

TEST(HalfF32ToF16, ProducesSubnormalsAndFlushesBelowHalfTheSmallest) {
  const float unit = std::ldexp(1.0f, -24);  // smallest f16 subnormal
  EXPECT_EQ(f32_to_f16(unit), 0x0001);
  EXPECT_EQ(f32_to_f16(-unit), 0x8001);
  EXPECT_EQ(f32_to_f16(unit / 2), 0x0000);                                         // tie with 0: even
  EXPECT_EQ(f32_to_f16(std::nextafter(unit / 2, 1.0f)), 0x0001);                 // just above the tie
  EXPECT_EQ(f32_to_f16(unit / 4), 0x0000);
  EXPECT_EQ(f32_to_f16(1.5f * unit), 0x0002);                                      // tie between 1 and 2
  EXPECT_EQ(f32_to_f16(2.5f * unit), 0x0002);                                      // tie between 2 and 3
  EXPECT_EQ(f32_to_f16(1000.25f * unit), 0x03E8);
  EXPECT_EQ(f32_to_f16(1023.5f * unit), 0x0400);                                   // rounds up into the normals
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(f32_to_f16(1.0e-10f), 0x0000);
  EXPECT_EQ(f32_to_f16(-1.0e-10f), 0x8000);                                        // keeps the sign of zero
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

TEST(HalfF32ToF16, NanStaysNanWithItsSign) {
  EXPECT_TRUE(is_f16_nan(f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_f16_nan(f32_to_f16(from_bits(0x7F800001))));  // payload only in bits that f16 drops
  EXPECT_TRUE(is_f16_nan(f32_to_f16(from_bits(0x7FC00000))));
  const uint16_t negative = f32_to_f16(from_bits(0xFF800001));
  EXPECT_TRUE(is_f16_nan(negative));
  EXPECT_EQ(negative & 0x8000, 0x8000);
}

TEST(HalfF32ToF16, PicksTheNearestHalfAcrossTheFloatRange) {
  // A sweep over float bit patterns: the result must be at least as close as both neighbouring halves, and on a tie
  // it must be the even one.
  int checked = 0;
  for (uint64_t bits = 0; bits < 0x477ff000; bits += 2053) {  // every positive float below the overflow boundary
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = from_bits(static_cast<uint32_t>(bits) | sign);
      const uint16_t h = f32_to_f16(f);
      ASSERT_EQ((h & 0x8000) != 0, sign != 0) << std::hex << bits;
      const uint16_t m = h & 0x7fff;
      ASSERT_LE(m, 0x7bff) << std::hex << bits;
      const double x = std::fabs(static_cast<double>(f));
      const double d = std::fabs(f16_reference(m) - x);
      const double below = m > 0 ? f16_reference(static_cast<uint16_t>(m - 1)) : -1.0;
      const double above = m + 1 <= 0x7bff ? f16_reference(static_cast<uint16_t>(m + 1)) : 65536.0;
      ASSERT_LE(d, std::fabs(below - x)) << std::hex << bits;
      ASSERT_LE(d, std::fabs(above - x)) << std::hex << bits;
      if (d == std::fabs(above - x) || d == std::fabs(below - x)) {
        ASSERT_EQ(m & 1, 0) << "tie not resolved to even at " << std::hex << bits;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000000);
}

TEST(HalfBf16, DecodesByShiftingIntoTheHighHalf) {
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xBEC0), -0.375f);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  EXPECT_EQ(bf16_to_f32(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(bf16_to_f32(0x0001), from_bits(0x00010000));
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7FC0)));
}

TEST(HalfBf16, RoundsToNearestEven) {
  // 1 = 0x3F80, next bf16 is 1 + 2^-7 (0x3F81).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);                              // tie → even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);                          // tie → even
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);      // above the tie
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) - std::ldexp(1.0f, -20)), 0x3F80);      // below the tie
  EXPECT_EQ(f32_to_bf16(-(1.0f + 3 * std::ldexp(1.0f, -8))), 0xBF82);
  EXPECT_EQ(f32_to_bf16(3.14159265f), 0x4049);
  EXPECT_EQ(f32_to_bf16(from_bits(0x3FFFFFFF)), 0x4000);  // carries into the exponent
  EXPECT_EQ(f32_to_bf16(from_bits(0x00008000)), 0x0000);  // subnormal tie → even
  EXPECT_EQ(f32_to_bf16(from_bits(0x00018000)), 0x0002);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7F7F7FFF)), 0x7F7F);  // largest value that stays finite
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
}

TEST(HalfBf16, NanStaysNanWithItsSign) {
  for (uint32_t bits : {0x7F800001u, 0x7FC00000u, 0x7FFFFFFFu, 0xFF800001u, 0xFFC00000u}) {
    const uint16_t b = f32_to_bf16(from_bits(bits));
    EXPECT_EQ(b & 0x7F80, 0x7F80) << std::hex << bits;
    EXPECT_NE(b & 0x7F, 0) << std::hex << bits;
    EXPECT_EQ(b & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
  }
}

TEST(HalfBf16, EveryCodeRoundTrips) {
  for (uint32_t code = 0; code <= 0xffff; ++code) {
    const auto b = static_cast<uint16_t>(code);
    const float f = bf16_to_f32(b);
    ASSERT_EQ(std::bit_cast<uint32_t>(f), code << 16);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), b) << std::hex << code;
  }
}

}  // namespace
}  // namespace mlx2gguf
