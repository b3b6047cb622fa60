// Importance-weighted encoders against ggml's real quantizer given the same importance weights (the oracle
// library's ggml_quantize_chunk): the same bytes for every type, on Gaussian, heavy-tailed and edge-case rows
// with importance vectors from smooth to extremely uneven (zeros included).
#include "encode/weighted_quants.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "encode/row_encoder.h"
#include "gguf/gguf_types.h"
#include "oracle/llama_oracle.h"

namespace mlx2gguf {
namespace {

constexpr GgmlType kWeightedTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                                       GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

struct Rows {
  std::string name;
  int64_t rows, row_length;
  std::vector<float> values;
  std::vector<float> importance;  // row_length values
};

// Importance as llama-imatrix measures it (a mean of squared activations): log-normal, so a few columns weigh
// hundreds of times more than most, with one column in fifty never activated (zero).
std::vector<float> importance_vector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> lognormal(0.0f, 1.5f);
  std::uniform_int_distribution<int> one_in_fifty(0, 49);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = one_in_fifty(rng) == 0 ? 0.0f : lognormal(rng);
  return w;
}

Rows gaussian() {
  Rows r{"gaussian", 32, 1024, {}, importance_vector(1024, 7)};
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t i = 0; i < r.rows * r.row_length; ++i) r.values.push_back(normal(rng));
  return r;
}

Rows heavy_tailed() {
  Rows r{"heavy-tailed", 32, 512, {}, importance_vector(512, 8)};
  std::mt19937 rng(12);
  std::student_t_distribution<float> student(3.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t i = 0; i < r.rows * r.row_length; ++i) {
    float v = 0.01f * student(rng);
    if (uniform(rng) < 0.002f) v *= 20.0f;
    r.values.push_back(v);
  }
  return r;
}

// Rows with all-zero, constant, all-positive and all-negative stretches, and importance that is zero over whole
// blocks: the searches' degenerate branches.
Rows edge_cases() {
  Rows r{"edge-cases", 8, 512, {}, importance_vector(512, 9)};
  for (int64_t i = 0; i < 64; ++i) r.importance[static_cast<size_t>(i)] = 0.0f;  // two blocks never activated
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t row = 0; row < r.rows; ++row) {
    for (int64_t c = 0; c < r.row_length; ++c) {
      float v = normal(rng);
      switch (row) {
        case 0: v = 0.0f; break;
        case 1: v = c < 256 ? 0.0f : v; break;
        case 2: v = 0.5f; break;
        case 3: v = std::fabs(v) + 1.0f; break;
        case 4: v = -std::fabs(v) - 1e-3f; break;
        case 5: v = c % 16 == 0 ? 100.0f : 1e-4f * v; break;
        case 6: v *= 1e-6f; break;
        default: break;
      }
      r.values.push_back(v);
    }
  }
  return r;
}

class WeightedEncoder : public testing::TestWithParam<GgmlType> {};

TEST_P(WeightedEncoder, WritesTheBytesGgmlWritesWithTheSameImportance) {
  const GgmlType type = GetParam();
  ASSERT_TRUE(uses_importance(type));
  for (const Rows& data : {gaussian(), heavy_tailed(), edge_cases()}) {
    const int64_t row_bytes = ggml_row_bytes(type, data.row_length);
    std::vector<uint8_t> ours(static_cast<size_t>(data.rows * row_bytes));
    encode_rows_weighted(type, data.values.data(), data.rows, data.row_length, data.importance.data(), ours.data());
    const auto theirs = oracle::ggml_quantize(static_cast<int>(type), data.values.data(), data.rows, data.row_length,
                                              data.importance.data());
    ASSERT_EQ(ours.size(), theirs.size());
    int64_t differing_rows = 0;
    for (int64_t r = 0; r < data.rows; ++r)
      differing_rows += std::equal(ours.begin() + r * row_bytes, ours.begin() + (r + 1) * row_bytes,
                                   theirs.begin() + r * row_bytes)
                            ? 0
                            : 1;
    EXPECT_EQ(differing_rows, 0) << ggml_type_info(type).name << " on " << data.name;

    // The weights must matter: the plain encoder gives other bytes on ordinary data.
    if (data.name == "gaussian") {
      std::vector<uint8_t> plain(ours.size());
      encode_rows(type, data.values.data(), data.rows, data.row_length, plain.data());
      EXPECT_NE(plain, ours) << ggml_type_info(type).name;
    }
  }
}

std::string type_name(const testing::TestParamInfo<GgmlType>& info) { return ggml_type_info(info.param).name; }

INSTANTIATE_TEST_SUITE_P(AllTypes, WeightedEncoder, testing::ValuesIn(kWeightedTypes), type_name);

// Types whose rounding does not depend on weights are encoded as without them, as ggml does.
TEST(WeightedEncoder, TypesWithoutAWeightedSearchIgnoreTheImportance) {
  const Rows data = gaussian();
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::MXFP4, GgmlType::F16, GgmlType::BF16}) {
    EXPECT_FALSE(uses_importance(type));
    std::vector<uint8_t> weighted(static_cast<size_t>(data.rows * ggml_row_bytes(type, data.row_length)));
    std::vector<uint8_t> plain(weighted.size());
    encode_rows_weighted(type, data.values.data(), data.rows, data.row_length, data.importance.data(), weighted.data());
    encode_rows(type, data.values.data(), data.rows, data.row_length, plain.data());
    EXPECT_EQ(weighted, plain) << ggml_type_info(type).name;
    EXPECT_EQ(weighted, oracle::ggml_quantize(static_cast<int>(type), data.values.data(), data.rows, data.row_length,
                                              data.importance.data()))
        << ggml_type_info(type).name;
  }
}

}  // namespace
}  // namespace mlx2gguf
