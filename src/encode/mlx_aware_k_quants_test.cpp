// The MLX-aware K-quant encoding against llama.cpp's own quantizer (ggml_quantize_chunk) on MLX-dequantized data:
// ggml decodes our blocks, and their error against the MLX values is at most 0.7× ggml's own for Q4_K and Q5_K on
// 2/3/4/5-bit sources, at most 0.75× for Q3_K (and on every super-block at most ggml's).
#include "encode/mlx_aware_k_quants.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "llama_oracle.h"
#include "read/dequant.h"
#include "read/mlx_quantize.h"

namespace mlx2gguf {
namespace {

constexpr int64_t kRows = 32;
constexpr int64_t kRowLength = 1024;

// What an MLX affine checkpoint dequantizes to, from weights drawn by `draw`.
template <typename Draw>
std::vector<float> mlx_values(const QuantSpec& spec, DType scale_dtype, uint32_t seed, Draw draw) {
  std::mt19937 rng(seed);
  std::vector<float> w(kRows * kRowLength);
  for (float& x : w) x = scale_dtype == DType::BF16 ? bf16_to_f32(f32_to_bf16(draw(rng))) : f16_to_f32(f32_to_f16(draw(rng)));
  const QuantizedRows q = quantize_affine(w.data(), kRows, kRowLength, spec.bits, spec.group_size, scale_dtype);
  std::vector<float> v(w.size());
  const int64_t row_words = kRowLength * spec.bits / 32, groups = kRowLength / spec.group_size;
  for (int64_t r = 0; r < kRows; ++r)
    dequantize_row(spec, reinterpret_cast<const uint8_t*>(q.packed.data() + r * row_words), q.scales.data() + r * groups * 2,
                   q.biases.data() + r * groups * 2, scale_dtype, kRowLength, v.data() + r * kRowLength);
  return v;
}

std::vector<float> gaussian_mlx(const QuantSpec& spec, DType scale_dtype, uint32_t seed) {
  std::normal_distribution<float> dist(0.0f, 0.03f);
  return mlx_values(spec, scale_dtype, seed, [&](std::mt19937& rng) { return dist(rng); });
}

// Student-t weights with rows of very different magnitude: sub-block scales spread over a wide range.
std::vector<float> heavy_tailed_mlx(const QuantSpec& spec, DType scale_dtype, uint32_t seed) {
  std::student_t_distribution<float> dist(3.0f);
  std::uniform_real_distribution<float> magnitude(-3.0f, 0.0f);
  float row_scale = 0.02f;
  int64_t i = 0;
  return mlx_values(spec, scale_dtype, seed, [&](std::mt19937& rng) {
    if (i++ % 64 == 0) row_scale = 0.02f * std::pow(10.0f, magnitude(rng) / 3);
    return dist(rng) * row_scale;
  });
}

double rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sum / static_cast<double>(a.size()));
}

struct Case {
  GgmlType type;
  QuantSpec spec;
  DType scale_dtype;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return fmt::format("{}_from_{}bit_g{}_{}", ggml_type_info(c.type).name, c.spec.bits, c.spec.group_size,
                     c.scale_dtype == DType::BF16 ? "bf16" : "f16");
}

class MlxAwareKQuant : public testing::TestWithParam<Case> {};

