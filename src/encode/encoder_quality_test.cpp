// Every quantized type we write, against ggml's own quantizer on the same data: our round-trip RMSE is never
// worse than ggml's, and ggml's dequantizer reads our blocks as exactly the values our decoder says.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "read/dequant.h"
#include "encode/row_encoder.h"
#include "read/mlx_quantize.h"
#include "llama_oracle.h"

namespace mlx2gguf {
namespace {

constexpr int64_t kRows = 32;
constexpr int64_t kRowLength = 512;

struct DataSet {
  std::string name;
  std::vector<float> values;  // kRows × kRowLength
};

std::vector<float> gaussian(uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(kRows * kRowLength);
  for (float& x : v) x = dist(rng);
  return v;
}

// Student-t (3 degrees of freedom) with rare ×20 outliers: blocks dominated by one value.
std::vector<float> heavy_tailed(uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(3.0f);
  std::uniform_int_distribution<int> rare(0, 199);
  std::vector<float> v(kRows * kRowLength);
  for (float& x : v) x = dist(rng) * 0.02f * (rare(rng) == 0 ? 20.0f : 1.0f);
  return v;
}

// What an MLX 4-bit g64 checkpoint dequantizes to: 16 levels per group, bf16 scales and biases.
std::vector<float> mlx_dequantized(uint32_t seed) {
  const std::vector<float> w = gaussian(seed, 0.03f);
  const QuantizedRows q = quantize_affine(w.data(), kRows, kRowLength, 4, 64, DType::BF16);
  const QuantSpec spec{QuantMode::Affine, 4, 64};
  std::vector<float> v(w.size());
  const int64_t row_words = kRowLength * 4 / 32, groups = kRowLength / 64;
  for (int64_t r = 0; r < kRows; ++r)
    dequantize_row(spec, reinterpret_cast<const uint8_t*>(q.packed.data() + r * row_words),
                   q.scales.data() + r * groups * 2, q.biases.data() + r * groups * 2, DType::BF16, kRowLength,
                   v.data() + r * kRowLength);
  return v;
}

// Rows that stress the edge paths: zeros, constants, tiny magnitudes, one huge outlier, one sign only.
std::vector<float> edge_cases() {
  std::vector<float> v = gaussian(7, 1.0f);
  auto row = [&](int64_t r) { return v.begin() + r * kRowLength; };
  std::fill(row(0), row(1), 0.0f);
  std::fill(row(1), row(2), 0.37f);
  std::fill(row(2), row(3), -1.25f);
  for (auto it = row(3); it != row(4); ++it) *it *= 1e-20f;
  row(4)[17] = 3e4f;
  for (auto it = row(5); it != row(6); ++it) *it = -std::fabs(*it);
  for (auto it = row(6); it != row(7); ++it) *it = std::fabs(*it) + 5.0f;
  for (int64_t i = 0; i < kRowLength; i += 2) row(7)[i] = 0.0f;  // half the elements exactly zero
  return v;
}

const std::vector<DataSet>& data_sets() {
  static const std::vector<DataSet> sets = {
      {"gaussian", gaussian(1, 1.0f)},
      {"heavy-tailed", heavy_tailed(2)},
      {"mlx-4bit-dequantized", mlx_dequantized(3)},
      {"edge-cases", edge_cases()},
  };
  return sets;
}

double rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sum / static_cast<double>(a.size()));
}

class EncoderQuality : public testing::TestWithParam<GgmlType> {};

TEST_P(EncoderQuality, RoundTripErrorIsAtMostGgmls) {
  const GgmlType type = GetParam();
  const int code = static_cast<int>(type);
  for (const DataSet& set : data_sets()) {
    std::vector<uint8_t> ours(static_cast<size_t>(kRows * ggml_row_bytes(type, kRowLength)));
    encode_rows(type, set.values.data(), kRows, kRowLength, ours.data());
    const std::vector<uint8_t> theirs = oracle::ggml_quantize(code, set.values.data(), kRows, kRowLength);
    const double our_rmse = rmse(set.values, oracle::ggml_dequantize(code, ours.data(), kRows * kRowLength));
    const double their_rmse = rmse(set.values, oracle::ggml_dequantize(code, theirs.data(), kRows * kRowLength));
    const double ratio = their_rmse > 0 ? our_rmse / their_rmse : (our_rmse > 0 ? INFINITY : 1.0);
    std::printf("  %-6s %-22s rmse ours %.6e  ggml %.6e  ratio %.4f  bytes %s\n", ggml_type_info(type).name,
                set.name.c_str(), our_rmse, their_rmse, ratio, ours == theirs ? "identical" : "differ");
    EXPECT_LE(ratio, 1.0) << ggml_type_info(type).name << " on " << set.name;
  }
}

TEST_P(EncoderQuality, GgmlDecodesOurBlocksToOurDecodedValues) {
  const GgmlType type = GetParam();
  for (const DataSet& set : data_sets()) {
    std::vector<uint8_t> bytes(static_cast<size_t>(kRows * ggml_row_bytes(type, kRowLength)));
    encode_rows(type, set.values.data(), kRows, kRowLength, bytes.data());
    std::vector<float> ours(set.values.size());
    decode_rows(type, bytes.data(), kRows, kRowLength, ours.data());
    const std::vector<float> ggml = oracle::ggml_dequantize(static_cast<int>(type), bytes.data(), kRows * kRowLength);
    ASSERT_EQ(ggml.size(), ours.size());
    for (size_t i = 0; i < ours.size(); ++i)
      ASSERT_EQ(std::memcmp(&ours[i], &ggml[i], 4), 0)
          << ggml_type_info(type).name << " on " << set.name << ": element " << i << " ours " << ours[i] << " ggml "
          << ggml[i];
  }
}

std::string type_name(const testing::TestParamInfo<GgmlType>& info) { return ggml_type_info(info.param).name; }

INSTANTIATE_TEST_SUITE_P(AllQuantizedTypes, EncoderQuality,
                         testing::Values(GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                         GgmlType::Q8_0, GgmlType::MXFP4, GgmlType::NVFP4, GgmlType::Q2_K,
                                         GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K),
                         type_name);

}  // namespace
}  // namespace mlx2gguf
