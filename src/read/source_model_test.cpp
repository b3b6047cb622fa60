#include "read/source_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using test_support::TempDir;
using test_support::TensorBytes;
using test_support::f32_bytes;
using test_support::kHalfCount;
using test_support::kHalfValues;
using test_support::pack_bits;
using test_support::throws_with;
using test_support::u16_bytes;
using test_support::write_json;
using test_support::write_safetensors;

// A quantized module written the way MLX stores it, with the logical values computed independently.
struct Quantized {
  TensorBytes weight, scales;
  std::optional<TensorBytes> biases;
  std::vector<double> expected;  // row-major logical values
  std::vector<double> magnitude;  // |scale * code| + |bias| per value: float32 rounding is relative to this
  std::vector<TensorBytes> all() const {
    std::vector<TensorBytes> out = {weight, scales};
    if (biases) out.push_back(*biases);
    return out;
  }
};

int64_t product(const std::vector<int64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<>());
}

std::vector<int64_t> with_last(std::vector<int64_t> dims, int64_t last) {
  dims.push_back(last);
  return dims;
}

const char* dtype_text(DType dtype) { return dtype == DType::F32 ? "F32" : dtype == DType::F16 ? "F16" : "BF16"; }

// Affine-quantized `module` of logical shape outer + [in].
Quantized affine_module(const std::string& module, const std::vector<int64_t>& outer, int64_t in, int bits,
                        int group_size, DType dtype, int seed = 0) {
  const int64_t rows = product(outer);
  const int64_t groups = in / group_size;
  Quantized q;
  std::vector<uint8_t> packed, scale_bytes, bias_bytes;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint32_t> codes;
    for (int64_t j = 0; j < in; ++j) codes.push_back(static_cast<uint32_t>((r * 13 + j * 7 + seed) % (1 << bits)));
    const auto row = pack_bits(codes, bits);
    packed.insert(packed.end(), row.begin(), row.end());
    for (int64_t g = 0; g < groups; ++g) {
      double scale, bias;
      if (dtype == DType::F32) {
        scale = static_cast<float>(0.01 * (r + 1) * (g % 2 ? -1.0 : 1.0) + 0.001 * seed);
        bias = static_cast<float>(-0.3 + 0.07 * g - 0.011 * r);
        const auto s = f32_bytes({static_cast<float>(scale)}), b = f32_bytes({static_cast<float>(bias)});
        scale_bytes.insert(scale_bytes.end(), s.begin(), s.end());
        bias_bytes.insert(bias_bytes.end(), b.begin(), b.end());
      } else {
        const auto& s = kHalfValues[(r * 5 + g * 3 + seed) % kHalfCount];
        const auto& b = kHalfValues[(r * 7 + g + 4 + seed) % kHalfCount];
        scale = s.value;
        bias = b.value;
        const auto sb = u16_bytes({dtype == DType::F16 ? s.f16 : s.bf16});
        const auto bb = u16_bytes({dtype == DType::F16 ? b.f16 : b.bf16});
        scale_bytes.insert(scale_bytes.end(), sb.begin(), sb.end());
        bias_bytes.insert(bias_bytes.end(), bb.begin(), bb.end());
      }
      for (int64_t j = g * group_size; j < (g + 1) * group_size; ++j) {
        q.expected.push_back(scale * codes[j] + bias);
        q.magnitude.push_back(std::abs(scale * codes[j]) + std::abs(bias));
      }
    }
  }
  q.weight = {module + ".weight", "U32", with_last(outer, in * bits / 32), packed};
  q.scales = {module + ".scales", dtype_text(dtype), with_last(outer, groups), scale_bytes};
  q.biases = TensorBytes{module + ".biases", dtype_text(dtype), with_last(outer, groups), bias_bytes};
  return q;
}

