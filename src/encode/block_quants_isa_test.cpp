// The vectorized 32-element block quantizers (AVX2 / NEON, whichever this CPU runs) against the scalar ones, which
// row_encoder_test.cpp and encoder_quality_test.cpp prove byte-identical to ggml on x86-64; likewise the K-quant
// encoders with each instruction set's search kernels against the portable ones (k_quants_test.cpp compares
// those with ggml). Needs no oracle, so it also runs on arm64.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "encode/block_quants.h"
#include "encode/k_quants.h"
#include "gguf/gguf_types.h"

namespace mlx2gguf {
namespace {

using QuantizeRow = void (*)(const float*, int64_t, uint8_t*, Isa);

struct Encoder {
  const char* name;
  GgmlType type;
  QuantizeRow quantize;
};

const Encoder kEncoders[] = {
    {"Q8_0", GgmlType::Q8_0, quantize_row_q8_0}, {"Q4_0", GgmlType::Q4_0, quantize_row_q4_0},
    {"Q4_1", GgmlType::Q4_1, quantize_row_q4_1}, {"Q5_0", GgmlType::Q5_0, quantize_row_q5_0},
    {"Q5_1", GgmlType::Q5_1, quantize_row_q5_1},
};

constexpr int64_t kRowLength = 256;

std::vector<float> gaussian(size_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Student-t (2 degrees of freedom) with rare huge outliers: blocks dominated by one value.
std::vector<float> heavy_tailed(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(2.0f);
  std::uniform_int_distribution<int> rare(0, 99);
  std::vector<float> v(n);
  for (float& x : v) x = rare(rng) == 0 ? dist(rng) * 1000.0f : dist(rng) * 0.01f;
  return v;
}

// What MLX 4-bit weights dequantize to: 16 levels per group of 64 (scale and bias shared), many exact repeats.
std::vector<float> mlx_like(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> code(0, 15);
  std::normal_distribution<float> scale(0.003f, 0.001f);
  std::vector<float> v(n);
  for (size_t g = 0; g < n / 64; ++g) {
    const float s = scale(rng), bias = -7.5f * s;
    for (size_t j = 0; j < 64; ++j) v[64 * g + j] = static_cast<float>(code(rng)) * s + bias;
  }
  return v;
}

// One block per edge case: zeros of both signs in every order, constants, ties of magnitude with both signs,
// values at rounding ties, subnormals, magnitudes near fp16 overflow, single outliers, NaN and infinities.
std::vector<float> edge_cases() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::vector<float>> blocks;
  blocks.push_back(std::vector<float>(32, 0.0f));
  blocks.push_back(std::vector<float>(32, -0.0f));
  std::vector<float> mixed_zero(32, 0.0f);
  for (int j = 0; j < 32; j += 3) mixed_zero[j] = -0.0f;
  blocks.push_back(mixed_zero);
  std::vector<float> positive_then_zero(32, 0.5f);
  positive_then_zero[7] = -0.0f;
  positive_then_zero[9] = 0.0f;
  blocks.push_back(positive_then_zero);
  std::vector<float> negative_then_zero(32, -0.5f);
  negative_then_zero[4] = 0.0f;
  negative_then_zero[5] = -0.0f;
  blocks.push_back(negative_then_zero);
  blocks.push_back(std::vector<float>(32, 3.25f));
  blocks.push_back(std::vector<float>(32, -1e-3f));
  std::vector<float> magnitude_tie(32, 0.1f);
  magnitude_tie[3] = -2.0f;
  magnitude_tie[20] = 2.0f;
  blocks.push_back(magnitude_tie);
  std::vector<float> magnitude_tie_reversed = magnitude_tie;
  std::swap(magnitude_tie_reversed[3], magnitude_tie_reversed[20]);
  blocks.push_back(magnitude_tie_reversed);
  std::vector<float> ties(32);
  for (int j = 0; j < 32; ++j) ties[j] = (j % 2 ? -1.0f : 1.0f) * (static_cast<float>(j) + 0.5f);
  ties[0] = 127.0f;
  blocks.push_back(ties);
  std::vector<float> subnormal(32);
  for (int j = 0; j < 32; ++j) subnormal[j] = std::ldexp(static_cast<float>(j - 16), -140);
  blocks.push_back(subnormal);
  std::vector<float> huge(32);
  for (int j = 0; j < 32; ++j) huge[j] = (j % 2 ? -1.0f : 1.0f) * (65000.0f + 100.0f * static_cast<float>(j));
  blocks.push_back(huge);
  std::vector<float> outlier(32, 1e-4f);
  outlier[31] = -50.0f;
  blocks.push_back(outlier);
  for (float special : {nan, inf, -inf}) {
    std::vector<float> block = gaussian(32, 7, 1.0f);
    block[11] = special;
    blocks.push_back(block);
  }
  std::vector<float> values;
  for (const auto& block : blocks) values.insert(values.end(), block.begin(), block.end());
  while (values.size() % kRowLength) values.push_back(0.25f);
  return values;
}

std::vector<uint8_t> quantize(const Encoder& encoder, const std::vector<float>& values, Isa isa) {
  const int64_t row_bytes = ggml_row_bytes(encoder.type, kRowLength);
  const int64_t rows = static_cast<int64_t>(values.size()) / kRowLength;
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) encoder.quantize(values.data() + r * kRowLength, kRowLength, out.data() + r * row_bytes, isa);
  return out;
}

TEST(BlockQuantizerIsa, EveryInstructionSetWritesTheScalarBytes) {
  const std::vector<std::pair<std::string, std::vector<float>>> data = {
      {"gaussian", gaussian(64 * kRowLength, 1, 0.02f)},
      {"wide gaussian", gaussian(16 * kRowLength, 2, 3.0f)},
      {"heavy-tailed", heavy_tailed(64 * kRowLength, 3)},
      {"MLX 4-bit", mlx_like(32 * kRowLength, 4)},
      {"edge cases", edge_cases()},
  };
  for (const Encoder& encoder : kEncoders)
    for (const auto& [name, values] : data) {
      const std::vector<uint8_t> scalar = quantize(encoder, values, Isa::Scalar);
      for (Isa isa : supported_isas()) {
        const std::vector<uint8_t> got = quantize(encoder, values, isa);
        ASSERT_EQ(got.size(), scalar.size());
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_EQ(got[i], scalar[i]) << encoder.name << " " << isa_name(isa) << " on " << name << ": byte " << i
                                       << " (block " << i / static_cast<size_t>(ggml_type_info(encoder.type).type_size)
                                       << ")";
      }
    }
}

const Encoder kKQuantEncoders[] = {
    {"Q2_K", GgmlType::Q2_K, quantize_row_q2_k}, {"Q3_K", GgmlType::Q3_K, quantize_row_q3_k},
    {"Q4_K", GgmlType::Q4_K, quantize_row_q4_k}, {"Q5_K", GgmlType::Q5_K, quantize_row_q5_k},
    {"Q6_K", GgmlType::Q6_K, quantize_row_q6_k},
};

std::vector<uint8_t> quantize_rows(const Encoder& encoder, const std::vector<float>& values, int64_t row_length,
                                   Isa isa) {
  const int64_t row_bytes = ggml_row_bytes(encoder.type, row_length);
  const int64_t rows = static_cast<int64_t>(values.size()) / row_length;
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r)
    encoder.quantize(values.data() + r * row_length, row_length, out.data() + r * row_bytes, isa);
  return out;
}

