// Float rows → GGUF tensor bytes: 16-bit rounding on hand-picked values, and byte identity with ggml's own
// conversions and Q8_0 quantizer.
#include "encode/row_encoder.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "encode/block_quants.h"
#include "llama_oracle.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

std::vector<uint16_t> encode_16(GgmlType type, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 2);
  encode_rows(type, values.data(), 1, static_cast<int64_t>(values.size()), bytes.data());
  std::vector<uint16_t> out(values.size());
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(EncodeRowsF16, RoundsToNearestWithTiesToEven) {
  const float ulp = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
  struct Case {
    float value;
    uint16_t f16;
  };
  const Case cases[] = {
      {1.0f, 0x3C00},
      {-2.0f, 0xC000},
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f + ulp / 2, 0x3C00},                            // tie between 0x3C00 (even) and 0x3C01
      {1.0f + 3 * ulp / 2, 0x3C02},                        // tie between 0x3C01 and 0x3C02 (even)
      {1.0f + ulp / 2 + std::ldexp(1.0f, -20), 0x3C01},    // just above the tie
      {1.0f + ulp / 2 - std::ldexp(1.0f, -20), 0x3C00},    // just below the tie
      {65504.0f, 0x7BFF},                                  // largest half
      {65519.0f, 0x7BFF},                                  // below the tie with 65536
      {65520.0f, 0x7C00},                                  // tie: rounds to even, which is infinity
      {1e6f, 0x7C00},
      {-std::numeric_limits<float>::infinity(), 0xFC00},
      {std::ldexp(1.0f, -14), 0x0400},                     // smallest normal
      {std::ldexp(1.0f, -24), 0x0001},                     // smallest subnormal
      {std::ldexp(1.0f, -25), 0x0000},                     // tie between 0 (even) and 1 unit
      {std::ldexp(3.0f, -25), 0x0002},                     // tie between 1 and 2 units (even)
      {std::ldexp(1.0f, -25) + std::ldexp(1.0f, -40), 0x0001},
      {-std::ldexp(5.0f, -25), 0x8002},                    // tie between 2 (even) and 3 units
  };
  std::vector<float> values;
  for (const Case& c : cases) values.push_back(c.value);
  const std::vector<uint16_t> got = encode_16(GgmlType::F16, values);
  for (size_t i = 0; i < std::size(cases); ++i)
    EXPECT_EQ(got[i], cases[i].f16) << "value " << cases[i].value << " (case " << i << ")";
}

TEST(EncodeRowsF16, NanStaysNan) {
  const std::vector<uint16_t> got = encode_16(GgmlType::F16, {std::numeric_limits<float>::quiet_NaN()});
  EXPECT_EQ(got[0] & 0x7C00, 0x7C00);
  EXPECT_NE(got[0] & 0x03FF, 0);
}

TEST(EncodeRowsBF16, RoundsToNearestWithTiesToEven) {
  struct Case {
    float value;
    uint16_t bf16;
  };
  const Case cases[] = {
      {1.0f, 0x3F80},
      {-0.5f, 0xBF00},
      {from_bits(0x3F808000), 0x3F80},  // tie between 0x3F80 (even) and 0x3F81
      {from_bits(0x3F818000), 0x3F82},  // tie between 0x3F81 and 0x3F82 (even)
      {from_bits(0x3F808001), 0x3F81},  // just above the tie
      {from_bits(0x3F807FFF), 0x3F80},  // just below the tie
      {from_bits(0xBF818000), 0xBF82},  // sign does not change the rounding
      {from_bits(0x7F7FFFFF), 0x7F80},  // largest float rounds up to infinity
      {std::numeric_limits<float>::infinity(), 0x7F80},
      {from_bits(0x00000001), 0x0000},  // tiny subnormal → zero
      {from_bits(0x00018000), 0x0002},  // subnormal tie → even
  };
  std::vector<float> values;
  for (const Case& c : cases) values.push_back(c.value);
  const std::vector<uint16_t> got = encode_16(GgmlType::BF16, values);
  for (size_t i = 0; i < std::size(cases); ++i)
    EXPECT_EQ(got[i], cases[i].bf16) << "value " << cases[i].value << " (case " << i << ")";
}

TEST(EncodeRowsBF16, NanStaysQuietNan) {
  const std::vector<uint16_t> got = encode_16(GgmlType::BF16, {from_bits(0x7F800001)});  // signalling NaN payload
  EXPECT_EQ(got[0] & 0x7F80, 0x7F80);
  EXPECT_NE(got[0] & 0x007F, 0) << "a NaN must not turn into infinity";
}

TEST(EncodeRowsF32, CopiesValuesExactly) {
  const std::vector<float> values = {1.5f, -0.0f, from_bits(0x00000001), 3.4e38f};
  std::vector<uint8_t> bytes(values.size() * 4);
  encode_rows(GgmlType::F32, values.data(), 2, 2, bytes.data());
  EXPECT_EQ(std::memcmp(bytes.data(), values.data(), bytes.size()), 0);
}