// mxfp4-quantized `module` [rows, in]: element codes and E8M0 group exponents.
Quantized mxfp4_module(const std::string& module, int64_t rows, int64_t in) {
  static const double table[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  Quantized q;
  std::vector<uint8_t> packed, scales;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint32_t> codes;
    for (int64_t j = 0; j < in; ++j) codes.push_back(static_cast<uint32_t>((r * 3 + j * 5) % 16));
    for (int64_t k = 0; k < in / 2; ++k) packed.push_back(static_cast<uint8_t>(codes[2 * k] | (codes[2 * k + 1] << 4)));
    for (int64_t g = 0; g < in / 32; ++g) {
      const uint8_t e = static_cast<uint8_t>(124 + r + 2 * g);
      scales.push_back(e);
      for (int64_t j = g * 32; j < (g + 1) * 32; ++j) {
        q.expected.push_back(table[codes[j]] * std::ldexp(1.0, e - 127));
        q.magnitude.push_back(std::abs(q.expected.back()));
      }
    }
  }
  q.weight = {module + ".weight", "U32", {rows, in / 8}, packed};
  q.scales = {module + ".scales", "U8", {rows, in / 32}, scales};
  return q;
}

std::vector<float> read_all(const SourceTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.element_count()), std::nanf(""));
  t.read_rows(0, t.row_count(), out.data());
  return out;
}

void expect_values(const std::vector<float>& actual, const Quantized& q, size_t offset = 0) {
  ASSERT_LE(actual.size() + offset, q.expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    ASSERT_NEAR(actual[i], q.expected[offset + i], 4e-7 * q.magnitude[offset + i]) << "element " << offset + i;
}

nlohmann::json config_with(const nlohmann::json& quantization) {
  nlohmann::json config = {{"model_type", "llama"}, {"hidden_size", 64}};
  if (!quantization.is_null()) config["quantization"] = quantization;
  return config;
}

void write_model(const TempDir& dir, const nlohmann::json& config, const std::vector<TensorBytes>& tensors) {
  write_json(dir / "config.json", config);
  write_safetensors(dir / "model.safetensors", tensors);
}

std::vector<TensorBytes> join(std::vector<TensorBytes> a, const std::vector<TensorBytes>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void open_model(const std::filesystem::path& dir) { SourceModel::open(dir); }

const nlohmann::json kAffine4x32 = {{"group_size", 32}, {"bits", 4}};

// ---- logical tensors -----------------------------------------------------------------------------------------

TEST(SourceModel, QuantizedTripletBecomesOneTensorWithTheLogicalShape) {
  TempDir dir;
  const auto q = affine_module("model.layers.0.mlp.up_proj", {3}, 64, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32),
              join(q.all(), {{"model.norm.weight", "F32", {64}, f32_bytes(std::vector<float>(64, 1.0f))}}));
  const auto model = SourceModel::open(dir.path());
  ASSERT_EQ(model.tensors().size(), 2u);  // scales and biases are folded into the weight
  EXPECT_FALSE(model.has("model.layers.0.mlp.up_proj.scales"));
  EXPECT_FALSE(model.has("model.layers.0.mlp.up_proj.biases"));

  const auto& t = model.require("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(t.name(), "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{3, 64}));  // from the stored [3, 64*4/32 = 8]
  EXPECT_EQ(t.weight().shape, (std::vector<int64_t>{3, 8}));
  ASSERT_TRUE(t.quant().has_value());
  EXPECT_EQ(*t.quant(), (QuantSpec{QuantMode::Affine, 4, 32}));
  EXPECT_EQ(t.value_dtype(), DType::BF16);
  EXPECT_EQ(t.row_length(), 64);
  EXPECT_EQ(t.row_count(), 3);
  EXPECT_EQ(t.element_count(), 192);
  EXPECT_EQ(t.groups_per_row(), 2);
  EXPECT_EQ(t.packed_row_bytes(), 32);
  ASSERT_NE(t.scales(), nullptr);
  ASSERT_NE(t.biases(), nullptr);
  EXPECT_EQ(t.scales()->name, "model.layers.0.mlp.up_proj.scales");
  EXPECT_EQ(t.biases()->name, "model.layers.0.mlp.up_proj.biases");
  expect_values(read_all(t), q);

  const auto& norm = model.require("model.norm.weight");
  EXPECT_FALSE(norm.quant().has_value());
  EXPECT_EQ(norm.value_dtype(), DType::F32);
  EXPECT_EQ(norm.groups_per_row(), 0);
  EXPECT_EQ(read_all(norm), std::vector<float>(64, 1.0f));
}