TEST_P(MlxAwareKQuant, ErrorAgainstTheMlxValuesIsAtMost70PercentOfGgmlsForQ4KAndQ5K) {
  const Case& c = GetParam();
  ASSERT_TRUE(has_mlx_aware_encoding(c.type, c.spec));
  const int code = static_cast<int>(c.type);
  for (const auto& [name, values] : {std::pair{"gaussian", gaussian_mlx(c.spec, c.scale_dtype, 11)},
                                     std::pair{"heavy-tailed", heavy_tailed_mlx(c.spec, c.scale_dtype, 12)}}) {
    std::vector<uint8_t> ours(static_cast<size_t>(kRows * ggml_row_bytes(c.type, kRowLength)));
    encode_rows_mlx_aware(c.type, c.spec, values.data(), kRows, kRowLength, ours.data());
    const std::vector<uint8_t> theirs = oracle::ggml_quantize(code, values.data(), kRows, kRowLength);
    const std::vector<float> our_values = oracle::ggml_dequantize(code, ours.data(), kRows * kRowLength);
    const std::vector<float> their_values = oracle::ggml_dequantize(code, theirs.data(), kRows * kRowLength);
    const double ratio = rmse(our_values, values) / rmse(their_values, values);
    std::printf("[ MLX-AWARE ] %-4s from affine %d-bit g%d %-4s %-12s rmse ours %.4e  ggml %.4e  ratio %.4f\n",
                ggml_type_info(c.type).name, c.spec.bits, c.spec.group_size, c.scale_dtype == DType::BF16 ? "bf16" : "f16",
                name, rmse(our_values, values), rmse(their_values, values), ratio);
    // Q3_K has no minimum: sub-blocks whose codes do not fit -4..3 around zero stay inexact (on 3-bit g32
    // heavy-tailed data they are 1 in 8 sub-blocks and nearly all of the error left), so it is held to 0.75
    // (measured 0.03-0.70; the worst, 0.7002, on that data).
    EXPECT_LE(ratio, c.type == GgmlType::Q3_K ? 0.75 : 0.7) << name;
    // Never worse than ggml on any super-block.
    for (int64_t b = 0; b < kRows * kRowLength / 256; ++b) {
      const auto slice = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + b * 256, v.begin() + (b + 1) * 256); };
      ASSERT_LE(rmse(slice(our_values), slice(values)), rmse(slice(their_values), slice(values))) << name << " block " << b;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q5_K})
    for (int bits : {2, 3, 4})
      for (int group : {32, 64, 128}) all.push_back({type, {QuantMode::Affine, bits, group}, DType::BF16});
  for (int bits : {2, 3}) all.push_back({GgmlType::Q3_K, {QuantMode::Affine, bits, 64}, DType::BF16});
  all.push_back({GgmlType::Q3_K, {QuantMode::Affine, 3, 32}, DType::BF16});
  all.push_back({GgmlType::Q3_K, {QuantMode::Affine, 3, 128}, DType::F16});
  all.push_back({GgmlType::Q5_K, {QuantMode::Affine, 5, 64}, DType::BF16});
  all.push_back({GgmlType::Q4_K, {QuantMode::Affine, 4, 64}, DType::F16});
  all.push_back({GgmlType::Q5_K, {QuantMode::Affine, 3, 64}, DType::F16});
  return all;
}

INSTANTIATE_TEST_SUITE_P(MlxSources, MlxAwareKQuant, testing::ValuesIn(cases()), case_name);

// Values that are no MLX lattice (plain Gaussian floats) fall back to ggml's encoding block by block: never worse.
TEST(MlxAwareKQuant, ValuesOffAnyLatticeAreNoWorseThanGgmls) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(kRows * kRowLength);
  for (float& v : values) v = dist(rng);
  for (GgmlType type : {GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K}) {
    const int code = static_cast<int>(type);
    std::vector<uint8_t> ours(static_cast<size_t>(kRows * ggml_row_bytes(type, kRowLength)));
    encode_rows_mlx_aware(type, {QuantMode::Affine, 3, 64}, values.data(), kRows, kRowLength, ours.data());
    const auto theirs = oracle::ggml_quantize(code, values.data(), kRows, kRowLength);
    EXPECT_LE(rmse(oracle::ggml_dequantize(code, ours.data(), kRows * kRowLength), values),
              rmse(oracle::ggml_dequantize(code, theirs.data(), kRows * kRowLength), values));
  }
}

}  // namespace
}  // namespace mlx2gguf