// ---- against ggml ---------------------------------------------------------------------------------------------

std::vector<float> normal_values(size_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Student-t with 2 degrees of freedom, plus rare huge outliers: blocks dominated by one value.
std::vector<float> heavy_tailed_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(2.0f);
  std::uniform_int_distribution<int> rare(0, 99);
  std::vector<float> v(n);
  for (float& x : v) x = rare(rng) == 0 ? dist(rng) * 1000.0f : dist(rng) * 0.01f;
  return v;
}

std::vector<uint8_t> encode(GgmlType type, const std::vector<float>& values, int64_t rows, int64_t row_length) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * ggml_row_bytes(type, row_length)));
  encode_rows(type, values.data(), rows, row_length, out.data());
  return out;
}

void expect_matches_ggml(GgmlType type, const std::vector<float>& values, int64_t rows, int64_t row_length) {
  const std::vector<uint8_t> ours = encode(type, values, rows, row_length);
  const std::vector<uint8_t> ggml = oracle::ggml_quantize(static_cast<int>(type), values.data(), rows, row_length);
  ASSERT_EQ(ours.size(), ggml.size());
  for (size_t i = 0; i < ours.size(); ++i)
    ASSERT_EQ(ours[i], ggml[i]) << ggml_type_info(type).name << ": first difference at byte " << i;
}

TEST(EncodeRowsQ8_0, ByteIdenticalToGgmlOnNormalData) {
  const int64_t rows = 16, row_length = 256;
  expect_matches_ggml(GgmlType::Q8_0, normal_values(rows * row_length, 1, 0.02f), rows, row_length);
  expect_matches_ggml(GgmlType::Q8_0, normal_values(rows * row_length, 2, 3.0f), rows, row_length);
}

TEST(EncodeRowsQ8_0, ByteIdenticalToGgmlOnHeavyTailedData) {
  const int64_t rows = 32, row_length = 128;
  expect_matches_ggml(GgmlType::Q8_0, heavy_tailed_values(rows * row_length, 3), rows, row_length);
}

TEST(EncodeRowsQ8_0, ByteIdenticalToGgmlOnValuesAtRoundingTies) {
  // amax 127 gives scale 1, so x / d lands exactly on .5 ties, positive and negative.
  std::vector<float> v(64);
  for (int i = 0; i < 64; ++i) v[i] = (i % 2 ? -1.0f : 1.0f) * (static_cast<float>(i % 31) + 0.5f);
  v[0] = 127.0f;
  v[32] = -127.0f;
  expect_matches_ggml(GgmlType::Q8_0, v, 2, 32);
}

// FP4 blocks (MXFP4: a power-of-two scale per 32; NVFP4: an E4M3 scale per 16) against ggml's quantizer.
TEST(EncodeRowsFp4, ByteIdenticalToGgmlOnNormalAndHeavyTailedData) {
  const int64_t rows = 16, row_length = 256;
  for (GgmlType type : {GgmlType::MXFP4, GgmlType::NVFP4}) {
    expect_matches_ggml(type, normal_values(rows * row_length, 4, 0.02f), rows, row_length);
    expect_matches_ggml(type, normal_values(rows * row_length, 5, 3.0f), rows, row_length);
    expect_matches_ggml(type, heavy_tailed_values(rows * row_length, 6), rows, row_length);
  }
}

