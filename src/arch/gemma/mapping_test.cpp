// The Gemma family's GGUF mapping, checked on generated gemma3_text, gemma3 and gemma2 folders: tensor names and
// shapes, 1 + w on every norm (and the embedding-scale and attention-scale factors on the norms that carry them),
// the sliding-window keys llama.cpp's gemma3 needs, Gemma 2's soft-capping, and what is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>

#include "convert.h"
#include "gen/tiny_model.h"
#include "plan/plan_test_support.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {
namespace {

using namespace plan_test;
using nlohmann::json;

constexpr int64_t H = 160, kHeads = 4, kKv = 2, kHd = 32, kFf = 192, kLayers = 6;

TinyModelSpec gemma_spec(const std::string& type) {
  TinyModelSpec s;
  s.model_type = type;
  s.hidden = H;
  s.layers = kLayers;
  s.heads = kHeads;
  s.kv_heads = kKv;
  s.head_dim = kHd;
  s.intermediate = kFf;
  s.tie_embeddings = true;
  s.sliding_window = 8;
  s.extra_config = {{"sliding_window_pattern", 3}};
  if (type == "gemma2") s.extra_config = json::object();
  s.seed = 9;
  return s;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json config = json::parse(std::ifstream(dir / "config.json"));
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(4);
}

std::vector<float> recipe_values(const TensorRecipe& recipe) {
  std::vector<float> values(static_cast<size_t>(recipe.row_count() * recipe.row_length()));
  read_recipe_rows(recipe, 0, recipe.row_count(), values.data());
  return values;
}

std::vector<float> source_values(const Planned& p, const std::string& name) {
  const SourceTensor& t = p.model.require(name);
  std::vector<float> values(static_cast<size_t>(t.element_count()));
  t.read_rows(0, t.row_count(), values.data());
  return values;
}

std::string failure_of(const fs::path& dir) {
  try {
    plan_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GemmaPlan, Gemma3WritesItsTensorsWithShapesAndTiesTheHead) {
  TempDir temp;
  const auto p = plan_model(write_model(temp, "g3", gemma_spec("gemma3_text")));
  EXPECT_TRUE(is_str(*p, "general.architecture", "gemma3"));
  const int64_t vocab = p->tensor("token_embd.weight").shape.at(0);
  std::map<std::string, std::vector<int64_t>> expected = {{"token_embd.weight", {vocab, H}}, {"output_norm.weight", {H}}};
  for (int i = 0; i < kLayers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    for (const char* norm : {"attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"}) expected[b + norm + ".weight"] = {H};
    expected[b + "attn_q_norm.weight"] = {kHd};
    expected[b + "attn_k_norm.weight"] = {kHd};
    expected[b + "attn_q.weight"] = {kHeads * kHd, H};
    expected[b + "attn_k.weight"] = {kKv * kHd, H};
    expected[b + "attn_v.weight"] = {kKv * kHd, H};
    expected[b + "attn_output.weight"] = {H, kHeads * kHd};
    expected[b + "ffn_gate.weight"] = {kFf, H};
    expected[b + "ffn_up.weight"] = {kFf, H};
    expected[b + "ffn_down.weight"] = {H, kFf};
  }
  EXPECT_EQ(p->names().size(), expected.size());
  for (const auto& [name, shape] : expected) EXPECT_EQ(p->tensor(name).shape, shape) << name;
  EXPECT_FALSE(p->has("output.weight"));
}

// llama.cpp scales embeddings by sqrtf(160) = 12.649; mlx-lm by its bfloat16 rounding 12.625. The post-norms carry
// the ratio; every other norm is exactly 1 + w; q_norm also carries the attention-scale ratio when the config's
// query_pre_attn_scalar is not head_dim.
TEST(GemmaPlan, NormsHoldOnePlusTheirWeightsWithTheScaleFactorsWhereTheyBelong) {
  TempDir temp;
  const fs::path dir = write_model(temp, "g3", gemma_spec("gemma3_text"));
  edit_config(dir, [](json& c) { c["query_pre_attn_scalar"] = 16; });
  const auto p = plan_model(dir);
  const double stream = std::sqrt(160.0f) / static_cast<double>(bf16_to_f32(f32_to_bf16(std::sqrt(160.0f))));
  EXPECT_NE(stream, 1.0);
  const double q = std::sqrt(32.0 / 16.0);
  struct Norm {
    std::string gguf, mlx;
    double factor;
  };
  const std::vector<Norm> norms = {{"output_norm.weight", "model.norm.weight", 1.0},
                                   {"blk.2.attn_norm.weight", "model.layers.2.input_layernorm.weight", 1.0},
                                   {"blk.2.ffn_norm.weight", "model.layers.2.pre_feedforward_layernorm.weight", 1.0},
                                   {"blk.2.attn_k_norm.weight", "model.layers.2.self_attn.k_norm.weight", 1.0},
                                   {"blk.2.attn_q_norm.weight", "model.layers.2.self_attn.q_norm.weight", q},
                                   {"blk.2.post_attention_norm.weight", "model.layers.2.post_attention_layernorm.weight", stream},
                                   {"blk.2.post_ffw_norm.weight", "model.layers.2.post_feedforward_layernorm.weight", stream}};
  for (const Norm& n : norms) {
    const auto got = recipe_values(p->tensor(n.gguf));
    const auto w = source_values(*p, n.mlx);
    ASSERT_EQ(got.size(), w.size());
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_EQ(got[i], static_cast<float>((1.0 + w[i]) * n.factor)) << n.gguf << " element " << i;
    EXPECT_EQ(p->tensor(n.gguf).type, GgmlType::F32) << n.gguf;
  }
}

TEST(GemmaPlan, Gemma3WritesTheWindowItsPatternTheLocalRopeBaseAndLinearScaling) {
  TempDir temp;
  auto spec = gemma_spec("gemma3_text");
  spec.rope_scaling = {{"rope_type", "linear"}, {"factor", 8.0}};
  const auto p = plan_model(write_model(temp, "g3", spec));
  EXPECT_TRUE(is_u32(*p, "gemma3.attention.sliding_window", 8));
  EXPECT_TRUE(is_u32(*p, "gemma3.attention.sliding_window_pattern", 3));
  EXPECT_TRUE(is_f32(*p, "gemma3.rope.freq_base", 1e6f));
  EXPECT_TRUE(is_f32(*p, "gemma3.rope.freq_base_swa", 1e4f));
  EXPECT_TRUE(is_str(*p, "gemma3.rope.scaling.type", "linear"));
  EXPECT_TRUE(is_f32(*p, "gemma3.rope.scaling.factor", 8.0f));
  EXPECT_TRUE(is_u32(*p, "gemma3.attention.key_length", kHd));
  EXPECT_TRUE(is_u32(*p, "gemma3.attention.head_count_kv", kKv));
  EXPECT_EQ(p->plan.metadata.get("gemma3.final_logit_softcapping"), nullptr);
}

TEST(GemmaPlan, TheMultimodalWrapperConvertsItsLanguageModelAndDropsTheVisionTower) {
  TempDir temp;
  const fs::path text_dir = write_model(temp, "text", gemma_spec("gemma3_text"));
  const fs::path wrapped_dir = write_model(temp, "wrapped", gemma_spec("gemma3"));
  const auto text = plan_model(text_dir);
  const auto wrapped = plan_model(wrapped_dir);
  EXPECT_TRUE(is_str(*wrapped, "general.architecture", "gemma3"));
  EXPECT_EQ(wrapped->names(), text->names());
  // The language model's own tensors, under their language_model. names.
  EXPECT_EQ(recipe_values(wrapped->tensor("blk.1.ffn_up.weight")),
            source_values(*wrapped, "language_model.model.layers.1.mlp.up_proj.weight"));
  const auto norm = source_values(*wrapped, "language_model.model.layers.1.pre_feedforward_layernorm.weight");
  const auto shifted = recipe_values(wrapped->tensor("blk.1.ffn_norm.weight"));
  for (size_t i = 0; i < norm.size(); ++i) ASSERT_EQ(shifted[i], norm[i] + 1.0f) << i;
  EXPECT_TRUE(is_u32(*wrapped, "gemma3.attention.sliding_window_pattern", 3));
}

TEST(GemmaPlan, Gemma2WritesSoftCappingItsWindowAndAlternation) {
  TempDir temp;
  auto spec = gemma_spec("gemma2");
  spec.sliding_window = 64;
  const auto p = plan_model(write_model(temp, "g2", spec));
  EXPECT_TRUE(is_str(*p, "general.architecture", "gemma2"));
  EXPECT_TRUE(is_f32(*p, "gemma2.attn_logit_softcapping", 50.0f));
  EXPECT_TRUE(is_f32(*p, "gemma2.final_logit_softcapping", 30.0f));
  EXPECT_TRUE(is_u32(*p, "gemma2.attention.sliding_window", 64));
  EXPECT_TRUE(is_u32(*p, "gemma2.attention.sliding_window_pattern", 2));
  EXPECT_FALSE(p->has("blk.0.attn_q_norm.weight"));
  EXPECT_FALSE(p->has("output.weight"));
}

struct Refusal {
  std::string name, model_type;
  std::function<void(json&)> edit;
  std::string expected;  // in the message
};
void PrintTo(const Refusal& r, std::ostream* os) { *os << r.name; }

class GemmaRefusals : public testing::TestWithParam<Refusal> {};

TEST_P(GemmaRefusals, NameTheKeyAndValue) {
  TempDir temp;
  const fs::path dir = write_model(temp, "m", gemma_spec(GetParam().model_type));
  edit_config(dir, GetParam().edit);
  const std::string message = failure_of(dir);
  EXPECT_NE(message.find(GetParam().expected), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    Gemma, GemmaRefusals,
    testing::Values(
        Refusal{"gemma2_query_scalar", "gemma2", [](json& c) { c["query_pre_attn_scalar"] = 144; }, "query_pre_attn_scalar 144"},
        Refusal{"gemma2_null_softcap", "gemma2", [](json& c) { c["attn_logit_softcapping"] = nullptr; }, "attn_logit_softcapping is null"},
        Refusal{"gemma3_final_softcap", "gemma3_text", [](json& c) { c["final_logit_softcapping"] = 30.0; }, "final_logit_softcapping 30"},
        Refusal{"gemma3_yarn", "gemma3_text", [](json& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }, "'yarn'"},
        Refusal{"gemma3_layer_types", "gemma3_text",
                [](json& c) { c["layer_types"][0] = "full_attention"; }, "layer_types[0]"}),
    [](const testing::TestParamInfo<Refusal>& info) { return info.param.name; });

}  // namespace
}  // namespace mlx2gguf
