// The Phi-3 test-model builder writes folders as mlx-lm saves phi3 models: fused qkv_proj / gate_up_proj with the
// widths phi3.py derives, no biases, no lm_head when tied, and a config.json with LongRoPE factor lists of one factor
// per rotary pair.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

#include "gen/tiny_model.h"
#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf::gen {
namespace {

TinyModelSpec spec() {
  TinyModelSpec s;
  s.model_type = "phi3";
  s.hidden = 96;
  s.heads = 6;
  s.kv_heads = 2;
  s.intermediate = 80;
  s.tie_embeddings = true;
  s.rope_scaling = {{"type", "su"}};
  s.extra_config = {{"partial_rotary_factor", 0.75}, {"original_max_position_embeddings", 64}};
  return s;
}

TEST(Phi3Builder, FusedProjectionsWithPhi3Widths) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& t : tiny_model_tensors(spec())) shapes[t.name] = t.shape;
  EXPECT_EQ(shapes.at("model.layers.0.self_attn.qkv_proj.weight"), (std::vector<int64_t>{(6 + 2 * 2) * 16, 96}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.o_proj.weight"), (std::vector<int64_t>{96, 96}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.gate_up_proj.weight"), (std::vector<int64_t>{160, 96}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.down_proj.weight"), (std::vector<int64_t>{96, 80}));
  EXPECT_FALSE(shapes.contains("lm_head.weight"));
  for (const auto& [name, shape] : shapes) {
    EXPECT_FALSE(name.ends_with(".bias")) << name;
    EXPECT_EQ(name.find("q_proj"), std::string::npos) << name;
  }
}

TEST(Phi3Builder, ConfigHasOneLongRopeFactorPerRotaryPair) {
  test_support::TempDir temp;
  write_tiny_model(spec(), temp / "m");
  nlohmann::json c;
  std::ifstream(temp / "m" / "config.json") >> c;
  EXPECT_EQ(c["model_type"], "phi3");
  EXPECT_EQ(c["rope_scaling"]["type"], "su");
  EXPECT_EQ(c["rope_scaling"]["long_factor"].size(), 6u);  // int(16 · 0.75) / 2
  EXPECT_EQ(c["rope_scaling"]["short_factor"].size(), 6u);
  EXPECT_EQ(c["rope_scaling"]["long_factor"][0], 1.0);
  EXPECT_EQ(c["rope_scaling"]["long_factor"][5], 48.0);
  EXPECT_EQ(c["original_max_position_embeddings"], 64);
  EXPECT_EQ(c["partial_rotary_factor"], 0.75);
  EXPECT_EQ(c["tie_word_embeddings"], true);
}

TEST(Phi3Builder, RefusesBiasesAndAnOddRotaryWidth) {
  TinyModelSpec biased = spec();
  biased.attention_bias = true;
  EXPECT_THROW(tiny_model_tensors(biased), Error);
  TinyModelSpec odd = spec();
  odd.extra_config["partial_rotary_factor"] = 0.3125;  // 5 of 16 dims
  EXPECT_THROW(tiny_model_tensors(odd), Error);
}

}  // namespace
}  // namespace mlx2gguf::gen
