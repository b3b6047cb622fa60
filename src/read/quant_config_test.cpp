#include "read/quant_config.h"

#include <gtest/gtest.h>

#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using test_support::throws_with;

QuantConfig with_quantization(const nlohmann::json& quantization) {
  return QuantConfig::from_config({{"model_type", "llama"}, {"quantization", quantization}});
}

std::optional<QuantSpec> resolve(const nlohmann::json& quantization, const std::string& module, bool has_scales) {
  return with_quantization(quantization).for_module(module, has_scales);
}

}  // namespace

// Readable failure output for QuantSpec comparisons (internal linkage, found by argument-dependent lookup).
static void PrintTo(const QuantSpec& spec, std::ostream* os) {
  *os << quant_mode_name(spec.mode) << " bits " << spec.bits << " group_size " << spec.group_size;
}

namespace {

constexpr QuantSpec affine(int bits, int group_size) { return {QuantMode::Affine, bits, group_size}; }

TEST(QuantConfig, ModeNames) {
  EXPECT_STREQ(quant_mode_name(QuantMode::Affine), "affine");
  EXPECT_STREQ(quant_mode_name(QuantMode::MXFP4), "mxfp4");
  EXPECT_STREQ(quant_mode_name(QuantMode::NVFP4), "nvfp4");
  EXPECT_STREQ(quant_mode_name(QuantMode::MXFP8), "mxfp8");
}

TEST(QuantConfig, ConfigWithoutQuantizationDescribesAFloatModel) {
  const auto config = QuantConfig::from_config({{"model_type", "llama"}});
  EXPECT_FALSE(config.any());
  EXPECT_EQ(config.for_module("model.layers.0.mlp.up_proj", false), std::nullopt);
}

TEST(QuantConfig, ScalesWithoutQuantizationObjectAreAnError) {
  const auto config = QuantConfig::from_config({{"model_type", "llama"}});
  EXPECT_TRUE(throws_with<Error>([&] { config.for_module("model.layers.0.mlp.up_proj", true); },
                                 {"'model.layers.0.mlp.up_proj.scales'", "no \"quantization\""}));
}

TEST(QuantConfig, StaleQuantizationConfigCopyAloneIsIgnored) {
  // A folder dequantized by an older mlx-lm keeps only the HF-facing copy; the tensors are float.
  const auto config =
      QuantConfig::from_config({{"model_type", "llama"}, {"quantization_config", {{"group_size", 64}, {"bits", 4}}}});
  EXPECT_FALSE(config.any());
  EXPECT_EQ(config.for_module("lm_head", false), std::nullopt);
}

TEST(QuantConfig, TopLevelAppliesToModulesWithScalesOnly) {
  const nlohmann::json q = {{"group_size", 32}, {"bits", 8}, {"mode", "affine"}};
  EXPECT_TRUE(with_quantization(q).any());
  EXPECT_EQ(resolve(q, "model.layers.0.self_attn.q_proj", true), affine(8, 32));
  EXPECT_EQ(resolve(q, "model.layers.0.input_layernorm", false), std::nullopt);
}

TEST(QuantConfig, MissingModeMeansAffine) {
  EXPECT_EQ(resolve({{"group_size", 128}, {"bits", 3}}, "m", true), affine(3, 128));
}

TEST(QuantConfig, MissingFieldsTakeTheModeDefaults) {
  EXPECT_EQ(resolve(nlohmann::json::object(), "m", true), affine(4, 64));
  EXPECT_EQ(resolve({{"bits", 8}}, "m", true), affine(8, 64));
  EXPECT_EQ(resolve({{"group_size", 32}}, "m", true), affine(4, 32));
}

TEST(QuantConfig, FpModesDefaultTheirOnlyValidParameters) {
  EXPECT_EQ(resolve({{"mode", "mxfp4"}}, "m", true), (QuantSpec{QuantMode::MXFP4, 4, 32}));
  EXPECT_EQ(resolve({{"mode", "nvfp4"}}, "m", true), (QuantSpec{QuantMode::NVFP4, 4, 16}));
  EXPECT_EQ(resolve({{"mode", "mxfp8"}}, "m", true), (QuantSpec{QuantMode::MXFP8, 8, 32}));
  EXPECT_EQ(resolve({{"mode", "mxfp4"}, {"group_size", 32}, {"bits", 4}}, "m", true),
            (QuantSpec{QuantMode::MXFP4, 4, 32}));
  EXPECT_EQ(resolve({{"mode", "nvfp4"}, {"group_size", 16}, {"bits", 4}}, "m", true),
            (QuantSpec{QuantMode::NVFP4, 4, 16}));
}

TEST(QuantConfig, PerModuleDictWithoutModeIsAffineEvenUnderAnFpTopLevel) {
  // gpt-oss style: top level mxfp4, the router quantized by the model predicate at 8-bit affine.
  const nlohmann::json q = {
      {"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}, {"model.layers.0.mlp.router", {{"group_size", 64}, {"bits", 8}}}};
  EXPECT_EQ(resolve(q, "model.layers.0.mlp.router", true), affine(8, 64));
  EXPECT_EQ(resolve(q, "model.layers.0.mlp.experts.gate_up_proj", true), (QuantSpec{QuantMode::MXFP4, 4, 32}));
}

TEST(QuantConfig, PerModuleDictOverridesTopLevelEvenWithoutScalesFlag) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"lm_head", {{"group_size", 32}, {"bits", 6}, {"mode", "affine"}}}};
  EXPECT_EQ(resolve(q, "lm_head", true), affine(6, 32));
  // The entry itself says the module is quantized; SourceModel then insists on the scales tensor.
  EXPECT_EQ(resolve(q, "lm_head", false), affine(6, 32));
}

