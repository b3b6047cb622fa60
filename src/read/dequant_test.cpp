#include "read/dequant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "read/test_support.h"

namespace mlx2gguf {

// Readable names for parameterized-test output (internal linkage, found by argument-dependent lookup).
static void PrintTo(DType dtype, std::ostream* os) { *os << dtype_name(dtype); }

namespace {

using test_support::f32_bytes;
using test_support::pack_bits;
using test_support::u16_bytes;
using test_support::u32_bytes;

using test_support::HalfValue;
using test_support::kHalfCount;
using test_support::kHalfValues;

// Float32 values that no half format holds exactly.
constexpr float kF32Scales[] = {0.0123456f, -0.0071234f, 1.2345678e-3f, -3.3333333f, 0.1f, -1.0e-4f, 7.77f};
constexpr float kF32Biases[] = {-0.25f, 0.3141593f, -1.7182818f, 0.0f, 12.5f, -0.0009765f, 2.0e-3f};

// Scales/biases of `groups` groups in the given storage type, and their exact values.
struct GroupParams {
  std::vector<uint8_t> scale_bytes, bias_bytes;
  std::vector<double> scales, biases;
};

GroupParams make_group_params(DType dtype, int64_t groups) {
  GroupParams p;
  std::vector<uint16_t> scale_codes, bias_codes;
  std::vector<float> scale_f32, bias_f32;
  for (int64_t g = 0; g < groups; ++g) {
    if (dtype == DType::F32) {
      const float s = kF32Scales[g % 7], b = kF32Biases[(g + 3) % 7];
      scale_f32.push_back(s);
      bias_f32.push_back(b);
      p.scales.push_back(s);
      p.biases.push_back(b);
    } else {
      const HalfValue& s = kHalfValues[(3 * g + 1) % kHalfCount];
      const HalfValue& b = kHalfValues[(5 * g + 7) % kHalfCount];
      scale_codes.push_back(dtype == DType::F16 ? s.f16 : s.bf16);
      bias_codes.push_back(dtype == DType::F16 ? b.f16 : b.bf16);
      p.scales.push_back(s.value);
      p.biases.push_back(b.value);
    }
  }
  if (dtype == DType::F32) {
    p.scale_bytes = f32_bytes(scale_f32);
    p.bias_bytes = f32_bytes(bias_f32);
  } else {
    p.scale_bytes = u16_bytes(scale_codes);
    p.bias_bytes = u16_bytes(bias_codes);
  }
  return p;
}

// Codes that visit every value of the width, including 0 and the maximum, in an irregular order.
std::vector<uint32_t> make_codes(int bits, int64_t count) {
  const uint32_t levels = 1u << bits;
  std::vector<uint32_t> codes;
  for (int64_t i = 0; i < count; ++i) codes.push_back(static_cast<uint32_t>((i * 37 + i / 5 + 11) % levels));
  codes[0] = levels - 1;
  codes[static_cast<size_t>(count - 1)] = 0;
  return codes;
}

// ---- affine: every width, group size and scale type against an independent reference --------------------------

using AffineCase = std::tuple<int, int, DType>;

class AffineDequant : public ::testing::TestWithParam<AffineCase> {};

TEST_P(AffineDequant, MatchesScaleTimesCodePlusBias) {
  const auto [bits, group_size, dtype] = GetParam();
  const int64_t groups = 3;
  const int64_t length = groups * group_size;
  const auto codes = make_codes(bits, length);
  const auto packed = pack_bits(codes, bits);
  ASSERT_EQ(packed.size(), static_cast<size_t>(length * bits / 8));
  const GroupParams params = make_group_params(dtype, groups);

  std::vector<float> out(static_cast<size_t>(length), std::numeric_limits<float>::quiet_NaN());
  dequantize_row({QuantMode::Affine, bits, group_size}, packed.data(), params.scale_bytes.data(),
                 params.bias_bytes.data(), dtype, length, out.data());

  for (int64_t i = 0; i < length; ++i) {
    const int64_t g = i / group_size;
    const double expected = params.scales[g] * codes[i] + params.biases[g];
    // float32 evaluation rounds relative to the terms, not to their (possibly cancelling) sum.
    const double magnitude = std::abs(params.scales[g] * codes[i]) + std::abs(params.biases[g]);
    ASSERT_NEAR(out[i], expected, 4e-7 * magnitude)
        << "element " << i << " code " << codes[i] << " group " << g;
  }
}

TEST_P(AffineDequant, UnpackCodeReturnsEveryPackedCode) {
  const auto [bits, group_size, dtype] = GetParam();
  (void)dtype;
  const auto codes = make_codes(bits, 2 * group_size);
  const auto packed = pack_bits(codes, bits);
  for (size_t i = 0; i < codes.size(); ++i) ASSERT_EQ(unpack_code(packed.data(), static_cast<int64_t>(i), bits), codes[i]) << i;
}

std::string affine_case_name(const ::testing::TestParamInfo<AffineCase>& info) {
  const auto [bits, group_size, dtype] = info.param;
  return "Bits" + std::to_string(bits) + "Group" + std::to_string(group_size) + dtype_name(dtype);
}

INSTANTIATE_TEST_SUITE_P(AllWidthsGroupsAndScaleTypes, AffineDequant,
                         ::testing::Combine(::testing::Values(2, 3, 4, 5, 6, 8), ::testing::Values(32, 64, 128),
                                            ::testing::Values(DType::BF16, DType::F16, DType::F32)),
                         affine_case_name);

// ---- affine: literal, hand-worked bit layouts ----------------------------------------------------------------

std::vector<uint32_t> unpack_all(const std::vector<uint8_t>& stream, int bits, int64_t count) {
  std::vector<uint32_t> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(unpack_code(stream.data(), i, bits));
  return out;
}

TEST(AffineBitLayout, TwoBitCodesFillEachByteFromTheLowBits) {
  // 0xE4 = 0b11'10'01'00 → codes 0, 1, 2, 3.
  const auto stream = u32_bytes({0x000000E4});
  EXPECT_EQ(unpack_all(stream, 2, 5), (std::vector<uint32_t>{0, 1, 2, 3, 0}));
}

TEST(AffineBitLayout, FourBitFirstValueIsTheLowNibble) {
  const auto stream = u32_bytes({0x76543210, 0xFEDCBA98});
  EXPECT_EQ(unpack_all(stream, 4, 16), (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST(AffineBitLayout, EightBitValuesAreTheBytesOfEachWord) {
  const auto stream = u32_bytes({0x04030201, 0xFF0000AB});
  EXPECT_EQ(unpack_all(stream, 8, 8), (std::vector<uint32_t>{1, 2, 3, 4, 0xAB, 0, 0, 0xFF}));
}

TEST(AffineBitLayout, ThreeBitValueTenStraddlesTheFirstWordBoundary) {
  // Value 10 occupies stream bits 30..32: its bits 0 and 1 are word 0 bits 30 and 31, its bit 2 is word 1 bit 0.
  // Code 6 = 0b110: word 0 bit 30 = 0, bit 31 = 1; word 1 bit 0 = 1.
  const auto stream = u32_bytes({0x80000000, 0x00000001, 0x00000000});
  auto expected = std::vector<uint32_t>(32, 0);
  expected[10] = 6;
  EXPECT_EQ(unpack_all(stream, 3, 32), expected);
  // Code 5 = 0b101: word 0 bit 30 = 1, bit 31 = 0, word 1 bit 0 = 1.
  EXPECT_EQ(unpack_code(u32_bytes({0x40000000, 0x00000001}).data(), 10, 3), 5u);

  // Dequantized with scale 0.5 and bias -1 (BF16): element 10 = 6 * 0.5 - 1 = 2, all others -1.
  std::vector<float> out(32);
  const auto scale = u16_bytes({0x3F00}), bias = u16_bytes({0xBF80});
  dequantize_row({QuantMode::Affine, 3, 32}, stream.data(), scale.data(), bias.data(), DType::BF16, 32, out.data());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], i == 10 ? 2.0f : -1.0f) << i;
}

TEST(AffineBitLayout, ThreeBitByteFormulasHoldForAllValuesOfThreeBytes) {
  // v0 = b0&7, v1 = (b0>>3)&7, v2 = (b0>>6)|((b1&1)<<2), v3 = (b1>>1)&7, v4 = (b1>>4)&7, v5 = (b1>>7)|((b2&3)<<1),
  // v6 = (b2>>2)&7, v7 = b2>>5.
  const uint8_t b0 = 0b10110101, b1 = 0b01101011, b2 = 0b11001110;
  const std::vector<uint8_t> stream = {b0, b1, b2, 0};
  const std::vector<uint32_t> expected = {
      b0 & 7u, (b0 >> 3) & 7u, (b0 >> 6) | ((b1 & 1u) << 2), (b1 >> 1) & 7u, (b1 >> 4) & 7u, (b1 >> 7) | ((b2 & 3u) << 1),
      (b2 >> 2) & 7u, static_cast<uint32_t>(b2 >> 5)};
  EXPECT_EQ(unpack_all(stream, 3, 8), expected);
}

TEST(AffineBitLayout, FiveBitValueSixStraddlesTheFirstWordBoundary) {
  // Value 6 occupies stream bits 30..34. Code 22 = 0b10110: bits 0,1 (= 0,1) → word 0 bits 30,31; bits 2..4 (= 1,0,1)
  // → word 1 bits 0..2.
  const auto stream = u32_bytes({0x80000000, 0x00000005, 0, 0, 0});
  auto expected = std::vector<uint32_t>(32, 0);
  expected[6] = 22;
  EXPECT_EQ(unpack_all(stream, 5, 32), expected);
}

TEST(AffineBitLayout, SixBitValueFiveStraddlesTheFirstWordBoundary) {
  // Value 5 occupies stream bits 30..35. Code 45 = 0b101101: bits 0,1 (= 1,0) → word 0 bits 30,31; bits 2..5
  // (= 0b1011) → word 1 bits 0..3.
  const auto stream = u32_bytes({0x40000000, 0x0000000B, 0, 0, 0, 0});
  auto expected = std::vector<uint32_t>(32, 0);
  expected[5] = 45;
  EXPECT_EQ(unpack_all(stream, 6, 32), expected);
  // The byte formulas: v0 = b0&63, v1 = (b0>>6)|((b1&15)<<2), v2 = (b1>>4)|((b2&3)<<4), v3 = b2>>2.
  const uint8_t b0 = 0xC7, b1 = 0x5A, b2 = 0x9E;
  EXPECT_EQ(unpack_all({b0, b1, b2, 0}, 6, 4),
            (std::vector<uint32_t>{b0 & 63u, (b0 >> 6) | ((b1 & 15u) << 2), (b1 >> 4) | ((b2 & 3u) << 4),
                                   static_cast<uint32_t>(b2 >> 2)}));
}

TEST(AffineBitLayout, FourBitGroupWithNegativeScaleByHand) {
  // MLX negates the scale when the group's max has the larger magnitude: w = -0.25 * q + 2.
  std::vector<uint32_t> words = {0x76543210, 0xFEDCBA98, 0x76543210, 0xFEDCBA98};
  const auto stream = u32_bytes(words);
  const auto scale = u16_bytes({0xBE80}), bias = u16_bytes({0x4000});  // bf16 -0.25, 2.0
  std::vector<float> out(32);
  dequantize_row({QuantMode::Affine, 4, 32}, stream.data(), scale.data(), bias.data(), DType::BF16, 32, out.data());
  EXPECT_EQ(out[0], 2.0f);
  EXPECT_EQ(out[1], 1.75f);
  EXPECT_EQ(out[8], 0.0f);
  EXPECT_EQ(out[15], -1.75f);
  EXPECT_EQ(out[16], 2.0f);
  EXPECT_EQ(out[31], -1.75f);
}

TEST(AffineBitLayout, EightBitGroupAsMlxReadsGgufQ8Zero) {
  // Q8_0 as MLX imports it: scale d, bias -128 d, q = int8 ^ 0x80. With d = 0.5 (f16 0x3800): int8 -3 → 0x7D → -1.5.
  std::vector<uint8_t> stream(32, 0x80);  // int8 0
  stream[0] = static_cast<uint8_t>(static_cast<uint8_t>(-3) ^ 0x80);
  stream[31] = static_cast<uint8_t>(127 ^ 0x80);
  const auto scale = u16_bytes({0x3800}), bias = u16_bytes({0xD400});  // 0.5, -64
  std::vector<float> out(32);
  dequantize_row({QuantMode::Affine, 8, 32}, stream.data(), scale.data(), bias.data(), DType::F16, 32, out.data());
  EXPECT_EQ(out[0], -1.5f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[31], 63.5f);
}

// ---- float element and scale formats ------------------------------------------------------------------------

TEST(FpFormats, E2M1DecodesTheOcpTable) {
  const float expected[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  for (uint8_t code = 0; code < 16; ++code) {
    EXPECT_EQ(e2m1_to_f32(code), expected[code]) << int(code);
    EXPECT_EQ(std::signbit(e2m1_to_f32(code)), code >= 8) << int(code);
  }
}

TEST(FpFormats, E8M0IsAPowerOfTwoWithZeroMeaningTwoToMinus127) {
  EXPECT_EQ(std::bit_cast<uint32_t>(e8m0_to_f32(0)), 0x00400000u);  // 2^-127, a float32 subnormal
  EXPECT_EQ(e8m0_to_f32(1), std::ldexp(1.0f, -126));
  EXPECT_EQ(e8m0_to_f32(126), 0.5f);
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(128), 2.0f);
  EXPECT_EQ(e8m0_to_f32(137), 1024.0f);
  EXPECT_EQ(e8m0_to_f32(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isinf(e8m0_to_f32(255)));
}

TEST(FpFormats, E4M3HandValues) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_FALSE(std::signbit(e4m3_to_f32(0x00)));
  EXPECT_EQ(e4m3_to_f32(0x80), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_f32(0x80)));
  // Subnormals: mantissa * 2^-9.
  EXPECT_EQ(e4m3_to_f32(0x01), 0.001953125f);
  EXPECT_EQ(e4m3_to_f32(0x04), 0.0078125f);
  EXPECT_EQ(e4m3_to_f32(0x07), 0.013671875f);
  // Smallest normal 2^-6, then 1.0, 1.5, 2.0, 3.75.
  EXPECT_EQ(e4m3_to_f32(0x08), 0.015625f);
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x3C), 1.5f);
  EXPECT_EQ(e4m3_to_f32(0x40), 2.0f);
  EXPECT_EQ(e4m3_to_f32(0x47), 3.75f);
  EXPECT_EQ(e4m3_to_f32(0x30), 0.5f);
  // Largest finite values: exponent field 15 is a normal binade in the "fn" variant.
  EXPECT_EQ(e4m3_to_f32(0x78), 256.0f);
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(e4m3_to_f32(0xB8), -1.0f);
  // The only NaN encodings, no infinities.
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xFF)));
}