// Values repeated (cyclically) to a whole number of rows.
std::vector<float> fill_rows(const std::vector<float>& values, int64_t row_length) {
  const size_t rows = (values.size() + static_cast<size_t>(row_length) - 1) / static_cast<size_t>(row_length);
  std::vector<float> out(rows * static_cast<size_t>(row_length));
  for (size_t i = 0; i < out.size(); ++i) out[i] = values[i % values.size()];
  return out;
}

// The wide kernels search several super-blocks at once and a row's last, partial group in a padded copy: rows of
// one, three and seventeen super-blocks cover whole groups, partial groups and the chunking of long rows.
TEST(BlockQuantizerIsa, EveryInstructionSetWritesTheScalarKQuantBytes) {
  std::vector<float> zero_super_block(256, 0.0f);
  const std::vector<float> after = gaussian(256, 5, 0.02f);
  zero_super_block.insert(zero_super_block.end(), after.begin(), after.end());
  std::vector<float> negative_zero_sub_blocks = gaussian(512, 6, 1.0f);
  for (int j = 0; j < 16; ++j) negative_zero_sub_blocks[32 * 3 + j] = -0.0f;  // one 16-element sub-block
  for (int j = 0; j < 32; ++j) negative_zero_sub_blocks[256 + 64 + j] = -0.0f;  // one 32-element sub-block
  const std::vector<std::pair<std::string, std::vector<float>>> data = {
      {"gaussian", gaussian(48 * kRowLength, 11, 0.02f)},
      {"wide gaussian", gaussian(16 * kRowLength, 12, 3.0f)},
      {"heavy-tailed", heavy_tailed(48 * kRowLength, 13)},
      {"MLX 4-bit", mlx_like(32 * kRowLength, 14)},
      {"edge cases", edge_cases()},
      {"zero super-block", zero_super_block},
      {"zero sub-blocks", negative_zero_sub_blocks},
  };
  for (const int64_t row_length : {int64_t{256}, int64_t{768}, int64_t{17 * 256}})
    for (const Encoder& encoder : kKQuantEncoders)
      for (const auto& [name, raw] : data) {
        const std::vector<float> values = fill_rows(raw, row_length);
        const std::vector<uint8_t> scalar = quantize_rows(encoder, values, row_length, Isa::Scalar);
        for (Isa isa : supported_isas()) {
          const std::vector<uint8_t> got = quantize_rows(encoder, values, row_length, isa);
          ASSERT_EQ(got.size(), scalar.size());
          for (size_t i = 0; i < got.size(); ++i)
            ASSERT_EQ(got[i], scalar[i])
                << encoder.name << " " << isa_name(isa) << " on " << name << " (rows of " << row_length
                << "): byte " << i << " (super-block "
                << i / static_cast<size_t>(ggml_type_info(encoder.type).type_size) << ")";
        }
      }
}

}  // namespace
}  // namespace mlx2gguf