TEST(QuantConfig, PerModuleDictWithItsOwnFpMode) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"x", {{"mode", "nvfp4"}, {"group_size", 16}, {"bits", 4}}}};
  EXPECT_EQ(resolve(q, "x", true), (QuantSpec{QuantMode::NVFP4, 4, 16}));
}

TEST(QuantConfig, NullGroupSizeMeansTheModeDefault) {
  // Mixed recipes without --q-group-size write group_size null.
  const nlohmann::json q = {{"group_size", 32},
                            {"bits", 3},
                            {"model.layers.0.self_attn.v_proj", {{"group_size", nullptr}, {"bits", 6}}},
                            {"model.layers.0.mlp.up_proj", {{"group_size", nullptr}, {"bits", 3}, {"mode", "affine"}}},
                            {"fp", {{"group_size", nullptr}, {"bits", nullptr}, {"mode", "mxfp8"}}}};
  EXPECT_EQ(resolve(q, "model.layers.0.self_attn.v_proj", true), affine(6, 64));
  EXPECT_EQ(resolve(q, "model.layers.0.mlp.up_proj", true), affine(3, 64));
  EXPECT_EQ(resolve(q, "fp", true), (QuantSpec{QuantMode::MXFP8, 8, 32}));
  EXPECT_EQ(resolve({{"group_size", nullptr}, {"bits", 4}}, "m", true), affine(4, 64));
}

TEST(QuantConfig, FalseEntryMeansNotQuantizedWhateverTheTensors) {
  // AWQ writes false for every unquantized leaf module.
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"model.norm", false}};
  EXPECT_EQ(resolve(q, "model.norm", false), std::nullopt);
  EXPECT_EQ(resolve(q, "model.norm", true), std::nullopt);  // SourceModel reports the contradiction
}

TEST(QuantConfig, TrueEntryUsesTheTopLevelParameters) {
  const nlohmann::json q = {{"group_size", 128}, {"bits", 2}, {"lm_head", true}};
  EXPECT_EQ(resolve(q, "lm_head", false), affine(2, 128));
}

TEST(QuantConfig, ModuleWithoutEntryIsQuantizedExactlyWhenScalesExist) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"other", {{"group_size", 64}, {"bits", 8}}}};
  EXPECT_EQ(resolve(q, "model.embed_tokens", true), affine(4, 64));
  EXPECT_EQ(resolve(q, "model.embed_tokens", false), std::nullopt);
}