TEST(FpFormats, E4M3IsMonotonicAndSignSymmetricOverAllCodes) {
  float previous = -1.0f;
  int finite = 0;
  for (int code = 0; code < 0x7F; ++code) {
    const float v = e4m3_to_f32(static_cast<uint8_t>(code));
    ASSERT_TRUE(std::isfinite(v)) << code;
    ASSERT_GT(v, previous) << code;
    ASSERT_EQ(e4m3_to_f32(static_cast<uint8_t>(code | 0x80)), -v) << code;
    // Successive codes differ by one mantissa step: 2^-9 in the subnormal and first normal binade.
    if (code > 0 && code <= 0x10) {
      ASSERT_EQ(v - previous, 0.001953125f) << code;
    }
    previous = v;
    ++finite;
  }
  EXPECT_EQ(finite, 127);
  EXPECT_EQ(previous, 448.0f);
}

// ---- fp-mode rows --------------------------------------------------------------------------------------------

// Packs 4-bit codes literally as the format describes: byte k = element 2k (low nibble) | element 2k+1 (high nibble).
std::vector<uint8_t> nibble_pairs(const std::vector<uint8_t>& codes) {
  std::vector<uint8_t> out;
  for (size_t k = 0; 2 * k < codes.size(); ++k)
    out.push_back(static_cast<uint8_t>(codes[2 * k] | (codes[2 * k + 1] << 4)));
  return out;
}