TEST(SourceModel, EveryAffineWidthAndScaleTypeReadsBackItsValues) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
      SCOPED_TRACE(std::to_string(bits) + "-bit " + dtype_name(dtype));
      TempDir dir;
      const auto q = affine_module("lm_head", {4}, 128, bits, 64, dtype, bits);
      write_model(dir, config_with({{"group_size", 64}, {"bits", bits}}), q.all());
      const auto model = SourceModel::open(dir.path());
      const auto& t = model.require("lm_head.weight");
      EXPECT_EQ(t.shape(), (std::vector<int64_t>{4, 128}));
      EXPECT_EQ(t.packed_row_bytes(), 128 * bits / 8);
      expect_values(read_all(t), q);
    }
  }
}

TEST(SourceModel, LayerBiasAndAffineBiasesOnTheSameModuleStayApart) {
  // Qwen2 q_proj: ".bias" is the layer's float bias, ".biases" the zero points of its quantized weight.
  TempDir dir;
  const auto q = affine_module("model.layers.0.self_attn.q_proj", {2}, 32, 8, 32, DType::F16);
  write_model(dir, config_with({{"group_size", 32}, {"bits", 8}}),
              join(q.all(), {{"model.layers.0.self_attn.q_proj.bias", "F32", {2}, f32_bytes({0.5f, -7.0f})}}));
  const auto model = SourceModel::open(dir.path());
  ASSERT_EQ(model.tensors().size(), 2u);
  const auto& bias = model.require("model.layers.0.self_attn.q_proj.bias");
  EXPECT_FALSE(bias.quant().has_value());
  EXPECT_EQ(bias.shape(), std::vector<int64_t>{2});
  EXPECT_EQ(read_all(bias), (std::vector<float>{0.5f, -7.0f}));
  const auto& weight = model.require("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(weight.biases(), nullptr);
  EXPECT_EQ(weight.biases()->name, "model.layers.0.self_attn.q_proj.biases");
  expect_values(read_all(weight), q);
}

TEST(SourceModel, StackedExpertsKeepTheirExpertAxis) {
  TempDir dir;
  const std::string module = "model.layers.0.mlp.switch_mlp.down_proj";
  const auto q = affine_module(module, {2, 3}, 64, 3, 64, DType::BF16);
  EXPECT_EQ(q.weight.shape, (std::vector<int64_t>{2, 3, 6}));
  std::vector<float> bias_values = {1, 2, 3, 4, 5, 6};
  write_model(dir, config_with({{"group_size", 64}, {"bits", 3}}),
              join(q.all(), {{module + ".bias", "F32", {2, 3}, f32_bytes(bias_values)}}));
  const auto model = SourceModel::open(dir.path());
  const auto& t = model.require(module + ".weight");
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 3, 64}));
  EXPECT_EQ(t.row_count(), 6);
  EXPECT_EQ(t.row_length(), 64);
  expect_values(read_all(t), q);
  // Expert 1 alone: rows 3..5.
  std::vector<float> expert1(3 * 64);
  t.read_rows(3, 3, expert1.data());
  expect_values(expert1, q, 3 * 64);
  EXPECT_EQ(read_all(model.require(module + ".bias")), bias_values);
}

TEST(SourceModel, ReadsAMiddleRangeOfRows) {
  TempDir dir;
  const auto q = affine_module("model.embed_tokens", {7}, 128, 5, 32, DType::F32, 3);
  std::vector<float> plain(7 * 4);
  for (size_t i = 0; i < plain.size(); ++i) plain[i] = static_cast<float>(i) * 0.5f - 3.0f;
  write_model(dir, config_with({{"group_size", 32}, {"bits", 5}}),
              join(q.all(), {{"plain", "F32", {7, 4}, f32_bytes(plain)}}));
  const auto model = SourceModel::open(dir.path());
  const auto& t = model.require("model.embed_tokens.weight");
  std::vector<float> rows(3 * 128, std::nanf(""));
  t.read_rows(2, 3, rows.data());
  expect_values(rows, q, 2 * 128);

  std::vector<float> plain_rows(2 * 4);
  model.require("plain").read_rows(5, 2, plain_rows.data());
  EXPECT_EQ(plain_rows, std::vector<float>(plain.begin() + 20, plain.end()));
}

