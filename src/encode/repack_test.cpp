// Lossless repacking of MLX-quantized rows: ggml's own dequantizer must read every repacked block as exactly the
// value MLX's dequantization gives, for every mode, width, group size and scale type, also with groups reordered.
#include "encode/repack.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "read/mlx_quantize.h"
#include "llama_oracle.h"
#include "util/half.h"

namespace mlx2gguf {
namespace {

// An MLX-quantized [rows, cols] tensor held in memory, with the SourceTensor that reads it.
struct QuantizedFixture {
  QuantizedRows q;
  StoredTensor weight, scales, biases;
  SourceTensor tensor;
};

std::vector<float> gaussian_rounded_to(DType dtype, int64_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) {
    x = dist(rng);
    if (dtype == DType::BF16) x = bf16_to_f32(f32_to_bf16(x));
    if (dtype == DType::F16) x = f16_to_f32(f32_to_f16(x));
  }
  return v;
}

std::unique_ptr<QuantizedFixture> make_fixture(const QuantSpec& spec, DType scale_dtype, int64_t rows, int64_t cols,
                                               float stddev = 0.05f, uint32_t seed = 1) {
  auto f = std::make_unique<QuantizedFixture>();
  const std::vector<float> w = gaussian_rounded_to(scale_dtype, rows * cols, seed, stddev);
  f->q = spec.mode == QuantMode::Affine
             ? quantize_affine(w.data(), rows, cols, spec.bits, spec.group_size, scale_dtype)
             : quantize_fp(w.data(), rows, cols, spec.mode);
  const DType stored_scale_dtype = spec.mode == QuantMode::Affine ? scale_dtype : DType::U8;
  const int64_t groups = cols / spec.group_size;
  f->weight = {"m.weight", DType::U32, {rows, cols * spec.bits / 32},
               {reinterpret_cast<const uint8_t*>(f->q.packed.data()), f->q.packed.size() * 4}, {}};
  f->scales = {"m.scales", stored_scale_dtype, {rows, groups}, {f->q.scales.data(), f->q.scales.size()}, {}};
  f->biases = {"m.biases", stored_scale_dtype, {rows, groups}, {f->q.biases.data(), f->q.biases.size()}, {}};
  f->tensor = SourceTensor::quantized(f->weight, f->scales, spec.mode == QuantMode::Affine ? &f->biases : nullptr, spec);
  return f;
}

std::vector<uint8_t> repack_all(const SourceTensor& tensor, GgmlType target, const std::vector<int64_t>& groups = {},
                                Isa isa = best_isa()) {
  const int64_t row_bytes = ggml_row_bytes(target, tensor.row_length());
  std::vector<uint8_t> out(static_cast<size_t>(tensor.row_count() * row_bytes));
  for (int64_t r = 0; r < tensor.row_count(); ++r) repack_row(tensor, r, target, groups, out.data() + r * row_bytes, isa);
  return out;
}

std::vector<float> mlx_values(const SourceTensor& tensor) {
  std::vector<float> v(static_cast<size_t>(tensor.element_count()));
  tensor.read_rows(0, tensor.row_count(), v.data());
  return v;
}

// Bit for bit, except that the FP4 code "-0" reads as -0.0 in MLX and +0.0 in ggml (its value table holds 0 for
// both zero codes); the two zeros compute identically.
void expect_bitwise_equal(const std::vector<float>& expected, const std::vector<float>& got, const std::string& what) {
  ASSERT_EQ(expected.size(), got.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i)
    ASSERT_TRUE(std::memcmp(&expected[i], &got[i], 4) == 0 || (expected[i] == 0.0f && got[i] == 0.0f))
        << what << ": element " << i << " MLX " << expected[i] << " ggml " << got[i];
}

struct RepackCase {
  QuantSpec spec;
  DType scale_dtype;
  GgmlType target;
};

class LosslessRepack : public testing::TestWithParam<RepackCase> {};

TEST_P(LosslessRepack, GgmlDequantizesRepackedRowsToMlxValuesBitForBit) {
  const RepackCase& c = GetParam();
  const int64_t rows = 24, cols = 512;
  const auto f = make_fixture(c.spec, c.scale_dtype, rows, cols);
  const LosslessTarget target = lossless_target(c.spec, cols);
  ASSERT_TRUE(target.type.has_value()) << target.reason;
  EXPECT_EQ(*target.type, c.target);
  EXPECT_EQ(repack_obstacle(f->tensor, c.target), std::nullopt);

  // Every version of the kernels this CPU runs (scalar, AVX2, AVX-512 / NEON).
  for (Isa isa : supported_isas()) {
    const std::vector<uint8_t> bytes = repack_all(f->tensor, c.target, {}, isa);
    expect_bitwise_equal(mlx_values(f->tensor),
                         oracle::ggml_dequantize(static_cast<int>(c.target), bytes.data(), rows * cols),
                         fmt::format("repacked ({})", isa_name(isa)));
  }
}

TEST_P(LosslessRepack, ReorderedGroupsMatchReorderedMlxColumns) {
  const RepackCase& c = GetParam();
  const int64_t rows = 8, cols = 512, group = c.spec.group_size, n_groups = cols / group;
  const auto f = make_fixture(c.spec, c.scale_dtype, rows, cols, 0.05f, 2);
  // Reverse the groups, as a head reorder of whole groups would.
  std::vector<int64_t> column_map(static_cast<size_t>(cols));
  for (int64_t c2 = 0; c2 < cols; ++c2) column_map[c2] = (n_groups - 1 - c2 / group) * group + c2 % group;
  const auto groups = column_map_as_groups(column_map, group);
  ASSERT_TRUE(groups.has_value());

  const std::vector<float> mlx = mlx_values(f->tensor);
  std::vector<float> expected(mlx.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c2 = 0; c2 < cols; ++c2) expected[r * cols + c2] = mlx[r * cols + column_map[c2]];
  for (Isa isa : supported_isas()) {
    const std::vector<uint8_t> bytes = repack_all(f->tensor, c.target, *groups, isa);
    expect_bitwise_equal(expected, oracle::ggml_dequantize(static_cast<int>(c.target), bytes.data(), rows * cols),
                         fmt::format("reordered ({})", isa_name(isa)));
  }
}

std::string case_name(const testing::TestParamInfo<RepackCase>& info) {
  const RepackCase& c = info.param;
  return fmt::format("{}{}g{}_{}", quant_mode_name(c.spec.mode), c.spec.bits, c.spec.group_size,
                     c.spec.mode == QuantMode::Affine ? dtype_name(c.scale_dtype) : "u8");
}

INSTANTIATE_TEST_SUITE_P(
    EveryExactMode, LosslessRepack,
    testing::Values(RepackCase{{QuantMode::Affine, 4, 64}, DType::BF16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 4, 32}, DType::F16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 4, 128}, DType::BF16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 3, 64}, DType::BF16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 2, 64}, DType::F16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 2, 32}, DType::BF16, GgmlType::Q4_1},
                    RepackCase{{QuantMode::Affine, 5, 64}, DType::BF16, GgmlType::Q5_1},
                    RepackCase{{QuantMode::Affine, 5, 32}, DType::F16, GgmlType::Q5_1},
                    RepackCase{{QuantMode::MXFP4, 4, 32}, DType::BF16, GgmlType::MXFP4},
                    RepackCase{{QuantMode::NVFP4, 4, 16}, DType::BF16, GgmlType::NVFP4}),
    case_name);