TEST(QuantConfig, EntriesMatchWholeModulePathsOnly) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"model.layers.1.mlp.gate", {{"group_size", 64}, {"bits", 8}}}};
  EXPECT_EQ(resolve(q, "model.layers.1.mlp.gate_proj", true), affine(4, 64));
  EXPECT_EQ(resolve(q, "model.layers.11.mlp.gate", true), affine(4, 64));
  EXPECT_EQ(resolve(q, "model.layers.1.mlp.gate", true), affine(8, 64));
}

TEST(QuantConfig, RejectsEntryThatIsNeitherFalseNorADict) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"lm_head", 8}};
  EXPECT_TRUE(throws_with<Error>([&] { resolve(q, "lm_head", true); }, {"quantization[\"lm_head\"]", "neither"}));
}

struct InvalidCase {
  const char* label;
  nlohmann::json quantization;
  std::vector<std::string> message_parts;
};

class QuantConfigInvalid : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(QuantConfigInvalid, IsRejectedWithAClearMessage) {
  const auto& param = GetParam();
  EXPECT_TRUE(throws_with<Error>([&] { resolve(param.quantization, "model.layers.0.mlp.down_proj", true); },
                                 param.message_parts));
}

INSTANTIATE_TEST_SUITE_P(
    QuantConfig, QuantConfigInvalid,
    ::testing::Values(
        InvalidCase{"AffineBits7", {{"group_size", 64}, {"bits", 7}}, {"affine bits 7"}},
        InvalidCase{"AffineBits1", {{"group_size", 64}, {"bits", 1}}, {"affine bits 1"}},
        InvalidCase{"AffineBits16", {{"group_size", 64}, {"bits", 16}}, {"affine bits 16"}},
        InvalidCase{"AffineGroup48", {{"group_size", 48}, {"bits", 4}}, {"affine group_size 48"}},
        InvalidCase{"AffineGroup16", {{"group_size", 16}, {"bits", 4}, {"mode", "affine"}}, {"affine group_size 16"}},
        InvalidCase{"Mxfp4Group64", {{"group_size", 64}, {"bits", 4}, {"mode", "mxfp4"}}, {"mxfp4", "group_size 64"}},
        InvalidCase{"Mxfp4Bits8", {{"group_size", 32}, {"bits", 8}, {"mode", "mxfp4"}}, {"mxfp4", "found bits 8"}},
        InvalidCase{"Nvfp4Group32", {{"group_size", 32}, {"bits", 4}, {"mode", "nvfp4"}}, {"nvfp4", "group_size 32"}},
        InvalidCase{"Mxfp8Bits4", {{"group_size", 32}, {"bits", 4}, {"mode", "mxfp8"}}, {"mxfp8", "found bits 4"}},
        InvalidCase{"UnknownMode", {{"group_size", 32}, {"bits", 4}, {"mode", "int4"}}, {"unknown mode 'int4'"}},
        InvalidCase{"ModeNotAString", {{"group_size", 32}, {"bits", 4}, {"mode", 4}}, {"mode 4", "not a string"}},
        InvalidCase{"BitsAsString", {{"group_size", 64}, {"bits", "4"}}, {"bits is \"4\"", "integer"}},
        InvalidCase{"FractionalGroupSize", {{"group_size", 64.5}, {"bits", 4}}, {"group_size is 64.5", "integer"}},
        InvalidCase{"NegativeBits", {{"group_size", 64}, {"bits", -4}}, {"bits is -4"}},
        InvalidCase{"BadOverrideNamesTheModule",
                    {{"group_size", 64}, {"bits", 4}, {"model.layers.0.mlp.down_proj", {{"group_size", 64}, {"bits", 7}}}},
                    {"quantization[\"model.layers.0.mlp.down_proj\"]", "affine bits 7"}}),
    [](const ::testing::TestParamInfo<InvalidCase>& info) { return std::string(info.param.label); });

TEST(QuantConfig, InvalidOverrideDoesNotAffectOtherModules) {
  const nlohmann::json q = {{"group_size", 64}, {"bits", 4}, {"bad", {{"group_size", 48}, {"bits", 4}}}};
  EXPECT_EQ(resolve(q, "good", true), affine(4, 64));
  EXPECT_TRUE(throws_with<Error>([&] { resolve(q, "bad", true); }, {"quantization[\"bad\"]", "group_size 48"}));
}

}  // namespace
}  // namespace mlx2gguf
