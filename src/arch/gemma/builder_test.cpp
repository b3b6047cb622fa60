// The Gemma family's test-model builder: folders as mlx-lm saves gemma3_text, gemma3 (wrapper) and gemma2 models.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "gen/tiny_model.h"
#include "read/model_folder.h"
#include "read/source_model.h"
#include "read/test_support.h"

namespace mlx2gguf::gen {
namespace {

using test_support::TempDir;
using nlohmann::json;

TinyModelSpec spec_of(const std::string& type) {
  TinyModelSpec s;
  s.model_type = type;
  s.hidden = 64;
  s.layers = 4;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 32;
  s.intermediate = 96;
  s.sliding_window = 16;
  s.extra_config = {{"sliding_window_pattern", 2}};
  return s;
}

TEST(GemmaBuilder, Gemma3TextStoresRawNormsQkNormsAndAConsistentLayerPattern) {
  TempDir temp;
  auto spec = spec_of("gemma3_text");
  spec.tie_embeddings = true;
  write_tiny_model(spec, temp / "m");
  const auto folder = ModelFolder::open(temp / "m");
  const json& c = folder.config();
  EXPECT_EQ(c["model_type"], "gemma3_text");
  EXPECT_EQ(c["sliding_window"], 16);
  EXPECT_EQ(c["sliding_window_pattern"], 2);
  EXPECT_EQ(c["layer_types"], json({"sliding_attention", "full_attention", "sliding_attention", "full_attention"}));
  EXPECT_EQ(c["query_pre_attn_scalar"], 32);
  EXPECT_EQ(folder.require("model.layers.0.self_attn.q_norm.weight").shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(folder.require("model.layers.3.post_feedforward_layernorm.weight").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(folder.find("lm_head.weight"), nullptr);
  // Raw (zero-centred) norm weights, as Hugging Face stores them: mean near 0, not near 1.
  const auto model = SourceModel::open(temp / "m");
  std::vector<float> w(64);
  model.require("model.layers.1.input_layernorm.weight").read_rows(0, 1, w.data());
  double mean = 0.0;
  for (float v : w) mean += v / 64.0;
  EXPECT_LT(std::fabs(mean), 0.1);
}

TEST(GemmaBuilder, TheWrapperNestsItsTextConfigAndPrefixesItsTensors) {
  TempDir temp;
  write_tiny_model(spec_of("gemma3"), temp / "m");
  const auto folder = ModelFolder::open(temp / "m");
  EXPECT_EQ(folder.config()["model_type"], "gemma3");
  EXPECT_EQ(folder.text_config()["model_type"], "gemma3_text");
  EXPECT_FALSE(folder.config().contains("vision_config"));
  EXPECT_NE(folder.find("language_model.model.embed_tokens.weight"), nullptr);
  EXPECT_NE(folder.find("language_model.lm_head.weight"), nullptr);
  for (const auto& [name, tensor] : folder.tensors()) EXPECT_TRUE(name.starts_with("language_model.")) << name;
}

TEST(GemmaBuilder, Gemma2HasSoftCapsNoQkNormsAndNoHead) {
  TempDir temp;
  write_tiny_model(spec_of("gemma2"), temp / "m");
  const auto folder = ModelFolder::open(temp / "m");
  EXPECT_EQ(folder.config()["attn_logit_softcapping"], 50.0);
  EXPECT_EQ(folder.config()["final_logit_softcapping"], 30.0);
  EXPECT_EQ(folder.find("model.layers.0.self_attn.q_norm.weight"), nullptr);
  EXPECT_EQ(folder.find("lm_head.weight"), nullptr);
}

}  // namespace
}  // namespace mlx2gguf::gen