TEST(FpModeDequant, NibbleOrderIsLowNibbleFirst) {
  std::vector<uint8_t> codes(32, 0);
  codes[0] = 1;   // 0.5
  codes[1] = 2;   // 1.0
  codes[30] = 15; // -6
  codes[31] = 7;  // 6
  const auto packed = nibble_pairs(codes);
  ASSERT_EQ(packed[0], 0x21);
  ASSERT_EQ(packed[15], 0x7F);
  const uint8_t scale = 127;  // 1.0
  std::vector<float> out(32);
  dequantize_row({QuantMode::MXFP4, 4, 32}, packed.data(), &scale, nullptr, DType::U8, 32, out.data());
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[30], -6.0f);
  EXPECT_EQ(out[31], 6.0f);
}

TEST(FpModeDequant, Mxfp4MultipliesTheCodeByItsGroupPowerOfTwo) {
  const float table[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  std::vector<uint8_t> codes;
  for (int i = 0; i < 96; ++i) codes.push_back(static_cast<uint8_t>((i * 5 + i / 16) % 16));
  const auto packed = nibble_pairs(codes);
  const std::vector<uint8_t> scales = {130, 0, 120};  // 8, 2^-127, 2^-7
  const double factors[3] = {8.0, std::ldexp(1.0, -127), std::ldexp(1.0, -7)};
  std::vector<float> out(96);
  dequantize_row({QuantMode::MXFP4, 4, 32}, packed.data(), scales.data(), nullptr, DType::U8, 96, out.data());
  for (int i = 0; i < 96; ++i) {
    const double expected = table[codes[i]] * factors[i / 32];
    ASSERT_EQ(static_cast<double>(out[i]), expected) << i;
  }
}

TEST(FpModeDequant, Nvfp4UsesOneE4M3ScalePerSixteen) {
  std::vector<uint8_t> codes;
  for (int i = 0; i < 48; ++i) codes.push_back(static_cast<uint8_t>((i * 3 + 1) % 16));
  const auto packed = nibble_pairs(codes);
  // 0x30 = 0.5, 0x01 = 2^-9 (subnormal), 0x7E = 448.
  const std::vector<uint8_t> scales = {0x30, 0x01, 0x7E};
  const double factors[3] = {0.5, std::ldexp(1.0, -9), 448.0};
  const float table[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  std::vector<float> out(48);
  dequantize_row({QuantMode::NVFP4, 4, 16}, packed.data(), scales.data(), nullptr, DType::U8, 48, out.data());
  for (int i = 0; i < 48; ++i) ASSERT_EQ(static_cast<double>(out[i]), table[codes[i]] * factors[i / 16]) << i;
  // Spot checks by hand: element 0 = code 1 (0.5) * 0.5; element 16 = code 1 (0.5) * 2^-9; element 47 = code 14 (-4) * 448.
  EXPECT_EQ(out[0], 0.25f);
  EXPECT_EQ(out[16], 0.0009765625f);
  EXPECT_EQ(out[47], -1792.0f);
}

TEST(FpModeDequant, Mxfp8ElementsAreE4M3BytesInOrder) {
  // Element 4k+j is byte j of word k, i.e. byte i is element i.
  std::vector<uint8_t> packed(64, 0);
  packed[0] = 0x38;   // 1.0
  packed[1] = 0x7E;   // 448
  packed[2] = 0x01;   // 2^-9
  packed[3] = 0xC4;   // -3.0
  packed[33] = 0x40;  // 2.0 in the second group
  const std::vector<uint8_t> scales = {129, 125};  // 4, 0.25
  std::vector<float> out(64);
  dequantize_row({QuantMode::MXFP8, 8, 32}, packed.data(), scales.data(), nullptr, DType::U8, 64, out.data());
  EXPECT_EQ(out[0], 4.0f);
  EXPECT_EQ(out[1], 1792.0f);
  EXPECT_EQ(out[2], 0.0078125f);
  EXPECT_EQ(out[3], -12.0f);
  EXPECT_EQ(out[4], 0.0f);
  EXPECT_EQ(out[32], 0.0f);
  EXPECT_EQ(out[33], 0.5f);
}

// ---- plain float loads ---------------------------------------------------------------------------------------

TEST(LoadFloats, DecodesEachStorageTypeFromUnalignedBytes) {
  std::vector<uint8_t> buffer(1, 0xAA);  // shift everything by one byte
  const auto f32 = f32_bytes({-1.5f, 3.25e-8f});
  buffer.insert(buffer.end(), f32.begin(), f32.end());
  std::vector<float> out(2);
  load_floats(buffer.data() + 1, DType::F32, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{-1.5f, 3.25e-8f}));

  std::vector<uint8_t> halves(1, 0xAA);
  const auto f16 = u16_bytes({0x3C00, 0xB600, 0x0001, 0x7C00});
  halves.insert(halves.end(), f16.begin(), f16.end());
  std::vector<float> h(4);
  load_floats(halves.data() + 1, DType::F16, 4, h.data());
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -0.375f);
  EXPECT_EQ(h[2], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(h[3]));

  const auto bf16 = u16_bytes({0x3F80, 0xBEC0, 0x4049});
  std::vector<float> b(3);
  load_floats(bf16.data(), DType::BF16, 3, b.data());
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -0.375f);
  EXPECT_EQ(b[2], 3.140625f);
  EXPECT_EQ(load_float(bf16.data(), DType::BF16, 2), 3.140625f);
}

}  // namespace
}  // namespace mlx2gguf
