// The gpt_oss generator: folders as mlx-lm saves gpt-oss, float and quantized as mlx_lm.convert quantizes it.
#include "arch/gpt_oss/builder.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

#include "gen/gen_test_support.h"
#include "gen/tiny_model.h"
#include "gen/tiny_tokenizer.h"
#include "read/model_folder.h"
#include "read/source_model.h"
#include "util/error.h"

namespace mlx2gguf::gen {
namespace {

using nlohmann::json;
using Shape = std::vector<int64_t>;
using test_support::ScratchDir;

constexpr int64_t H = 128, kFf = 192, kE = 4, kHeads = 4, kKv = 2, kHd = 64;

TinyModelSpec spec() {
  TinyModelSpec s;
  s.model_type = "gpt_oss";
  s.hidden = H;
  s.intermediate = kFf;
  s.layers = 2;
  s.heads = kHeads;
  s.kv_heads = kKv;
  s.experts = kE;
  s.experts_per_tok = 3;
  s.sliding_window = 8;
  return s;
}

json config_of(const std::filesystem::path& dir) { return json::parse(test_support::read_file(dir / "config.json")); }

TEST(GptOssGenerator, FloatFolderAsMlxLmSavesIt) {
  ScratchDir dir;
  write_tiny_model(spec(), dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  std::map<std::string, Shape> expected = {{"model.embed_tokens.weight", {V, H}}, {"model.norm.weight", {H}},
                                           {"lm_head.weight", {V, H}}};
  for (int i = 0; i < 2; ++i) {
    const std::string l = fmt::format("model.layers.{}.", i);
    expected[l + "input_layernorm.weight"] = {H};
    expected[l + "post_attention_layernorm.weight"] = {H};
    expected[l + "self_attn.sinks"] = {kHeads};
    expected[l + "self_attn.q_proj.weight"] = {kHeads * kHd, H};
    expected[l + "self_attn.q_proj.bias"] = {kHeads * kHd};
    expected[l + "self_attn.k_proj.weight"] = {kKv * kHd, H};
    expected[l + "self_attn.k_proj.bias"] = {kKv * kHd};
    expected[l + "self_attn.v_proj.weight"] = {kKv * kHd, H};
    expected[l + "self_attn.v_proj.bias"] = {kKv * kHd};
    expected[l + "self_attn.o_proj.weight"] = {H, kHeads * kHd};
    expected[l + "self_attn.o_proj.bias"] = {H};
    expected[l + "mlp.router.weight"] = {kE, H};
    expected[l + "mlp.router.bias"] = {kE};
    expected[l + "mlp.experts.gate_proj.weight"] = {kE, kFf, H};
    expected[l + "mlp.experts.gate_proj.bias"] = {kE, kFf};
    expected[l + "mlp.experts.up_proj.weight"] = {kE, kFf, H};
    expected[l + "mlp.experts.up_proj.bias"] = {kE, kFf};
    expected[l + "mlp.experts.down_proj.weight"] = {kE, H, kFf};
    expected[l + "mlp.experts.down_proj.bias"] = {kE, H};
  }
  ASSERT_EQ(folder.tensors().size(), expected.size());
  for (const auto& [name, shape] : expected) {
    const StoredTensor* t = folder.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, shape) << name;
    EXPECT_EQ(t->dtype, DType::BF16) << name;
  }

  const json c = config_of(dir / "m");
  EXPECT_EQ(c["model_type"], "gpt_oss");
  EXPECT_EQ(c["architectures"], json::array({"GptOssForCausalLM"}));
  EXPECT_EQ(c["num_local_experts"], kE);
  EXPECT_EQ(c["num_experts_per_tok"], 3);
  EXPECT_EQ(c["experts_per_token"], 3);
  EXPECT_EQ(c["head_dim"], kHd);
  EXPECT_EQ(c["sliding_window"], 8);
  EXPECT_EQ(c["layer_types"], json::array({"sliding_attention", "full_attention"}));
  EXPECT_EQ(c["rope_theta"], 150000);
  EXPECT_EQ(c["rms_norm_eps"], 1e-5);
  EXPECT_EQ(c["attention_bias"], true);
  EXPECT_EQ(c["swiglu_limit"], 7.0);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["rope_scaling"], (json{{"beta_fast", 32.0}, {"beta_slow", 1.0}, {"factor", 32.0},
                                     {"original_max_position_embeddings", 4096}, {"rope_type", "yarn"},
                                     {"truncate", false}}));
  EXPECT_FALSE(c.contains("quantization"));
  EXPECT_FALSE(c.contains("quantization_config"));
}

TEST(GptOssGenerator, SinksAreLogitsAroundOneAndNormsAroundOne) {
  ScratchDir dir;
  write_tiny_model(spec(), dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  auto values = [&](const std::string& name) {
    const SourceTensor& t = model.require(name);
    std::vector<float> v(static_cast<size_t>(t.element_count()));
    t.read_rows(0, t.row_count(), v.data());
    return v;
  };
  double sum = 0;
  int n = 0;
  for (int i = 0; i < 2; ++i)
    for (float s : values(fmt::format("model.layers.{}.self_attn.sinks", i))) sum += s, ++n;
  EXPECT_NEAR(sum / n, 1.0, 1.0);
  const auto norm = values("model.layers.1.post_attention_layernorm.weight");
  double mean = 0;
  for (float v : norm) mean += v / static_cast<double>(norm.size());
  EXPECT_NEAR(mean, 1.0, 0.05);
}

// What mlx_lm.convert -q --q-bits 8 --q-group-size 64 makes of OpenAI's MXFP4 checkpoint: the experts stay mxfp4
// under the top-level entry, every other quantized module has its own entry, routers by gpt_oss.py's predicate.
TEST(GptOssGenerator, NativeMxfp4ExpertsWithAn8BitRest) {
  ScratchDir dir;
  TinyModelSpec s = spec();
  s.quant = gpt_oss_native_mxfp4_recipe(8, 64);
  write_tiny_model(s, dir / "m");
  const json q = config_of(dir / "m")["quantization"];
  json expected = {{"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}};
  const json affine8 = {{"group_size", 64}, {"bits", 8}, {"mode", "affine"}};
  expected["model.embed_tokens"] = affine8;
  expected["lm_head"] = affine8;
  for (int i = 0; i < 2; ++i) {
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"})
      expected[fmt::format("model.layers.{}.self_attn.{}", i, p)] = affine8;
    expected[fmt::format("model.layers.{}.mlp.router", i)] = {{"group_size", 64}, {"bits", 8}};
  }
  EXPECT_EQ(q, expected);
  EXPECT_EQ(config_of(dir / "m")["quantization_config"], expected);

  const ModelFolder folder = ModelFolder::open(dir / "m");
  const std::string e = "model.layers.1.mlp.experts.";
  EXPECT_EQ(folder.require(e + "gate_proj.weight").shape, (Shape{kE, kFf, H / 8}));
  EXPECT_EQ(folder.require(e + "gate_proj.weight").dtype, DType::U32);
  EXPECT_EQ(folder.require(e + "gate_proj.scales").shape, (Shape{kE, kFf, H / 32}));
  EXPECT_EQ(folder.require(e + "gate_proj.scales").dtype, DType::U8);
  EXPECT_EQ(folder.find(e + "gate_proj.biases"), nullptr);
  EXPECT_EQ(folder.require(e + "down_proj.weight").shape, (Shape{kE, H, kFf / 8}));
  EXPECT_EQ(folder.require(e + "gate_proj.bias").dtype, DType::BF16);
  EXPECT_EQ(folder.require("model.layers.1.self_attn.q_proj.weight").shape, (Shape{kHeads * kHd, H / 4}));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.q_proj.biases").shape, (Shape{kHeads * kHd, H / 64}));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.q_proj.bias").dtype, DType::BF16);
  EXPECT_EQ(folder.require("model.layers.1.mlp.router.weight").shape, (Shape{kE, H / 4}));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.sinks").dtype, DType::BF16);

  // The dequantized experts are the float model's within MXFP4's precision.
  const SourceModel model = SourceModel::open(dir / "m");
  const SourceTensor& gate = model.require(e + "gate_proj.weight");
  ASSERT_TRUE(gate.quant());
  EXPECT_EQ(gate.quant()->mode, QuantMode::MXFP4);
  std::vector<float> got(static_cast<size_t>(gate.element_count()));
  gate.read_rows(0, gate.row_count(), got.data());
  const std::vector<float> want = tiny_model_float_weights(s, e + "gate_proj.weight");
  double error = 0, energy = 0;
  for (size_t i = 0; i < got.size(); ++i) error += std::pow(got[i] - want[i], 2), energy += std::pow(want[i], 2);
  EXPECT_LT(error / energy, 2e-2);
  EXPECT_GT(error / energy, 1e-5);  // quantized, not copied
}

TEST(GptOssGenerator, NativeMxfp4ExpertsWithAFloatRest) {
  ScratchDir dir;
  TinyModelSpec s = spec();
  s.quant = gpt_oss_native_mxfp4_recipe(0);
  write_tiny_model(s, dir / "m");
  EXPECT_EQ(config_of(dir / "m")["quantization"], (json{{"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}}));
  const ModelFolder folder = ModelFolder::open(dir / "m");
  for (const auto& [name, t] : folder.tensors()) {
    const bool expert = name.find("mlp.experts.") != std::string::npos && !name.ends_with(".bias");
    EXPECT_EQ(t.dtype == DType::U32 || t.dtype == DType::U8, expert) << name;
  }
}

// Plain mlx_lm.convert -q (affine 4-bit) of a float gpt-oss: everything at 4 bits, routers at 8 by the predicate.
TEST(GptOssGenerator, AffineQuantizationPutsRoutersAt8Bits) {
  ScratchDir dir;
  TinyModelSpec s = spec();
  s.quant = QuantRecipe::parse("affine:4:64");
  write_tiny_model(s, dir / "m");
  const json q = config_of(dir / "m")["quantization"];
  EXPECT_EQ(q["mode"], "affine");
  EXPECT_EQ(q["bits"], 4);
  EXPECT_EQ(q["model.layers.0.mlp.router"], (json{{"group_size", 64}, {"bits", 8}}));
  EXPECT_FALSE(q.contains("model.layers.0.mlp.experts.gate_proj"));
  EXPECT_EQ(ModelFolder::open(dir / "m").require("model.layers.0.mlp.experts.up_proj.weight").shape, (Shape{kE, kFf, H / 8}));
}

TEST(GptOssGenerator, DefaultsAndOptions) {
  ScratchDir dir;
  TinyModelSpec s = spec();
  s.sliding_window = 0;
  s.rope_scaling = json::object();
  s.layers = 4;
  s.layer_types = {"sliding_attention", "sliding_attention", "sliding_attention", "full_attention"};
  write_tiny_model(s, dir / "m");
  const json c = config_of(dir / "m");
  EXPECT_EQ(c["sliding_window"], 128);
  EXPECT_TRUE(c["rope_scaling"].is_null());
  EXPECT_EQ(c["layer_types"][2], "sliding_attention");
  EXPECT_EQ(c["num_hidden_layers"], 4);
}

TEST(GptOssGenerator, RefusesWhatGptOssCannotBe) {
  ScratchDir dir;
  TinyModelSpec tied = spec();
  tied.tie_embeddings = true;
  EXPECT_THROW(write_tiny_model(tied, dir / "a"), Error);
  TinyModelSpec types = spec();
  types.layer_types = {"sliding_attention"};
  EXPECT_THROW(write_tiny_model(types, dir / "b"), Error);
  types.layer_types = {"sliding_attention", "linear_attention"};
  EXPECT_THROW(write_tiny_model(types, dir / "c"), Error);
}

}  // namespace
}  // namespace mlx2gguf::gen