TEST(LosslessTarget, WidthsAndModesWithoutAnExactTypeSayWhy) {
  EXPECT_EQ(lossless_target({QuantMode::Affine, 6, 64}, 512).type, std::nullopt);
  EXPECT_EQ(lossless_target({QuantMode::Affine, 8, 64}, 512).reason, "affine 8-bit has no exact GGUF type");
  EXPECT_EQ(lossless_target({QuantMode::MXFP8, 8, 32}, 512).reason, "mxfp8 has no exact GGUF type");
  EXPECT_EQ(lossless_target({QuantMode::NVFP4, 4, 16}, 48).type, std::nullopt);  // not whole blocks of 64
  EXPECT_EQ(lossless_target({QuantMode::NVFP4, 4, 16}, 64).type, GgmlType::NVFP4);
}

TEST(RepackObstacle, ScalesTooSmallForFp16AreFound) {
  // bf16 scales of ~1e-7 are fp16 subnormals with fewer mantissa bits: not exact, so the tensor must not repack.
  const auto f = make_fixture({QuantMode::Affine, 4, 64}, DType::BF16, 4, 256, 1e-6f);
  const auto obstacle = repack_obstacle(f->tensor, GgmlType::Q4_1);
  ASSERT_TRUE(obstacle.has_value());
  EXPECT_NE(obstacle->find("'m.weight'"), std::string::npos) << *obstacle;
  EXPECT_NE(obstacle->find("not exact in fp16"), std::string::npos) << *obstacle;
}

TEST(RepackObstacle, Float32ScalesWithMoreThanFp16PrecisionAreFound) {
  const auto f = make_fixture({QuantMode::Affine, 4, 64}, DType::F32, 4, 256);
  const auto obstacle = repack_obstacle(f->tensor, GgmlType::Q4_1);
  ASSERT_TRUE(obstacle.has_value());
  EXPECT_NE(obstacle->find("row 0 group 0"), std::string::npos) << *obstacle;
}

TEST(RepackObstacle, NegativeNvfp4ScalesAreFound) {
  auto f = make_fixture({QuantMode::NVFP4, 4, 16}, DType::BF16, 2, 64);
  f->q.scales[5] |= 0x80;  // an E4M3 sign bit ggml's unsigned scale cannot hold
  const auto obstacle = repack_obstacle(f->tensor, GgmlType::NVFP4);
  ASSERT_TRUE(obstacle.has_value());
  EXPECT_NE(obstacle->find("row 1 group 1"), std::string::npos) << *obstacle;
}

TEST(ColumnMapAsGroups, OnlyWholeAlignedGroupsQualify) {
  EXPECT_EQ(column_map_as_groups({2, 3, 0, 1}, 2), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(column_map_as_groups({1, 2, 3, 0}, 2), std::nullopt);  // group straddles
  EXPECT_EQ(column_map_as_groups({3, 2, 1, 0}, 2), std::nullopt);  // reversed inside a group
  EXPECT_EQ(column_map_as_groups({0, 1, 2}, 2), std::nullopt);     // not whole groups
}

}  // namespace
}  // namespace mlx2gguf