TEST(SourceModel, ReadsHalfPrecisionPlainTensors) {
  TempDir dir;
  write_model(dir, config_with(nullptr),
              {{"a", "BF16", {2, 2}, u16_bytes({0x3F80, 0xBEC0, 0x4040, 0xC000})},
               {"b", "F16", {3}, u16_bytes({0x3C00, 0xB600, 0x3A00})}});
  const auto model = SourceModel::open(dir.path());
  EXPECT_EQ(model.require("a").value_dtype(), DType::BF16);
  EXPECT_EQ(read_all(model.require("a")), (std::vector<float>{1.0f, -0.375f, 3.0f, -2.0f}));
  std::vector<float> second(2);
  model.require("a").read_rows(1, 1, second.data());
  EXPECT_EQ(second, (std::vector<float>{3.0f, -2.0f}));  // row 1 of [[1, -0.375], [3, -2]]
  EXPECT_EQ(read_all(model.require("b")), (std::vector<float>{1.0f, -0.375f, 0.75f}));
}

TEST(SourceModel, PerModuleOverrideAppliesItsOwnBitsAndGroupSize) {
  // Router at 8-bit gs64, everything else at the top-level 4-bit gs32.
  TempDir dir;
  const auto router = affine_module("model.layers.0.mlp.gate", {4}, 64, 8, 64, DType::BF16);
  const auto proj = affine_module("model.layers.0.mlp.up_proj", {2}, 64, 4, 32, DType::BF16, 1);
  nlohmann::json q = kAffine4x32;
  q["model.layers.0.mlp.gate"] = {{"group_size", 64}, {"bits", 8}};
  write_model(dir, config_with(q), join(router.all(), proj.all()));
  const auto model = SourceModel::open(dir.path());
  EXPECT_EQ(*model.require("model.layers.0.mlp.gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));
  EXPECT_EQ(*model.require("model.layers.0.mlp.up_proj.weight").quant(), (QuantSpec{QuantMode::Affine, 4, 32}));
  expect_values(read_all(model.require("model.layers.0.mlp.gate.weight")), router);
  expect_values(read_all(model.require("model.layers.0.mlp.up_proj.weight")), proj);
}

TEST(SourceModel, Mxfp4ModuleWithoutBiases) {
  TempDir dir;
  const auto q = mxfp4_module("model.layers.0.mlp.experts.down_proj", 3, 64);
  write_model(dir, config_with({{"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}}), q.all());
  const auto model = SourceModel::open(dir.path());
  const auto& t = model.require("model.layers.0.mlp.experts.down_proj.weight");
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(*t.quant(), (QuantSpec{QuantMode::MXFP4, 4, 32}));
  EXPECT_EQ(t.value_dtype(), DType::U8);
  EXPECT_EQ(t.biases(), nullptr);
  expect_values(read_all(t), q);
}

TEST(SourceModel, ConfigComesFromTheNestedTextConfig) {
  TempDir dir;
  nlohmann::json config = {{"model_type", "qwen3_5"}, {"text_config", {{"model_type", "qwen3_5_text"}, {"hidden_size", 8}}}};
  write_model(dir, config, {{"x", "F32", {1}, f32_bytes({1.0f})}});
  const auto model = SourceModel::open(dir.path());
  EXPECT_EQ(model.config()["hidden_size"], 8);
  EXPECT_EQ(model.folder().model_type(), "qwen3_5_text");
  EXPECT_FALSE(model.quant_config().any());
  EXPECT_EQ(model.find("y"), nullptr);
  EXPECT_TRUE(throws_with<Error>([&] { model.require("y"); }, {"'y'", "missing"}));
}

TEST(SourceModel, RejectsRowRangeOutsideTheTensor) {
  TempDir dir;
  const auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), q.all());
  const auto model = SourceModel::open(dir.path());
  std::vector<float> out(3 * 32);
  EXPECT_TRUE(throws_with<Error>([&] { model.require("m.weight").read_rows(1, 2, out.data()); },
                                 {"'m.weight'", "[1, 3)", "2 rows"}));
}

TEST(SourceModel, ReshapedViewReadsTheSameValuesUnderAnotherShape) {
  TempDir dir;
  const auto q = affine_module("experts", {2, 3}, 64, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32),
              join(q.all(), {{"conv.weight", "F32", {3, 2, 1}, f32_bytes({1, 2, 3, 4, 5, 6})}}));
  const auto model = SourceModel::open(dir.path());

  const auto conv = model.require("conv.weight").reshaped({3, 2});
  EXPECT_EQ(conv.shape(), (std::vector<int64_t>{3, 2}));
  std::vector<float> row(2);
  conv.read_rows(1, 1, row.data());
  EXPECT_EQ(row, (std::vector<float>{3, 4}));

  const auto flat = model.require("experts.weight").reshaped({6, 64});
  EXPECT_EQ(flat.row_count(), 6);
  std::vector<float> rows(2 * 64);
  flat.read_rows(4, 2, rows.data());
  expect_values(rows, q, 4 * 64);

  EXPECT_TRUE(throws_with<Error>([&] { model.require("conv.weight").reshaped({4, 2}); },
                                 {"'conv.weight'", "cannot be read as [4, 2]"}));
  // Quantization groups run along the last axis, which therefore cannot change.
  EXPECT_TRUE(throws_with<Error>([&] { model.require("experts.weight").reshaped({2, 192}); },
                                 {"'experts.weight'", "[2, 3, 64]", "[2, 192]"}));
}

// ---- inconsistent tensors and config ------------------------------------------------------------------------

TEST(SourceModel, RejectsScalesThatDoNotMatchTheGroupSize) {
  // Stored with group size 32 (2 scales per 64-wide row), but config.json says 64.
  TempDir dir;
  const auto q = affine_module("model.layers.1.self_attn.k_proj", {2}, 64, 4, 32, DType::BF16);
  write_model(dir, config_with({{"group_size", 64}, {"bits", 4}}), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); },
                                 {"'model.layers.1.self_attn.k_proj.weight'", "model.safetensors", "2 scales per row",
                                  "64 weights in groups of 64"}));
}

