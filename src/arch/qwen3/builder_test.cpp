// The qwen2 / qwen3 / qwen3_moe generator: folders as mlx_lm.convert saves them, with the config keys of Qwen's own
// checkpoints and qwen3_moe's 8-bit router predicate.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>

#include "gen/gen_test_support.h"
#include "gen/tiny_model.h"
#include "read/model_folder.h"
#include "read/source_model.h"
#include "util/error.h"

namespace mlx2gguf::gen {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Shape = std::vector<int64_t>;
using test_support::read_file;
using test_support::ScratchDir;

TinyModelSpec spec_of(const std::string& type) {
  TinyModelSpec spec;
  spec.model_type = type;
  if (type != "qwen2") spec.head_dim = 48;
  return spec;
}

std::set<std::string> names_of(const ModelFolder& folder) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : folder.tensors()) names.insert(name);
  return names;
}

std::set<std::string> expected_names(const std::string& type, bool tied) {
  std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!tied) names.insert("lm_head.weight");
  for (int i = 0; i < 2; ++i) {
    const std::string l = fmt::format("model.layers.{}.", i);
    for (const char* m : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"})
      names.insert(l + m);
    if (type == "qwen2")
      for (const char* m : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}) names.insert(l + m);
    else
      for (const char* m : {"self_attn.q_norm.weight", "self_attn.k_norm.weight"}) names.insert(l + m);
    if (type == "qwen3_moe")
      for (const char* m : {"mlp.gate.weight", "mlp.switch_mlp.gate_proj.weight", "mlp.switch_mlp.up_proj.weight",
                            "mlp.switch_mlp.down_proj.weight"})
        names.insert(l + m);
    else
      for (const char* m : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) names.insert(l + m);
  }
  return names;
}

TEST(Qwen3Generator, Qwen2FolderHasBiasesAndDerivesItsHeadSize) {
  ScratchDir dir;
  write_tiny_model(spec_of("qwen2"), dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  EXPECT_EQ(names_of(folder), expected_names("qwen2", false));
  EXPECT_EQ(folder.require("model.layers.0.self_attn.q_proj.weight").shape, (Shape{128, 128}));
  EXPECT_EQ(folder.require("model.layers.0.self_attn.k_proj.bias").shape, (Shape{64}));
  const json& c = folder.config();
  EXPECT_EQ(c["model_type"], "qwen2");
  EXPECT_EQ(c["architectures"], json::array({"Qwen2ForCausalLM"}));
  EXPECT_FALSE(c.contains("head_dim"));
  EXPECT_FALSE(c.contains("attention_bias"));
  EXPECT_EQ(c["use_sliding_window"], false);
  EXPECT_EQ(c["rope_theta"], 1000000);
  EXPECT_EQ(c["rms_norm_eps"], 1e-6);
  EXPECT_TRUE(c.contains("rope_scaling") && c["rope_scaling"].is_null());
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_THROW(write_tiny_model([] { auto s = spec_of("qwen2"); s.head_dim = 48; return s; }(), dir / "bad"), Error);
}

TEST(Qwen3Generator, Qwen3FolderHasQkNormsAroundOneAndHeadDim) {
  ScratchDir dir;
  TinyModelSpec spec = spec_of("qwen3");
  spec.tie_embeddings = true;
  write_tiny_model(spec, dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  EXPECT_EQ(names_of(folder), expected_names("qwen3", true));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.q_proj.weight").shape, (Shape{4 * 48, 128}));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.o_proj.weight").shape, (Shape{128, 4 * 48}));
  EXPECT_EQ(folder.require("model.layers.1.self_attn.k_norm.weight").shape, (Shape{48}));
  const json& c = folder.config();
  EXPECT_EQ(c["head_dim"], 48);
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_TRUE(c["sliding_window"].is_null());
  const auto norm = tiny_model_float_weights(spec, "model.layers.1.self_attn.k_norm.weight");
  double mean = 0;
  for (float v : norm) mean += v / static_cast<double>(norm.size());
  EXPECT_NEAR(mean, 1.0, 0.1);
}

TEST(Qwen3Generator, Qwen3MoeFolderWithEightBitRoutersWhenQuantized) {
  ScratchDir dir;
  TinyModelSpec spec = spec_of("qwen3_moe");
  spec.experts = 8;
  spec.experts_per_tok = 3;
  spec.moe_intermediate = 64;
  spec.quant = QuantRecipe::parse("affine:4:64");
  write_tiny_model(spec, dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  const json& c = folder.config();
  EXPECT_EQ(c["num_experts"], 8);
  EXPECT_EQ(c["num_experts_per_tok"], 3);
  EXPECT_EQ(c["moe_intermediate_size"], 64);
  EXPECT_EQ(c["decoder_sparse_step"], 1);
  EXPECT_EQ(c["mlp_only_layers"], json::array());
  EXPECT_EQ(c["norm_topk_prob"], true);
  // mlx-lm's quant predicate: the routers at 8 bits, group size 64, as explicit per-module entries.
  const json router = {{"group_size", 64}, {"bits", 8}};
  EXPECT_EQ(c["quantization"]["model.layers.0.mlp.gate"], router);
  EXPECT_EQ(c["quantization"]["model.layers.1.mlp.gate"], router);
  EXPECT_EQ(c["quantization_config"]["model.layers.1.mlp.gate"], router);
  EXPECT_FALSE(c["quantization"].contains("model.layers.0.mlp.switch_mlp.gate_proj"));
  // The stacked experts are quantized along their input axis: [E, out, in * 4 / 32] words.
  EXPECT_EQ(folder.require("model.layers.0.mlp.switch_mlp.down_proj.weight").shape, (Shape{8, 128, 64 * 4 / 32}));
  EXPECT_EQ(folder.require("model.layers.0.mlp.switch_mlp.down_proj.scales").shape, (Shape{8, 128, 1}));
  EXPECT_EQ(folder.require("model.layers.0.mlp.gate.weight").shape, (Shape{8, 128 * 8 / 32}));
  const SourceModel model = SourceModel::open(dir / "m");
  EXPECT_EQ(model.require("model.layers.0.mlp.gate.weight").shape(), (Shape{8, 128}));
  EXPECT_EQ(model.require("model.layers.0.mlp.gate.weight").quant()->bits, 8);
  EXPECT_EQ(model.require("model.layers.0.self_attn.q_norm.weight").quant(), std::nullopt);

  // norm_topk_prob can be written false (the mapping must refuse such a folder).
  spec.quant.reset();
  spec.norm_topk_prob = false;
  write_tiny_model(spec, dir / "no-renorm");
  EXPECT_EQ(ModelFolder::open(dir / "no-renorm").config()["norm_topk_prob"], false);
}

TEST(Qwen3Generator, RejectsWhatTheModelTypeCannotHave) {
  ScratchDir dir;
  TinyModelSpec spec = spec_of("qwen3");
  spec.attention_bias = true;
  EXPECT_THROW(write_tiny_model(spec, dir / "a"), Error);
  spec = spec_of("qwen2");
  spec.mlp_bias = true;
  EXPECT_THROW(write_tiny_model(spec, dir / "b"), Error);
  spec = spec_of("qwen3_moe");
  spec.layout = "hf";
  EXPECT_THROW(write_tiny_model(spec, dir / "c"), Error);
}

}  // namespace
}  // namespace mlx2gguf::gen