TEST(EncodeRowsFp4, ByteIdenticalToGgmlOnValuesHalfwayBetweenFp4Values) {
  // With the block maximum at 6 (MXFP4's scale is then 1 and the FP4 values are 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6),
  // every midpoint, just above and below it, zero and -0; both signs. Ties go to the first of the equally near
  // values in ggml's table order.
  const float midpoints[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  std::vector<float> v;
  for (float m : midpoints)
    for (float x : {m, std::nextafter(m, 0.0f), std::nextafter(m, 10.0f)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  v.push_back(0.0f);
  v.push_back(-0.0f);
  v.push_back(1e-30f);
  v.push_back(-1e-30f);
  while (v.size() % 32 != 31) v.push_back(0.5f);
  v.push_back(6.0f);
  std::vector<float> blocks;
  for (float scale : {1.0f, 0.125f, 1024.0f, -3.0f})  // the same block at other powers of two, and at a non-power
    for (float x : v) blocks.push_back(x * scale);
  while (blocks.size() % 64 != 0) blocks.push_back(0.0f);
  expect_matches_ggml(GgmlType::MXFP4, blocks, 1, static_cast<int64_t>(blocks.size()));
  expect_matches_ggml(GgmlType::NVFP4, blocks, 1, static_cast<int64_t>(blocks.size()));
}

TEST(EncodeRowsQ8_0, AllZeroBlocksAreZeroScaleAndZeroCodes) {
  const std::vector<float> zeros(3 * 64, 0.0f);
  const std::vector<uint8_t> ours = encode(GgmlType::Q8_0, zeros, 3, 64);
  ASSERT_EQ(ours.size(), 3u * 2 * 34);
  for (uint8_t b : ours) EXPECT_EQ(b, 0);
  expect_matches_ggml(GgmlType::Q8_0, zeros, 3, 64);
}

TEST(EncodeRowsQ8_0, BlockIsScaleThenCodesRoundedHalfAwayFromZero) {
  // amax 127 gives d = 1 exactly, so the codes are the values rounded, with ties away from zero.
  std::vector<float> v(32, 0.0f);
  v[0] = 127.0f;
  v[1] = -63.5f;
  v[2] = 0.5f;
  v[3] = -0.5f;
  v[4] = 2.5f;  // round-half-even would give 2
  v[5] = 1.49f;
  const std::vector<uint8_t> block = encode(GgmlType::Q8_0, v, 1, 32);
  ASSERT_EQ(block.size(), 34u);
  uint16_t d;
  std::memcpy(&d, block.data(), 2);
  EXPECT_EQ(d, 0x3C00);  // 1.0 in half precision
  const int expected[] = {127, -64, 1, -1, 3, 1, 0};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(static_cast<int8_t>(block[2 + i]), expected[i]) << "code " << i;
}

// Each version of the 32-element block quantizers this CPU runs (scalar, AVX2 / NEON), against ggml directly.
TEST(EncodeRowsBlockTypes, EveryInstructionSetIsByteIdenticalToGgml) {
  struct Encoder {
    GgmlType type;
    void (*quantize)(const float*, int64_t, uint8_t*, Isa);
  };
  const Encoder encoders[] = {{GgmlType::Q8_0, quantize_row_q8_0}, {GgmlType::Q4_0, quantize_row_q4_0},
                              {GgmlType::Q4_1, quantize_row_q4_1}, {GgmlType::Q5_0, quantize_row_q5_0},
                              {GgmlType::Q5_1, quantize_row_q5_1}};
  const int64_t rows = 32, row_length = 256;
  std::vector<float> edge(static_cast<size_t>(rows * row_length), 0.0f);  // zeros of both signs, ties, outliers
  for (size_t i = 0; i < edge.size(); ++i) {
    const size_t block = i / 32;
    if (block % 4 == 1) edge[i] = i % 3 ? 0.0f : -0.0f;
    if (block % 4 == 2) edge[i] = (i % 2 ? -1.0f : 1.0f) * (static_cast<float>(i % 31) + 0.5f);
    if (block % 4 == 3) edge[i] = i % 32 == 17 ? -3.0f : 1e-3f * static_cast<float>(i % 5);
  }
  const std::vector<std::vector<float>> data = {normal_values(edge.size(), 11, 0.02f), heavy_tailed_values(edge.size(), 12), edge};
  for (const Encoder& encoder : encoders)
    for (size_t d = 0; d < data.size(); ++d) {
      const std::vector<uint8_t> ggml = oracle::ggml_quantize(static_cast<int>(encoder.type), data[d].data(), rows, row_length);
      for (Isa isa : supported_isas()) {
        std::vector<uint8_t> ours(ggml.size());
        const int64_t row_bytes = ggml_row_bytes(encoder.type, row_length);
        for (int64_t r = 0; r < rows; ++r)
          encoder.quantize(data[d].data() + r * row_length, row_length, ours.data() + r * row_bytes, isa);
        EXPECT_EQ(ours, ggml) << ggml_type_info(encoder.type).name << " " << isa_name(isa) << " on data set " << d;
      }
    }
}

TEST(EncodeRows16Bit, ByteIdenticalToGgmlConversions) {
  std::vector<float> values = normal_values(64 * 32, 4, 1.0f);
  // Add edge cases: subnormal halves, overflow, exact ties.
  values[0] = std::ldexp(3.0f, -25);
  values[1] = 65520.0f;
  values[2] = from_bits(0x3F818000);
  values[3] = std::ldexp(1.0f, -30);
  values[4] = -70000.0f;
  for (size_t i = 5; i < 200; ++i) values[i] = std::ldexp(values[i], -18);  // many f16 subnormals
  expect_matches_ggml(GgmlType::F16, values, 64, 32);
  expect_matches_ggml(GgmlType::BF16, values, 64, 32);
}

TEST(EncodeRows, OnlyTheImplementedTypesAreEncodable) {
  EXPECT_TRUE(can_encode(GgmlType::F32));
  EXPECT_TRUE(can_encode(GgmlType::F16));
  EXPECT_TRUE(can_encode(GgmlType::BF16));
  EXPECT_TRUE(can_encode(GgmlType::Q8_0));
  EXPECT_FALSE(can_encode(GgmlType::IQ2_XXS));
  std::vector<float> values(256, 1.0f);
  std::vector<uint8_t> out(256);
  EXPECT_THROW(encode_rows(GgmlType::IQ2_XXS, values.data(), 1, 256, out.data()), Error);
}

}  // namespace
}  // namespace mlx2gguf