TEST(SourceModel, RejectsBitsThatDisagreeWithThePackedWidth) {
  // Stored as 3-bit (6 words per 64-wide row) while config.json says 4-bit: 6*32/4 = 48 columns, 2 scales of 32.
  TempDir dir;
  const auto q = affine_module("m", {2}, 64, 3, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "2 scales per row", "48 weights"}));
}

TEST(SourceModel, RejectsPackedRowsThatHoldNoWholeNumberOfCodes) {
  TempDir dir;
  const auto q = affine_module("m", {2}, 32, 3, 32, DType::BF16);
  auto weight = q.weight;
  weight.shape = {3, 2};  // 2 words per row: 64/3 codes
  weight.data.resize(3 * 2 * 4);
  write_model(dir, config_with({{"group_size", 32}, {"bits", 3}}), {weight, q.scales, *q.biases});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "2 packed words", "3-bit"}));
}

TEST(SourceModel, RejectsScalesWithOtherLeadingDimensions) {
  TempDir dir;
  auto q = affine_module("m", {4}, 32, 4, 32, DType::BF16);
  auto other = affine_module("m", {3}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), {q.weight, other.scales, *other.biases});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "scales shape 3x1", "weight shape 4x4"}));
}

TEST(SourceModel, RejectsScalesOfAnotherRank) {
  TempDir dir;
  auto q = affine_module("m", {2, 2}, 32, 4, 32, DType::BF16);
  auto flat = affine_module("m", {4}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), {q.weight, flat.scales, *flat.biases});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "scales shape 4x1", "2x2x4"}));
}

TEST(SourceModel, RejectsQuantizedWeightNotStoredAsU32) {
  TempDir dir;
  auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  q.weight.dtype = "F32";
  write_model(dir, config_with(kAffine4x32), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "stored as F32", "not U32"}));
}

TEST(SourceModel, RejectsAffineModuleWithoutBiases) {
  TempDir dir;
  const auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), {q.weight, q.scales});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "affine", "'m.biases' is missing"}));
}

TEST(SourceModel, RejectsBiasesOfAnotherTypeThanScales) {
  TempDir dir;
  const auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  const auto f16 = affine_module("m", {2}, 32, 4, 32, DType::F16);
  write_model(dir, config_with(kAffine4x32), {q.weight, q.scales, *f16.biases});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "biases (F16 2x1) differ from scales (BF16 2x1)"}));
}

TEST(SourceModel, RejectsAffineScalesStoredAsBytes) {
  TempDir dir;
  auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  q.scales.dtype = "U8";
  q.scales.data.resize(2);
  q.biases->dtype = "U8";
  q.biases->data.resize(2);
  write_model(dir, config_with(kAffine4x32), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "affine scales must be float", "U8"}));
}

TEST(SourceModel, RejectsFpModeScalesThatAreNotBytes) {
  // An affine 4-bit gs32 module under a config that claims mxfp4.
  TempDir dir;
  const auto q = affine_module("m", {2}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with({{"mode", "mxfp4"}}), {q.weight, q.scales});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "mxfp4 scales must be U8", "BF16"}));
}

TEST(SourceModel, RejectsZeroPointsOnAnFpModeModule) {
  TempDir dir;
  const auto q = mxfp4_module("m", 2, 32);
  write_model(dir, config_with({{"mode", "mxfp4"}}),
              join(q.all(), {{"m.biases", "BF16", {2, 1}, u16_bytes({0x3F80, 0x3F80})}}));
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "mxfp4", "'m.biases' exists"}));
}

TEST(SourceModel, RejectsScalesOnAModuleConfigMarksUnquantized) {
  TempDir dir;
  const auto q = affine_module("model.layers.0.mlp.gate", {2}, 32, 4, 32, DType::BF16);
  nlohmann::json quant = kAffine4x32;
  quant["model.layers.0.mlp.gate"] = false;
  write_model(dir, config_with(quant), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); },
                                 {"'model.layers.0.mlp.gate.scales' exists", "marks 'model.layers.0.mlp.gate' as not quantized"}));
}

TEST(SourceModel, FalseEntryOnAFloatModuleIsPlain) {
  TempDir dir;
  nlohmann::json quant = kAffine4x32;
  quant["model.norm"] = false;
  write_model(dir, config_with(quant), {{"model.norm.weight", "F32", {2}, f32_bytes({1.0f, 2.0f})}});
  const auto model = SourceModel::open(dir.path());
  EXPECT_FALSE(model.require("model.norm.weight").quant().has_value());
  EXPECT_EQ(read_all(model.require("model.norm.weight")), (std::vector<float>{1.0f, 2.0f}));
}

TEST(SourceModel, RejectsScalesWithoutAQuantizationEntry) {
  TempDir dir;
  const auto q = affine_module("lm_head", {2}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(nullptr), q.all());
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'lm_head.scales' exists", "no \"quantization\""}));
}

TEST(SourceModel, RejectsQuantizationEntryWithoutScales) {
  TempDir dir;
  nlohmann::json quant = kAffine4x32;
  quant["lm_head"] = {{"group_size", 32}, {"bits", 8}};
  write_model(dir, config_with(quant), {{"lm_head.weight", "F32", {1, 32}, f32_bytes(std::vector<float>(32, 0.0f))}});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); },
                                 {"says 'lm_head' is quantized", "'lm_head.scales' is missing"}));
}

TEST(SourceModel, RejectsScalesWithoutWeight) {
  TempDir dir;
  const auto q = affine_module("lm_head", {2}, 32, 4, 32, DType::BF16);
  write_model(dir, config_with(kAffine4x32), {q.scales, *q.biases});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'lm_head.", "no matching 'lm_head.weight'"}));
}

TEST(SourceModel, RejectsZeroPointsOnAnUnquantizedModule) {
  TempDir dir;
  write_model(dir, config_with(nullptr),
              {{"m.weight", "F32", {1, 2}, f32_bytes({1.0f, 2.0f})}, {"m.biases", "F32", {1, 1}, f32_bytes({0.5f})}});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.biases'", "not quantized", "'m.scales' is missing"}));
}

TEST(SourceModel, RejectsPackedCodesWithoutScales) {
  TempDir dir;
  write_model(dir, config_with(nullptr), {{"m.weight", "U32", {1, 1}, test_support::u32_bytes({7})}});
  EXPECT_TRUE(throws_with<Error>([&] { open_model(dir.path()); }, {"'m.weight'", "U32", "no quantization scales"}));
}

}  // namespace
}  // namespace mlx2gguf
